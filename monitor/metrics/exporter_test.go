package metrics

import (
	"bytes"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"

	"os/exec"
	"sort"
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	hmtest "github.com/hessmon/hessmon/internal/testutil"
	"github.com/hessmon/hessmon/snapshot"
)

// scrape fetches url and parses the text exposition.
func scrape(t testing.TB, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return parse(t, resp.Body)
}

func parse(t testing.TB, r io.Reader) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := parseText(r)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

func parseText(r io.Reader) (map[string]*dto.MetricFamily, error) {
	dec := expfmt.NewDecoder(r, expfmt.NewFormat(expfmt.TypeTextPlain))
	out := make(map[string]*dto.MetricFamily)
	for {
		var mf dto.MetricFamily
		err := dec.Decode(&mf)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out[mf.GetName()] = &mf
	}
}

// value returns the sample of family name whose labels include want.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	mf, ok := fams[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// series counts the samples of family name for run.
func series(fams map[string]*dto.MetricFamily, name, run string) int {
	n := 0
	if mf, ok := fams[name]; ok {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == LabelRun && l.GetValue() == run {
					n++
				}
			}
		}
	}
	return n
}

func run(name string) map[string]string { return map[string]string{LabelRun: name} }

func with(m map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for a, b := range m {
		out[a] = b
	}
	return out
}

func serveExporter(t *testing.T, e *Exporter) string {
	t.Helper()
	ts := httptest.NewServer(promhttp.HandlerFor(gatherer(e), promhttp.HandlerOpts{}))
	t.Cleanup(ts.Close)
	return ts.URL + "/metrics"
}

func TestGaugesMatchSnapshot(t *testing.T) {
	e := NewExporter()
	url := serveExporter(t, e)
	s := hmtest.Snapshot("r1", 100, 3)
	e.Observe(s)
	fams := scrape(t, url)

	check := func(name string, labels map[string]string, want float64) {
		t.Helper()
		got, ok := value(fams, name, labels)
		if !ok {
			t.Errorf("%s%v missing", name, labels)
		} else if math.Abs(got-want) > 1e-15*math.Abs(want) {
			t.Errorf("%s%v = %g, want %g", name, labels, got, want)
		}
	}
	r := run("r1")
	for i, v := range s.Eigenvalues {
		check(TopEigenvalue, with(r, LabelRank, strconv.Itoa(i+1)), v)
		check(EigenvalueResidual, with(r, LabelRank, strconv.Itoa(i+1)), s.Residuals[i])
	}
	check(Trace, r, s.Trace.Value)
	check(TraceStdErr, r, s.Trace.StdErr)
	for _, b := range s.Trace.Blocks {
		check(BlockTrace, with(r, LabelBlock, b.Name), b.Value)
	}
	check(SharpnessRatio, r, s.SharpnessRatio)
	check(SharpnessThreshold, r, s.SharpnessThreshold)
	check(Step, r, float64(s.Step))
	check(ProbeHVPs, r, float64(s.HVPs))
	check(TrainingLoss, r, s.Loss)
	check(TrainingLR, r, s.LearningRate)
	check(HVPTotal, r, float64(s.HVPs))
	check(ProbesTotal, r, 1)
	check(ProbeDuration, r, 1) // sample count
	for _, reason := range []string{ReasonNaN, ReasonPanic, ReasonTimeout, ReasonBudget, ReasonError} {
		check(ProbeFailures, with(r, LabelReason, reason), 0)
	}
	if got := series(fams, ESDCumulative, "r1"); got != len(ESDEdges())+1 {
		t.Errorf("%d ESD series, want %d", got, len(ESDEdges())+1)
	}
	check(ESDCumulative, with(r, LabelLE, "+Inf"), 1)
	check(ESDCumulative, with(r, LabelLE, "0"), 0.5) // -0.5 and 0
	check(ESDCumulative, with(r, LabelLE, "-0.0001"), 0.1)
	check(ESDCumulative, with(r, LabelLE, "1000"), 1)
	if mf := fams[ESDCumulative]; mf.GetType() != dto.MetricType_UNTYPED {
		t.Errorf("%s has type %v", ESDCumulative, mf.GetType())
	}
	for name, mf := range fams {
		if mf.GetHelp() == "" {
			t.Errorf("%s has no HELP", name)
		}
	}
}

func TestESDEdges(t *testing.T) {
	edges := ESDEdges()
	if !sort.Float64sAreSorted(edges) {
		t.Fatal("edges not sorted")
	}
	n := len(edges)
	if n%2 != 1 || edges[n/2] != 0 {
		t.Fatalf("edges not centred on 0: %v", edges)
	}
	for i := range n / 2 {
		if edges[i] != -edges[n-1-i] || edges[i] == edges[i+1] {
			t.Fatalf("edges not symmetric or not strict at %d", i)
		}
	}
	if edges[n/2+1] != 1e-4 || edges[n-1] != 1e3 {
		t.Errorf("positive edges span %g..%g, want 1e-4..1e3", edges[n/2+1], edges[n-1])
	}
	perDecade := 0
	for _, x := range edges {
		if x > 1 && x <= 10 {
			perDecade++
		}
	}
	if perDecade != 4 {
		t.Errorf("%d edges in (1,10], want 4", perDecade)
	}
}

// TestESDCumulative compares the exported distribution with a brute-force
// sum over random quadratures.
func TestESDCumulative(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	e := NewExporter()
	url := serveExporter(t, e)
	edges := ESDEdges()
	for trial := range 20 {
		n := 1 + rng.IntN(200)
		esd := &snapshot.ESD{}
		var total float64
		for range n {
			// Log-uniform magnitudes across and beyond the edge range, both signs.
			x := math.Pow(10, -6+10*rng.Float64())
			if rng.IntN(3) == 0 {
				x = -x
			}
			if rng.IntN(10) == 0 {
				x = 0
			}
			w := rng.Float64()
			esd.Nodes, esd.Weights = append(esd.Nodes, x), append(esd.Weights, w)
			total += w
		}
		s := hmtest.Snapshot("esd", int64(trial), 1)
		s.ESD = esd
		e.Observe(s)
		fams := scrape(t, url)
		prev := 0.0
		for _, le := range append(append([]float64{}, edges...), math.Inf(1)) {
			label := strconv.FormatFloat(le, 'g', -1, 64)
			if math.IsInf(le, 1) {
				label = "+Inf"
			}
			got, ok := value(fams, ESDCumulative, with(run("esd"), LabelLE, label))
			if !ok {
				t.Fatalf("le=%s missing", label)
			}
			var want float64
			for i, x := range esd.Nodes {
				if x <= le {
					want += esd.Weights[i]
				}
			}
			want /= total
			if math.Abs(got-want) > 1e-12 {
				t.Errorf("trial %d le=%s: %g, want %g", trial, label, got, want)
			}
			if got < prev {
				t.Errorf("trial %d: not monotone at le=%s", trial, label)
			}
			prev = got
		}
		if prev != 1 {
			t.Errorf("trial %d: +Inf = %g", trial, prev)
		}
	}
}

func TestFailureKeepsGoodGauges(t *testing.T) {
	e := NewExporter()
	url := serveExporter(t, e)
	good := hmtest.Snapshot("r", 50, 2)
	e.Observe(good)
	bad := snapshot.Snapshot{Run: "r", Step: 100, Loss: math.NaN(), LearningRate: 0.05,
		Eigenvalues: []float64{math.NaN()}, Trace: &snapshot.Trace{Value: math.NaN()},
		HVPs: 7, Seconds: 1.5, Failure: snapshot.FailNaN, Detail: "HVP returned NaN"}
	e.Observe(bad)
	timeout := snapshot.Snapshot{Run: "r", Step: 150, LearningRate: 0.05, HVPs: 3, Seconds: 20, Failure: snapshot.FailTimeout}
	e.Observe(timeout)
	fams := scrape(t, url)
	r := run("r")
	for name, want := range map[string]float64{
		TopEigenvalue + "/1": good.Eigenvalues[0], Trace: good.Trace.Value, Step: 50,
		TrainingLoss: good.Loss, ProbesTotal: 3, HVPTotal: float64(good.HVPs + 7 + 3), ProbeDuration: 3,
	} {
		labels := r
		if name == TopEigenvalue+"/1" {
			name, labels = TopEigenvalue, with(r, LabelRank, "1")
		}
		if got, ok := value(fams, name, labels); !ok || got != want {
			t.Errorf("%s = %g (present %v), want %g", name, got, ok, want)
		}
	}
	for reason, want := range map[string]float64{ReasonNaN: 1, ReasonTimeout: 1, ReasonPanic: 0} {
		if got, _ := value(fams, ProbeFailures, with(r, LabelReason, reason)); got != want {
			t.Errorf("failures{reason=%s} = %g, want %g", reason, got, want)
		}
	}
}

func TestStaleSeriesDropped(t *testing.T) {
	e := NewExporter()
	url := serveExporter(t, e)
	e.Observe(hmtest.Snapshot("r", 1, 5))
	if n := series(scrape(t, url), TopEigenvalue, "r"); n != 5 {
		t.Fatalf("%d eigenvalue series, want 5", n)
	}
	s := hmtest.Snapshot("r", 2, 3)
	s.Trace.Blocks = s.Trace.Blocks[:1]
	e.Observe(s)
	fams := scrape(t, url)
	if n := series(fams, TopEigenvalue, "r"); n != 3 {
		t.Errorf("%d eigenvalue series after k shrank to 3", n)
	}
	if n := series(fams, EigenvalueResidual, "r"); n != 3 {
		t.Errorf("%d residual series after k shrank to 3", n)
	}
	if n := series(fams, BlockTrace, "r"); n != 1 {
		t.Errorf("%d block series after blocks shrank to 1", n)
	}
	// An older snapshot arriving late does not move the gauges back.
	e.Observe(hmtest.Snapshot("r", 1, 5))
	if got, _ := value(scrape(t, url), Step, run("r")); got != 2 {
		t.Errorf("step went back to %g", got)
	}
	e.Forget("r")
	fams = scrape(t, url)
	for name := range fams {
		if n := series(fams, name, "r"); n != 0 {
			t.Errorf("%s still has %d series after Forget", name, n)
		}
	}
}

func TestObserveTraining(t *testing.T) {
	e := NewExporter()
	url := serveExporter(t, e)
	e.ObserveTraining("r", 10, 2.5, 0.1)
	fams := scrape(t, url)
	if got, _ := value(fams, TrainingLoss, run("r")); got != 2.5 {
		t.Errorf("loss %g", got)
	}
	if _, ok := value(fams, TopEigenvalue, run("r")); ok {
		t.Error("eigenvalues before any probe")
	}
	e.ObserveTraining("r", 20, 1.5, 0.05)
	s := hmtest.Snapshot("r", 15, 1) // probe of an earlier step lands later
	e.Observe(s)
	fams = scrape(t, url)
	if got, _ := value(fams, TrainingLoss, run("r")); got != 1.5 {
		t.Errorf("loss %g, want the step-20 value 1.5", got)
	}
	if got, _ := value(fams, TrainingLR, run("r")); got != 0.05 {
		t.Errorf("lr %g, want 0.05", got)
	}
}

func TestLabelSanitising(t *testing.T) {
	e := NewExporter()
	url := serveExporter(t, e)
	s := hmtest.Snapshot("bad\xffrun", 1, 1)
	s.Trace.Blocks = append(s.Trace.Blocks, snapshot.BlockTrace{Name: "fc1.weight", Value: 1}, snapshot.BlockTrace{Name: "x\xfe"})
	e.Observe(s)
	fams := scrape(t, url)
	if n := series(fams, BlockTrace, "bad\uFFFDrun"); n != 3 {
		t.Errorf("%d block series, want 3 (duplicate dropped)", n)
	}
}

// TestLint runs client_golang's linter (promtool's rules) in process, and
// promtool itself over a real scrape.
func TestLint(t *testing.T) {
	e := NewExporter()
	e.Observe(hmtest.Snapshot("a", 1, 5))
	e.Observe(snapshot.Snapshot{Run: "a", Step: 2, Failure: snapshot.FailPanic})
	e.ObserveTraining("b", 3, 1, 0.1)
	problems, err := testutil.GatherAndLint(gatherer(e))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not on PATH")
	}
	resp, err := http.Get(serveExporter(t, e))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	t.Logf("promtool check metrics: clean over %d bytes, %d families", len(body), len(parse(t, bytes.NewReader(body))))
}

// gatherer registers e on a fresh registry, as a user would.
func gatherer(e *Exporter) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(e)
	return reg
}

// TestLightProbeGauges: a light probe moves λ1, λmin, its residuals and the
// sharpness ratio, while the full-only gauges keep the full probe's values
// and hessian_full_probe_step says where they come from; the probes are
// counted by kind and reason.
func TestLightProbeGauges(t *testing.T) {
	e := NewExporter()
	url := serveExporter(t, e)
	full := hmtest.Snapshot("r", 100, 3)
	full.Kind, full.Reason = snapshot.KindFull, snapshot.ReasonBudget
	e.Observe(full)
	light := hmtest.LightSnapshot("r", 150)
	e.Observe(light)
	trig := hmtest.LightSnapshot("r", 200)
	trig.Reason = snapshot.ReasonScheduled
	e.Observe(trig)
	fams := scrape(t, url)
	r := run("r")
	rank := func(i int) map[string]string { return with(r, LabelRank, strconv.Itoa(i)) }
	cases := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{TopEigenvalue, rank(1), trig.Eigenvalues[0]},
		{EigenvalueResidual, rank(1), trig.Residuals[0]},
		{MinEigenvalue, r, trig.LambdaMin.Value},
		{MinEigenvalueResidual, r, trig.LambdaMin.Residual},
		{NegativeCurvature, r, -trig.LambdaMin.Value / trig.Eigenvalues[0]},
		{SharpnessRatio, r, trig.SharpnessRatio},
		{Step, r, 200},
		{ProbeHVPs, r, float64(trig.HVPs)},
		// Full-only: the full probe's values, from step 100.
		{TopEigenvalue, rank(2), full.Eigenvalues[1]},
		{TopEigenvalue, rank(3), full.Eigenvalues[2]},
		{EigenvalueResidual, rank(3), full.Residuals[2]},
		{Trace, r, full.Trace.Value},
		{TraceStdErr, r, full.Trace.StdErr},
		{BlockTrace, with(r, LabelBlock, "fc1.bias"), full.Trace.Blocks[1].Value},
		{ESDCumulative, with(r, LabelLE, "0"), 0.5},
		{FullProbeStep, r, 100},
		{ProbesTotal, r, 3},
		{ProbesByKind, with(with(r, LabelKind, KindFull), LabelReason, "budget"), 1},
		{ProbesByKind, with(with(r, LabelKind, KindLight), LabelReason, "scheduled"), 2},
		{ProbesByKind, with(with(r, LabelKind, KindFull), LabelReason, "scheduled"), 0},
	}
	for _, c := range cases {
		got, ok := value(fams, c.name, c.labels)
		if !ok || math.Abs(got-c.want) > 1e-12*math.Abs(c.want) {
			t.Errorf("%s%v = %g (present %v), want %g", c.name, c.labels, got, ok, c.want)
		}
	}
	if trig.Eigenvalues[0] == full.Eigenvalues[0] || trig.LambdaMin == nil {
		t.Fatal("test snapshots do not tell light from full")
	}
	if n := series(fams, TopEigenvalue, "r"); n != 3 {
		t.Errorf("%d eigenvalue series, want 3 (rank 1 light, 2..3 full)", n)
	}
	if n := series(fams, ProbesByKind, "r"); n != 2*len(snapshot.Reasons()) {
		t.Errorf("%d probes-by-kind series, want every kind × reason", n)
	}

	// A late full probe older than the newest light one updates the
	// full-only gauges but leaves λ1 and hessian_step alone.
	late := hmtest.Snapshot("r", 180, 3)
	late.Kind, late.Reason = snapshot.KindFull, snapshot.ReasonJump
	e.Observe(late)
	fams = scrape(t, url)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{TopEigenvalue, rank(1), trig.Eigenvalues[0]},
		{TopEigenvalue, rank(2), late.Eigenvalues[1]},
		{Trace, r, late.Trace.Value},
		{Step, r, 200},
		{FullProbeStep, r, 180},
		{ProbesByKind, with(with(r, LabelKind, KindFull), LabelReason, "jump"), 1},
	} {
		if got, ok := value(fams, c.name, c.labels); !ok || got != c.want {
			t.Errorf("after a late full probe: %s%v = %g (present %v), want %g", c.name, c.labels, got, ok, c.want)
		}
	}
}

// TestOnlyLightProbes: a run whose probes are all light has λ1 and λmin but
// no full-only series, not even a full-probe step.
func TestOnlyLightProbes(t *testing.T) {
	e := NewExporter()
	url := serveExporter(t, e)
	e.Observe(hmtest.LightSnapshot("l", 10))
	fams := scrape(t, url)
	for _, name := range []string{Trace, ESDCumulative, FullProbeStep, BlockTrace} {
		if n := series(fams, name, "l"); n != 0 {
			t.Errorf("%s has %d series after light probes only", name, n)
		}
	}
	for _, name := range []string{TopEigenvalue, MinEigenvalue, Step} {
		if n := series(fams, name, "l"); n != 1 {
			t.Errorf("%s has %d series, want 1", name, n)
		}
	}
}
