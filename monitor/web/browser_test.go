package web

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/hessmon/hessmon/internal/testutil"
)

var (
	screenshot       = flag.String("screenshot", "", "TestBrowserLiveTrain also writes its screenshot of the page to this PNG file (e.g. ../../docs/live-page.png)")
	screenshotProbes = flag.Int("screenshot-probes", 0, "TestBrowserLiveTrain waits for this many probes before its screenshot (and checks the page again)")
	trainArgs        = flag.String("train-args", "", "TestBrowserLiveTrain appends these flags to hessmon train's (later flags win), e.g. \"--data mnist --lr 0.1\"")
)

// browser starts headless chromium for t, or skips t where there is none.
// Every console message of the page is kept; assertNoConsoleErrors checks
// them. The browser resolves no host name but 127.0.0.1, so a page that
// reached for a CDN would fail to load it and log an error: the page must
// work offline.
type browser struct {
	ctx  context.Context
	mu   sync.Mutex
	msgs []chromedp.ConsoleMessage
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	var bin string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		t.Skip("chromium not on PATH: apt-get install chromium (the CI script installs it)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.WindowSize(1400, 1000),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // chromium refuses its sandbox as root
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	b := &browser{ctx: ctx}
	msgs := chromedp.Console(ctx) // starts the browser
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.msgs = append(b.msgs, m)
			b.mu.Unlock()
		}
	}()
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[int]("1")); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	return b
}

// errorsSince returns the console errors and exceptions from the i-th
// message on, and the number of messages so far.
func (b *browser) errorsSince(i int) ([]string, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, m := range b.msgs[min(i, len(b.msgs)):] {
		if m.Type == chromedp.ConsoleError || m.IsException() {
			out = append(out, fmt.Sprintf("%s (%s %s:%d)", m.String(), m.Source, m.URL, m.Line))
		}
	}
	return out, len(b.msgs)
}

func (b *browser) assertNoConsoleErrors(t *testing.T) {
	t.Helper()
	if errs, _ := b.errorsSince(0); len(errs) > 0 {
		t.Errorf("the page logged %d errors:\n%s", len(errs), strings.Join(errs, "\n"))
	}
}

func (b *browser) do(t *testing.T, timeout time.Duration, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatal(err)
	}
}

func eval[T any](t *testing.T, b *browser, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// waitFor polls the JavaScript predicate until it is truthy.
func waitFor(t *testing.T, b *browser, what, predicate string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](predicate,
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
	if err != nil {
		status, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.getElementById("status").textContent`))
		t.Fatalf("waiting for %s: %v (page status: %q)", what, err, status)
	}
}

// pageView is what the page holds and shows, read in one evaluation so that
// a poll landing in between cannot mix two states.
type pageView struct {
	Charts map[string]chartView `json:"charts"`
	Rows   []tableRow           `json:"rows"`
	Fails  []map[string]string  `json:"fails"`
	Mark   *int                 `json:"mark"`
}

type chartView struct {
	Labels []string      `json:"labels"`
	Data   [][]*float64  `json:"data"`
	Steps  []esdStepView `json:"steps"`
}

type esdStepView struct {
	Run  string `json:"run"`
	Step int64  `json:"step"`
}

type tableRow struct {
	Run    string            `json:"run"`
	Cells  map[string]string `json:"cells"`
	StdErr string            `json:"stderr"`
}

const readPage = `(() => ({
  charts: Object.fromEntries(hessmon.charts().map((k) => [k, hessmon.chart(k)])),
  rows: [...document.querySelectorAll("#latest tbody tr")].map((tr) => ({
    run: tr.dataset.run,
    cells: Object.fromEntries([...tr.cells].map((td) => [td.dataset.field, td.dataset.value])),
    stderr: tr.querySelector('[data-field="trace"]').dataset.stderr,
  })),
  fails: [...document.querySelectorAll("#failures tbody tr")].map((tr) =>
    Object.fromEntries([...tr.cells].map((td) => [td.dataset.field, td.dataset.value || td.textContent]))),
  mark: window.testMark ?? null,
}))()`

func readView(t *testing.T, b *browser) pageView {
	t.Helper()
	return eval[pageView](t, b, readPage)
}

// apiSnap is the part of the API's JSON snapshot the page draws; null
// floats (NaN in Go) decode to nil.
type apiSnap struct {
	Step               int64      `json:"step"`
	Loss               *float64   `json:"loss"`
	LearningRate       *float64   `json:"learning_rate"`
	SharpnessThreshold *float64   `json:"sharpness_threshold"`
	SharpnessRatio     *float64   `json:"sharpness_ratio"`
	Eigenvalues        []*float64 `json:"eigenvalues"`
	Trace              *struct {
		Value  *float64 `json:"value"`
		StdErr *float64 `json:"stderr"`
		Blocks []struct {
			Name  string   `json:"name"`
			Value *float64 `json:"value"`
		} `json:"blocks"`
	} `json:"trace"`
	ESD *struct {
		Nodes []*float64 `json:"nodes"`
	} `json:"esd"`
	HVPs    float64  `json:"hvps"`
	Seconds *float64 `json:"seconds"`
	Failure string   `json:"failure"`
}

var reNextLink = regexp.MustCompile(`<(/[^>]*)>\s*;\s*rel="?next"?`)

// fetchSnaps reads run's snapshots from the API at base, following the
// next-page header as the page does.
func fetchSnaps(t *testing.T, base, run string) []apiSnap {
	t.Helper()
	var all []apiSnap
	url := fmt.Sprintf("%s/api/runs/%s/snapshots?from=0", base, run)
	for url != "" {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %s %v: %s", url, resp.Status, err, body)
		}
		var page []apiSnap
		if err := json.Unmarshal(body, &page); err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		all = append(all, page...)
		url = ""
		if len(page) == 0 {
			break
		}
		if next := resp.Header.Get("X-Hessmon-Next-From"); next != "" {
			url = fmt.Sprintf("%s/api/runs/%s/snapshots?from=%s", base, run, next)
		} else if m := reNextLink.FindStringSubmatch(resp.Header.Get("Link")); m != nil {
			url = base + m[1]
		}
	}
	return all
}

func bySteps(snaps []apiSnap) map[int64]apiSnap {
	m := make(map[int64]apiSnap, len(snaps))
	for _, s := range snaps {
		m[s.Step] = s
	}
	return m
}

// same reports whether the page's value equals the API's exactly: both are
// the shortest decimal of one float64, so parsing gives the same bits.
func same(page, api *float64) bool {
	switch {
	case page == nil || api == nil:
		return page == nil && api == nil
	default:
		return *page == *api
	}
}

func fptr(v float64) *float64 { return &v }

func str(p *float64) string {
	if p == nil {
		return "null"
	}
	return strconv.FormatFloat(*p, 'g', -1, 64)
}

// column returns the chart's series called label.
func (c chartView) column(t *testing.T, label string) []*float64 {
	t.Helper()
	i := slices.Index(c.Labels, label)
	if i < 0 {
		t.Fatalf("chart has no series %q; it has %q", label, c.Labels)
	}
	return c.Data[i]
}

// checkCharts compares every value the line charts of run hold with the
// API's snapshot of the same step. prefix is "" for a page showing one run
// and "run " for several.
func checkCharts(t *testing.T, v pageView, snaps []apiSnap, prefix string) {
	t.Helper()
	api := bySteps(snaps)
	type want struct {
		chart, series string
		value         func(s apiSnap) *float64
		good          bool // drawn only for successful probes
	}
	wants := []want{
		{"lambda", "threshold", func(s apiSnap) *float64 { return s.SharpnessThreshold }, false},
		{"loss", "loss", func(s apiSnap) *float64 { return s.Loss }, false},
		{"loss", "learning rate", func(s apiSnap) *float64 { return s.LearningRate }, false},
		{"cost", "HVPs", func(s apiSnap) *float64 { return fptr(s.HVPs) }, false},
		{"cost", "seconds", func(s apiSnap) *float64 { return s.Seconds }, false},
		{"trace", "trace", func(s apiSnap) *float64 { return s.Trace.Value }, true},
		{"trace", "+2·stderr", func(s apiSnap) *float64 { return fptr(*s.Trace.Value + 2**s.Trace.StdErr) }, true},
		{"trace", "−2·stderr", func(s apiSnap) *float64 { return fptr(*s.Trace.Value - 2**s.Trace.StdErr) }, true},
	}
	for i := range 3 {
		wants = append(wants, want{"lambda", fmt.Sprintf("λ%d", i+1), func(s apiSnap) *float64 {
			if s.Failure != "" || i >= len(s.Eigenvalues) {
				return nil
			}
			return s.Eigenvalues[i]
		}, false})
	}
	for _, w := range wants {
		c, ok := v.Charts[w.chart]
		if !ok {
			t.Fatalf("no chart %q; the page has %v", w.chart, slices.Sorted(maps.Keys(v.Charts)))
		}
		col := c.column(t, prefix+w.series)
		n := 0
		for j, x := range c.Data[0] {
			if x == nil || col[j] == nil && prefix != "" {
				continue // another run's step, in a joined chart
			}
			s, ok := api[int64(*x)]
			if !ok {
				t.Errorf("%s: the chart has step %g, the API has no such snapshot", w.chart, *x)
				continue
			}
			if w.good && (s.Failure != "" || s.Trace == nil) {
				continue
			}
			if want := w.value(s); !same(col[j], want) {
				t.Errorf("%s %q at step %d: page %s, API %s", w.chart, prefix+w.series, s.Step, str(col[j]), str(want))
			}
			n++
		}
		if n < 2 {
			t.Errorf("%s %q: %d points compared, want at least 2", w.chart, prefix+w.series, n)
		}
	}
}

// checkLatest compares the latest-probe table row of run with the API.
func checkLatest(t *testing.T, v pageView, run string, api map[int64]apiSnap) int64 {
	t.Helper()
	i := slices.IndexFunc(v.Rows, func(r tableRow) bool { return r.Run == run })
	if i < 0 {
		t.Fatalf("no table row for run %q: %+v", run, v.Rows)
	}
	row := v.Rows[i]
	step, err := strconv.ParseInt(row.Cells["step"], 10, 64)
	if err != nil {
		t.Fatalf("step cell %q: %v", row.Cells["step"], err)
	}
	s, ok := api[step]
	if !ok {
		t.Fatalf("the table shows step %d, the API has no such snapshot", step)
	}
	num := func(field string) *float64 {
		var p *float64
		if err := json.Unmarshal([]byte(row.Cells[field]), &p); err != nil {
			t.Errorf("cell %s = %q: %v", field, row.Cells[field], err)
		}
		return p
	}
	for _, c := range []struct {
		field string
		want  *float64
	}{
		{"loss", s.Loss}, {"learning_rate", s.LearningRate}, {"sharpness_threshold", s.SharpnessThreshold},
		{"sharpness_ratio", s.SharpnessRatio}, {"hvps", fptr(s.HVPs)}, {"seconds", s.Seconds},
	} {
		if got := num(c.field); !same(got, c.want) {
			t.Errorf("table %s at step %d: page %s, API %s", c.field, step, str(got), str(c.want))
		}
	}
	var ev []*float64
	if err := json.Unmarshal([]byte(row.Cells["eigenvalues"]), &ev); err != nil {
		t.Errorf("eigenvalues cell %q: %v", row.Cells["eigenvalues"], err)
	}
	if len(ev) != len(s.Eigenvalues) {
		t.Errorf("table eigenvalues at step %d: page %d, API %d", step, len(ev), len(s.Eigenvalues))
	}
	for i := range min(len(ev), len(s.Eigenvalues)) {
		if !same(ev[i], s.Eigenvalues[i]) {
			t.Errorf("table λ%d at step %d: page %s, API %s", i+1, step, str(ev[i]), str(s.Eigenvalues[i]))
		}
	}
	if s.Trace != nil {
		var se *float64
		_ = json.Unmarshal([]byte(row.StdErr), &se)
		if got := num("trace"); !same(got, s.Trace.Value) || !same(se, s.Trace.StdErr) {
			t.Errorf("table trace at step %d: page %s ± %s, API %s ± %s", step, str(got), str(se), str(s.Trace.Value), str(s.Trace.StdErr))
		}
	}
	var probes, fails int
	for _, a := range api {
		if a.Step <= step {
			probes++
			if a.Failure != "" {
				fails++
			}
		}
	}
	if row.Cells["probes"] != strconv.Itoa(probes) || row.Cells["failures"] != strconv.Itoa(fails) {
		t.Errorf("table at step %d: %s probes, %s failures; the API has %d and %d up to that step",
			step, row.Cells["probes"], row.Cells["failures"], probes, fails)
	}
	return step
}

// checkHeatmap checks that run's heat map has one column per successful
// probe with a spectral density, as the API lists them.
func checkHeatmap(t *testing.T, v pageView, run string, api map[int64]apiSnap, upTo int64) {
	t.Helper()
	c, ok := v.Charts["heat:"+run]
	if !ok {
		t.Fatalf("no heat map for run %q", run)
	}
	var want []int64
	for _, s := range api {
		if s.Failure == "" && s.ESD != nil && len(s.ESD.Nodes) > 0 && s.Step <= upTo {
			want = append(want, s.Step)
		}
	}
	slices.Sort(want)
	var got []int64
	for _, x := range c.Data[0] {
		got = append(got, int64(*x))
	}
	if !slices.Equal(got, want) {
		t.Errorf("heat map of %s: columns at %v, the API's ESD probes at %v", run, got, want)
	}
}

func buildHessmon(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "hessmon")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/hessmon")
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/hessmon: %v\n%s", err, out)
	}
	// A fresh binary in a new directory every run: go test cannot cache a
	// pass over the sources go build read.
	if _, err := os.Stat(bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestBrowserLiveTrain runs a real `hessmon train` on synthetic data, opens
// its page in headless chromium and checks that the charts and the table
// hold what the JSON API serves, that a new probe appears without a reload,
// and that the page logs no error (a blocked script or style would). It
// saves a screenshot (see -screenshot). Then `hessmon serve` shows the
// finished store on the same page.
func TestBrowserLiveTrain(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test: builds and runs hessmon train (skipped with -short)")
	}
	b := newBrowser(t)
	dir := t.TempDir()
	bin := buildHessmon(t, dir)
	addr := testutil.FreeAddr(t)
	base := "http://" + addr
	db := filepath.Join(dir, "h.db")
	train := startServing(t, bin, addr, append([]string{"train", "--data", "synthetic", "--hidden", "64,64", "--lr", "0.005",
		"--steps", "1000000", "--every", "10", "--probe-batch", "64", "--top", "3", "--esd-steps", "12", "--db", db, "--run", "live",
		"--listen", addr, "--progress", "off", "--log-level", "warn"}, strings.Fields(*trainArgs)...)...)

	b.do(t, 30*time.Second, chromedp.Navigate(base+"/?poll=500"))
	waitFor(t, b, "charts with two probes", `(() => { const c = window.hessmon && hessmon.chart("lambda");
		return c && c.data[0].length >= 2 && hessmon.chart("heat:live") && hessmon.chart("heat:live").data[0].length >= 2; })()`,
		120*time.Second)
	v := readView(t, b)
	snaps := fetchSnaps(t, base, "live")
	api := bySteps(snaps)
	checkCharts(t, v, snaps, "")
	first := checkLatest(t, v, "live", api)
	checkHeatmap(t, v, "live", api, first)
	if esd := v.Charts["esd"]; len(esd.Steps) != 1 || esd.Steps[0].Run != "live" {
		t.Errorf("ESD chart: latest probes %+v, want run live", esd.Steps)
	} else if s := api[esd.Steps[0].Step]; s.ESD == nil || s.Failure != "" {
		t.Errorf("ESD chart shows step %d, which has no spectral density in the API", esd.Steps[0].Step)
	}

	// A new probe must appear without a reload: a mark set on the window
	// survives only if the page stays.
	eval[int](t, b, "window.testMark = 7")
	waitFor(t, b, "a new probe", fmt.Sprintf(`(() => { const r = document.querySelector('#latest tr[data-run="live"] [data-field="step"]');
		return r && Number(r.dataset.value) > %d; })()`, first), 90*time.Second)
	v = readView(t, b)
	if v.Mark == nil || *v.Mark != 7 {
		t.Fatalf("the page reloaded (mark %v) instead of updating in place", v.Mark)
	}
	snaps = fetchSnaps(t, base, "live")
	api = bySteps(snaps)
	last := checkLatest(t, v, "live", api)
	checkCharts(t, v, snaps, "")
	t.Logf("page showed probes up to step %d, then step %d without a reload; %d snapshots in the API", first, last, len(snaps))

	if *screenshotProbes > 0 {
		waitFor(t, b, fmt.Sprintf("%d probes", *screenshotProbes), fmt.Sprintf(`(() => { const r = document.querySelector('#latest tr[data-run="live"] [data-field="probes"]');
			return r && Number(r.dataset.value) >= %d; })()`, *screenshotProbes), 10*time.Minute)
		v = readView(t, b)
		snaps = fetchSnaps(t, base, "live")
		checkLatest(t, v, "live", bySteps(snaps))
		checkCharts(t, v, snaps, "")
	}
	png := screenshotPNG(t, b)
	b.assertNoConsoleErrors(t)
	if err := os.WriteFile(filepath.Join(t.ArtifactDir(), "live-page.png"), png, 0o644); err != nil {
		t.Error(err)
	}
	if *screenshot != "" {
		if err := os.WriteFile(*screenshot, png, 0o644); err != nil {
			t.Error(err)
		}
	}

	// Training stopped, `hessmon serve` shows the finished store on the
	// same page, through the same API. The page leaves the trainer first:
	// a poll that meets the stopped trainer would log a refused connection.
	b.do(t, 30*time.Second, chromedp.Navigate("about:blank"))
	_, seen := b.errorsSince(0)
	train.stop()
	addr = testutil.FreeAddr(t)
	base = "http://" + addr
	startServing(t, bin, addr, "serve", "--db", db, "--listen", addr)
	b.do(t, 30*time.Second, chromedp.Navigate(base+"/?poll=500"))
	waitFor(t, b, "the finished run", `document.querySelector('#latest tr[data-run="live"]') !== null`, 30*time.Second)
	v = readView(t, b)
	snaps = fetchSnaps(t, base, "live")
	api = bySteps(snaps)
	if final := checkLatest(t, v, "live", api); final != snaps[len(snaps)-1].Step {
		t.Errorf("serve: the page's latest probe is at step %d, the store's at %d", final, snaps[len(snaps)-1].Step)
	}
	checkCharts(t, v, snaps, "")
	checkHeatmap(t, v, "live", api, snaps[len(snaps)-1].Step)
	if errs, _ := b.errorsSince(seen); len(errs) > 0 {
		t.Errorf("the page on hessmon serve logged %d errors:\n%s", len(errs), strings.Join(errs, "\n"))
	}
}

// served is a hessmon process that serves HTTP.
type served struct {
	stop func()
}

// startServing runs bin with args and waits until it serves /healthz on
// addr. stop (also run at the test's end) interrupts it as Ctrl-C does and
// waits for it to exit.
func startServing(t *testing.T, bin, addr string, args ...string) served {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, args...)
	var out testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 20 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := sync.OnceFunc(func() {
		cancel()
		<-exited
		if t.Failed() {
			t.Logf("hessmon %s output:\n%s", args[0], out.String())
		}
	})
	t.Cleanup(stop)
	for deadline := time.Now().Add(60 * time.Second); ; {
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("hessmon %s exited: %v\n%s", args[0], err, out.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("hessmon %s did not serve in time:\n%s", args[0], out.String())
		}
	}
	return served{stop: stop}
}

func screenshotPNG(t *testing.T, b *browser) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	return png
}
