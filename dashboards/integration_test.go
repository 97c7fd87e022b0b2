package dashboards

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
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

	"github.com/hessmon/hessmon/internal/testutil"
)

// The run id the integration test trains under.
const itestRun = "itest"

// trainArgs is the `hessmon train` command line of the integration test, in
// one place so that it follows the CLI: synthetic data (fast, no download),
// a probe every 10 steps on a small probe batch with a short spectrum (a
// probe takes seconds, not tens of seconds, on a shared 2-core machine),
// more steps than the test lasts (it stops the trainer itself), metrics on
// listen and the store in db.
func trainArgs(listen, db string) []string {
	return []string{
		"train",
		"--data", "synthetic",
		"--steps", "1000000",
		"--every", "10",
		"--top", "3",
		"--probe-batch", "32",
		"--esd-steps", "10",
		"--block-eigen-every", "1", // the layer-wise sharpness panel needs data
		"--progress", "off",
		"--run", itestRun,
		"--db", db,
		"--listen", listen,
	}
}

// Values substituted for Grafana's built-in variables.
var grafanaBuiltins = map[string]string{
	"__rate_interval": "1m",
	"__interval":      "15s",
	"__range":         "5m",
}

const (
	// A deadline for failing, not a performance threshold: a healthy run
	// takes about 10–25 s after the build, most of it Prometheus's 5 s
	// target-discovery batch and the first probe.
	integrationBudget = 120 * time.Second
	scrapeConfig      = `global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - %q
scrape_configs:
  - job_name: hessmon
    static_configs:
      - targets: [%q]
`
)

// TestIntegrationDashboardsAgainstPrometheus runs a real `hessmon train`,
// scrapes it with a real Prometheus, and requires every committed panel
// query to return data and every run variable to resolve.
func TestIntegrationDashboardsAgainstPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: starts hessmon train and Prometheus (skipped with -short)")
	}
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus not on PATH: apt-get install prometheus (the CI script installs it)")
	}

	dir := t.TempDir()
	began := time.Now()
	hessmon := goBuild(t, dir, "./cmd/hessmon")
	t.Logf("built hessmon in %v", time.Since(began).Round(time.Millisecond))
	checkComposeTrainFlags(t, hessmon)
	scrapeAndQuery(t, promBin, dir, hessmon, trainArgs)
}

// checkComposeTrainFlags fails if docker-compose.yml runs the trainer with a
// subcommand or flag that the built hessmon does not have (per its --help).
func checkComposeTrainFlags(t *testing.T, hessmon string) {
	t.Helper()
	cmd := loadCompose(t).Services["trainer"].Command
	if len(cmd) == 0 {
		t.Fatal("docker-compose.yml: trainer has no command")
	}
	out, _ := exec.Command(hessmon, cmd[0], "--help").CombinedOutput() // exit status varies with the flag package's mode
	have := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+-{1,2}([A-Za-z0-9][\w-]*)`).FindAllStringSubmatch(string(out), -1) {
		have[m[1]] = true
	}
	if len(have) == 0 {
		t.Fatalf("hessmon %s --help lists no flags:\n%s", cmd[0], out)
	}
	for _, a := range cmd[1:] {
		name, ok := strings.CutPrefix(a, "--")
		if !ok {
			continue
		}
		name, _, _ = strings.Cut(name, "=")
		if !have[name] {
			t.Errorf("docker-compose.yml: hessmon %s has no flag --%s", cmd[0], name)
		}
	}
}

// goBuild builds the package at pkg (relative to the repository root) into
// dir and returns the binary's path.
func goBuild(t *testing.T, dir, pkg string) string {
	t.Helper()
	bin := filepath.Join(dir, filepath.Base(pkg))
	build := exec.Command("go", "build", "-o", bin, pkg)
	build.Dir = repoRoot
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	// go test caches a passing result by the files the test itself opened;
	// the sources go build read are not among them. Statting the fresh
	// binary, in a new temporary directory every run, makes a cached pass
	// impossible, so a changed trainer is always tested again.
	if _, err := os.Stat(bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

// scrapeAndQuery starts the trainer binary with args and a Prometheus
// scraping it, then checks the committed dashboards and the rules against
// the scraped data. Both processes are stopped by t.Cleanup.
func scrapeAndQuery(t *testing.T, promBin, dir, trainerBin string, args func(listen, db string) []string) {
	ctx, cancel := context.WithTimeout(context.Background(), integrationBudget)
	defer cancel()
	began := time.Now()

	trainerAddr := testutil.FreeAddr(t)
	trainer := start(t, "hessmon train", trainerBin, args(trainerAddr, filepath.Join(dir, "h.db"))...)

	rules, err := filepath.Abs("rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, scrapeConfig, rules, trainerAddr), 0o644); err != nil {
		t.Fatal(err)
	}
	promAddr := testutil.FreeAddr(t)
	prom := start(t, "prometheus", promBin,
		"--config.file="+cfg,
		"--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		"--web.listen-address="+promAddr,
		"--log.level=warn",
	)
	api := &promAPI{base: "http://" + promAddr}

	// 1. Prometheus is up and has scraped the first probe of the run.
	if err := poll(ctx, []*proc{trainer, prom}, func() error {
		v, err := api.query(ctx, fmt.Sprintf(`hessian_step{run=%q}`, itestRun), time.Now())
		if err != nil {
			return err
		}
		if len(v) == 0 {
			return errors.New("no hessian_step scraped yet")
		}
		return nil
	}); err != nil {
		t.Fatalf("waiting for the first probe: %v", err)
	}
	t.Logf("first probe scraped %v after start", time.Since(began).Round(time.Millisecond))

	// 2. Every target of every committed dashboard returns data. Counters
	// and quantiles need a few probes in their window, so poll until all of
	// them answer at one evaluation time, then report the stragglers.
	type check struct{ where, expr string }
	var checks []check
	files := committed(t)
	for _, name := range Names(files) {
		qs, err := Queries(files[name])
		if err != nil {
			t.Fatal(err)
		}
		vars, err := Variables(files[name])
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range qs {
			expr, err := substitute(q.Expr, vars)
			if err != nil {
				t.Fatalf("%s panel %q %s: %v", name, q.Panel, q.RefID, err)
			}
			checks = append(checks, check{fmt.Sprintf("%s panel %q %s", name, q.Panel, q.RefID), expr})
		}
		// 3. Every query variable resolves through the label-values API.
		for _, v := range vars {
			if v.Type != "query" {
				continue
			}
			m := regexp.MustCompile(`^label_values\((\w+),\s*(\w+)\)$`).FindStringSubmatch(v.Query)
			if m == nil {
				t.Fatalf("%s variable %s: cannot resolve %q", name, v.Name, v.Query)
			}
			values, err := api.labelValues(ctx, m[2], m[1])
			if err != nil {
				t.Fatalf("%s variable %s: %v", name, v.Name, err)
			}
			if !slices.Contains(values, itestRun) {
				t.Errorf("%s variable %s = %s resolves to %v, without %q", name, v.Name, v.Query, values, itestRun)
			}
		}
	}
	var empty []string
	err = poll(ctx, []*proc{trainer, prom}, func() error {
		now := time.Now()
		empty = empty[:0]
		for _, c := range checks {
			v, err := api.query(ctx, c.expr, now)
			if err != nil {
				return fmt.Errorf("%s: %w", c.where, err)
			}
			switch {
			case len(v) == 0:
				empty = append(empty, fmt.Sprintf("%s: %s: empty result", c.where, c.expr))
			case !slices.ContainsFunc(v, func(s sample) bool { return !math.IsNaN(s.Value) && !math.IsInf(s.Value, 0) }):
				empty = append(empty, fmt.Sprintf("%s: %s: only NaN/Inf values", c.where, c.expr))
			}
		}
		if len(empty) > 0 {
			return fmt.Errorf("%d of %d queries without finite data", len(empty), len(checks))
		}
		return nil
	})
	if err != nil {
		t.Errorf("dashboard queries: %v", err)
		for _, e := range empty {
			t.Errorf("no data: %s", e)
		}
	} else {
		t.Logf("all %d dashboard queries returned finite data %v after start", len(checks), time.Since(began).Round(time.Millisecond))
	}

	// The alert rules load and evaluate against the real series.
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer rcancel()
	groups, err := api.rules(rctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range groups {
		for _, r := range g.Rules {
			n++
			if r.Health != "ok" && r.Health != "unknown" {
				t.Errorf("rule %s: health %s: %s", r.Name, r.Health, r.LastError)
			}
		}
	}
	if n == 0 {
		t.Error("Prometheus loaded no rules")
	}
}

// substitute replaces dashboard variables (their saved or test values) and
// Grafana's built-ins in expr, and fails on any variable left over.
func substitute(expr string, vars []Variable) (string, error) {
	values := map[string]string{}
	for k, v := range grafanaBuiltins {
		values[k] = v
	}
	for _, v := range vars {
		switch {
		case v.Name == varRun:
			values[v.Name] = itestRun
		case v.Current != "":
			values[v.Name] = v.Current
		}
	}
	re := regexp.MustCompile(`\$\{(\w+)\}|\$(\w+)`)
	var missing []string
	out := re.ReplaceAllStringFunc(expr, func(m string) string {
		sub := re.FindStringSubmatch(m)
		name := sub[1] + sub[2]
		v, ok := values[name]
		if !ok {
			missing = append(missing, name)
			return m
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("unresolved variables %v in %q", missing, expr)
	}
	return out, nil
}

// promAPI is a minimal client of Prometheus's HTTP API.
type promAPI struct{ base string }

type promResponse struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
}

func (a *promAPI) get(ctx context.Context, path string, params url.Values, data any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+path+"?"+params.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var r promResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return fmt.Errorf("%s: HTTP %d: %s", path, resp.StatusCode, bytes.TrimSpace(body))
	}
	if r.Status != "success" {
		return fmt.Errorf("%s: %s: %s", path, r.ErrorType, r.Error)
	}
	return json.Unmarshal(r.Data, data)
}

// sample is one element of an instant query's result.
type sample struct {
	Metric map[string]string
	Value  float64
}

// query runs an instant query at the given time; a scalar result comes back
// as one sample without labels.
func (a *promAPI) query(ctx context.Context, expr string, at time.Time) ([]sample, error) {
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	params := url.Values{"query": {expr}, "time": {fmt.Sprintf("%.3f", float64(at.UnixMilli())/1000)}}
	if err := a.get(ctx, "/api/v1/query", params, &data); err != nil {
		return nil, err
	}
	// Sample values are [unix time, "value"].
	parse := func(pair []any) (float64, error) {
		if len(pair) != 2 {
			return 0, fmt.Errorf("bad sample %v", pair)
		}
		str, _ := pair[1].(string)
		return strconv.ParseFloat(str, 64)
	}
	switch data.ResultType {
	case "scalar":
		var pair []any
		if err := json.Unmarshal(data.Result, &pair); err != nil {
			return nil, err
		}
		v, err := parse(pair)
		return []sample{{Value: v}}, err
	case "vector":
		var vec []struct {
			Metric map[string]string `json:"metric"`
			Value  []any             `json:"value"`
		}
		if err := json.Unmarshal(data.Result, &vec); err != nil {
			return nil, err
		}
		out := make([]sample, 0, len(vec))
		for _, e := range vec {
			v, err := parse(e.Value)
			if err != nil {
				return nil, err
			}
			out = append(out, sample{Metric: e.Metric, Value: v})
		}
		return out, nil
	default:
		return nil, fmt.Errorf("unexpected %s result for %q", data.ResultType, expr)
	}
}

func (a *promAPI) labelValues(ctx context.Context, label, metric string) ([]string, error) {
	var values []string
	err := a.get(ctx, "/api/v1/label/"+url.PathEscape(label)+"/values", url.Values{"match[]": {metric}}, &values)
	return values, err
}

type ruleGroup struct {
	Rules []struct {
		Name      string `json:"name"`
		Health    string `json:"health"`
		LastError string `json:"lastError"`
	} `json:"rules"`
}

func (a *promAPI) rules(ctx context.Context) ([]ruleGroup, error) {
	var data struct {
		Groups []ruleGroup `json:"groups"`
	}
	err := a.get(ctx, "/api/v1/rules", nil, &data)
	return data.Groups, err
}

// poll calls f every 500 ms until it succeeds, ctx ends, or one of the
// processes exits; it returns f's last error in the latter cases.
func poll(ctx context.Context, procs []*proc, f func() error) error {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f()
		if err == nil {
			return nil
		}
		for _, p := range procs {
			select {
			case <-p.done:
				return fmt.Errorf("%s exited (%v) while waiting: %w\n%s", p.name, p.err, err, p.output())
			default:
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up after %v)", err, integrationBudget)
		case <-tick.C:
		}
	}
}

// proc is a child process whose combined output is kept for diagnostics.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error

	mu  sync.Mutex
	out bytes.Buffer
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	const keep = 64 << 10
	if p.out.Len() > keep {
		p.out.Next(p.out.Len() - keep/2)
	}
	return p.out.Write(b)
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// start runs a process in its own process group and registers a cleanup
// that stops the whole group whatever happens: SIGTERM, then SIGKILL.
func start(t *testing.T, name, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p, p
	setProcessGroup(p.cmd)
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		terminateGroup(p.cmd)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			killGroup(p.cmd)
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s output (tail):\n%s", name, tail(p.output(), 4000))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
