package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/store"
)

// inspRun runs the CLI in-process and returns its exit status and output.
func inspRun(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// inspMust runs the CLI and fails the test on a non-zero exit.
func inspMust(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errs := inspRun(t, args...)
	if code != 0 {
		t.Fatalf("hessmon %s: exit %d\n%s", strings.Join(args, " "), code, errs)
	}
	return out
}

var inspT0 = time.Date(2026, 3, 4, 5, 6, 7, 890, time.UTC)

// inspFixture writes a store with exactly known snapshots: run "alpha"
// (SGD, every estimate, a failed probe, a learning-rate drop) and run
// "beta" (eigenvalues only, a NaN residual). Values are irrational-ish so
// that any rounding on the way out shows.
func inspFixture(t *testing.T) (path string, want map[string][]snapshot.Snapshot) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "fixture.db")
	st, err := store.Open(path, store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	want = map[string][]snapshot.Snapshot{}
	runs := []snapshot.Run{
		{ID: "alpha", Model: "mlp 784-32-10 tanh", Optimizer: "sgd", Started: inspT0},
		{ID: "beta", Model: "cnn 8,16", Optimizer: "adam", Started: inspT0.Add(time.Hour)},
	}
	for _, r := range runs {
		if err := st.PutRun(r); err != nil {
			t.Fatal(err)
		}
	}
	for i, step := range []int64{0, 10, 20, 30} {
		lr := 0.1
		if step >= 30 {
			lr = 0.05
		}
		x := float64(i + 1)
		l1 := math.Pi * x
		s := snapshot.Snapshot{
			Run: "alpha", Step: step, Time: inspT0.Add(time.Duration(i) * time.Second),
			Loss: math.E / x, LearningRate: lr, Optimizer: "sgd",
			SharpnessThreshold: 2 / lr, SharpnessRatio: l1 * lr / 2,
			Eigenvalues: []float64{l1, l1 / math.Sqrt2, -l1 / 7}, Residuals: []float64{1.234e-9 * x, 2.5e-7, 3.1e-5},
			Eigenvectors: [][]float64{{1, 0}, {0, 1}, {0.6, 0.8}},
			Trace: &snapshot.Trace{Value: 10.1 * l1, StdErr: 0.37 * x, Probes: 30, Method: "hutch++", Blocks: []snapshot.BlockTrace{
				{Name: "fc1.weight", Value: 6.3 * l1, StdErr: 0.2}, {Name: "fc1.bias", Value: 0.11 * l1, StdErr: 0.01},
				{Name: "fc2.weight", Value: 3.7 * l1, StdErr: 0.15},
			}},
			ESD: &snapshot.ESD{
				Nodes:   []float64{-0.3 / x, -1e-4, 0.7, l1, -0.1, 0.002, 2.2, l1 / 2},
				Weights: []float64{0.05, 0.6, 0.2, 0.15, 0.1, 0.5, 0.3, 0.1},
				Probes:  2, Steps: 4, Sigma2: 1e-5,
			},
			HVPs: 100 + 7*i, Seconds: 0.25 * x, Warm: i > 0,
		}
		if step == 20 {
			s = snapshot.Snapshot{Run: "alpha", Step: step, Time: s.Time, Loss: math.NaN(), LearningRate: lr, Optimizer: "sgd",
				HVPs: 13, Seconds: 0.01, Failure: "nan", Detail: "NaN in Hessian-vector product"}
		}
		if err := st.PutSnapshot(s); err != nil {
			t.Fatal(err)
		}
		want["alpha"] = append(want["alpha"], s)
	}
	for i, step := range []int64{5, 15} {
		l1 := 0.38 * float64(i+1)
		s := snapshot.Snapshot{
			Run: "beta", Step: step, Time: inspT0.Add(time.Hour + time.Duration(i)*time.Second),
			Loss: 0.5 / float64(i+1), LearningRate: 1e-3, Optimizer: "adam", Beta1: 0.9,
			SharpnessThreshold: 38 / 1e-3, SharpnessRatio: l1 / (38 / 1e-3),
			Eigenvalues: []float64{l1, 0.5}, Residuals: []float64{math.NaN(), 1e-4},
			HVPs: 50, Seconds: 1.5, Warm: i > 0,
		}
		if err := st.PutSnapshot(s); err != nil {
			t.Fatal(err)
		}
		want["beta"] = append(want["beta"], s)
	}
	return path, want
}

// inspTable splits a tabwriter table at its header's column starts (in
// runes: tabwriter pads by rune count), so cells may hold spaces.
func inspTable(t *testing.T, text string) (head []string, rows []map[string]string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	var starts []int
	hr := []rune(lines[0])
	for i, r := range hr {
		if r != ' ' && (i == 0 || hr[i-1] == ' ' && i > 1 && hr[i-2] == ' ') {
			starts = append(starts, i)
		}
	}
	cut := func(line string) []string {
		r := []rune(line)
		out := make([]string, len(starts))
		for i, s := range starts {
			end := len(r)
			if i+1 < len(starts) {
				end = min(starts[i+1], len(r))
			}
			if s < len(r) {
				out[i] = strings.TrimSpace(string(r[s:end]))
			}
		}
		return out
	}
	head = cut(lines[0])
	for _, l := range lines[1:] {
		if utf8.RuneCountInString(l) == 0 {
			continue
		}
		cells := cut(l)
		m := map[string]string{}
		for i, h := range head {
			m[h] = cells[i]
		}
		rows = append(rows, m)
	}
	return head, rows
}

// inspNum checks that a printed number (6 significant digits) is x.
func inspNum(t *testing.T, what, got string, x float64) {
	t.Helper()
	if math.IsNaN(x) {
		if got != "NaN" {
			t.Errorf("%s = %q, want NaN", what, got)
		}
		return
	}
	v, err := strconv.ParseFloat(got, 64)
	if err != nil || math.Abs(v-x) > 5e-6*math.Abs(x) {
		t.Errorf("%s = %q, want %.8g", what, got, x)
	}
}

func TestRunsMatchesStore(t *testing.T) {
	path, want := inspFixture(t)
	st, err := store.Open(path, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	sums, err := st.Runs()
	st.Close()
	if err != nil {
		t.Fatal(err)
	}

	var got []snapshot.RunSummary
	if err := json.Unmarshal([]byte(inspMust(t, "runs", "--db", path, "--json")), &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sums, got); diff != "" {
		t.Errorf("runs --json differs from the store (-store +json):\n%s", diff)
	}
	// Against the snapshots themselves, not only the store's summary.
	if got[0].ID != "alpha" || got[0].Snapshots != 4 || got[0].Failures != 1 || got[0].FirstStep != 0 || got[0].LastStep != 30 ||
		*got[0].FirstLambda1 != want["alpha"][0].Eigenvalues[0] || *got[0].LastLambda1 != want["alpha"][3].Eigenvalues[0] {
		t.Errorf("alpha summary %+v does not match its snapshots", got[0])
	}

	_, rows := inspTable(t, inspMust(t, "runs", "--db", path))
	if len(rows) != 2 {
		t.Fatalf("runs printed %d rows, want 2", len(rows))
	}
	for i, r := range rows {
		s := sums[i]
		if r["RUN"] != s.ID || r["MODEL"] != s.Model || r["OPT"] != string(s.Optimizer) || r["SNAPSHOTS"] != strconv.Itoa(s.Snapshots) ||
			r["FAILED"] != strconv.Itoa(s.Failures) || r["STEPS"] != strconv.FormatInt(s.FirstStep, 10)+".."+strconv.FormatInt(s.LastStep, 10) ||
			r["STARTED"] != s.Started.UTC().Format(time.RFC3339) {
			t.Errorf("row %d = %v, want %+v", i, r, s)
		}
		snaps := want[s.ID]
		inspNum(t, s.ID+" λ1 FIRST", r["λ1 FIRST"], snaps[0].Eigenvalues[0])
		inspNum(t, s.ID+" λ1 LAST", r["λ1 LAST"], snaps[len(snaps)-1].Eigenvalues[0])
	}
}

func TestShowTableMatchesSnapshots(t *testing.T) {
	path, want := inspFixture(t)
	out := inspMust(t, "show", "--db", path, "--run", "alpha")
	first, rest, _ := strings.Cut(out, "\n")
	if !strings.Contains(first, "mlp 784-32-10 tanh") || !strings.Contains(first, "4 snapshots, 1 failed") {
		t.Errorf("header line %q", first)
	}
	head, rows := inspTable(t, rest)
	wantHead := []string{"STEP", "KIND", "REASON", "LOSS", "λ1", "RES1", "λ2", "RES2", "λ3", "RES3", "TRACE±SE", "RATIO", "HVPS", "SECONDS", "START", "FAILURE"}
	if !slices.Equal(head, wantHead) {
		t.Fatalf("columns %q, want %q", head, wantHead)
	}
	if len(rows) != len(want["alpha"]) {
		t.Fatalf("%d rows, want %d", len(rows), len(want["alpha"]))
	}
	for i, s := range want["alpha"] {
		r := rows[i]
		if r["STEP"] != strconv.FormatInt(s.Step, 10) || r["HVPS"] != strconv.Itoa(s.HVPs) {
			t.Errorf("row %d: step %s hvps %s, want %d %d", i, r["STEP"], r["HVPS"], s.Step, s.HVPs)
		}
		inspNum(t, "loss", r["LOSS"], s.Loss)
		inspNum(t, "seconds", r["SECONDS"], math.Round(s.Seconds*100)/100)
		if start := map[bool]string{true: "warm", false: "cold"}[s.Warm]; r["START"] != start {
			t.Errorf("step %d: START %q, want %q", s.Step, r["START"], start)
		}
		if s.Failed() {
			if r["FAILURE"] != string(s.Failure) || r["λ1"] != "-" || r["TRACE±SE"] != "-" || r["RATIO"] != "-" {
				t.Errorf("failed step %d printed %v", s.Step, r)
			}
			continue
		}
		if r["FAILURE"] != "-" {
			t.Errorf("step %d: FAILURE %q", s.Step, r["FAILURE"])
		}
		for k, l := range s.Eigenvalues {
			inspNum(t, "λ"+strconv.Itoa(k+1), r["λ"+strconv.Itoa(k+1)], l)
			res, _ := strconv.ParseFloat(r["RES"+strconv.Itoa(k+1)], 64)
			if math.Abs(res-s.Residuals[k]) > 0.051*s.Residuals[k] { // 2 significant digits
				t.Errorf("step %d RES%d = %q, want %.3g", s.Step, k+1, r["RES"+strconv.Itoa(k+1)], s.Residuals[k])
			}
		}
		v, se, ok := strings.Cut(r["TRACE±SE"], "±")
		if !ok {
			t.Fatalf("TRACE±SE %q", r["TRACE±SE"])
		}
		inspNum(t, "trace", v, s.Trace.Value)
		if g, _ := strconv.ParseFloat(se, 64); math.Abs(g-s.Trace.StdErr) > 0.051*s.Trace.StdErr {
			t.Errorf("step %d trace stderr %q, want %.3g", s.Step, se, s.Trace.StdErr)
		}
		inspNum(t, "ratio", r["RATIO"], s.SharpnessRatio)
	}
}

func TestShowStep(t *testing.T) {
	path, want := inspFixture(t)
	s := want["alpha"][1]

	var got struct {
		Step        int64     `json:"step"`
		Eigenvalues []float64 `json:"eigenvalues"`
		Residuals   []float64 `json:"residuals"`
		Vectors     []any     `json:"eigenvectors"`
		Trace       struct {
			Value  float64               `json:"value"`
			Blocks []snapshot.BlockTrace `json:"blocks"`
		} `json:"trace"`
		ESD        snapshot.ESD `json:"esd"`
		ESDSummary struct {
			Probes       int     `json:"probes"`
			Steps        int     `json:"steps"`
			Mean         float64 `json:"mean"`
			MeanStdErr   float64 `json:"mean_stderr"`
			Moment2      float64 `json:"moment2"`
			MinNode      float64 `json:"min_node"`
			MaxNode      float64 `json:"max_node"`
			NegativeMass float64 `json:"negative_mass"`
			Quantiles    []struct{ P, Value float64 }
		} `json:"esd_summary"`
	}
	out := inspMust(t, "show", "--db", path, "--run", "alpha", "--step", "10", "--json")
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if got.Step != 10 || !slices.Equal(got.Eigenvalues, s.Eigenvalues) || !slices.Equal(got.Residuals, s.Residuals) ||
		got.Trace.Value != s.Trace.Value || !slices.Equal(got.Trace.Blocks, s.Trace.Blocks) ||
		!slices.Equal(got.ESD.Nodes, s.ESD.Nodes) || !slices.Equal(got.ESD.Weights, s.ESD.Weights) {
		t.Errorf("show --step 10 --json does not hold the stored snapshot:\n%s", out)
	}
	if got.Vectors != nil {
		t.Error("eigenvectors printed")
	}
	// The summary against moments computed here from nodes and weights:
	// per probe Σ w·xʲ·probes, averaged over the 2 probes.
	e := s.ESD
	var m1, m2 [2]float64
	for i, x := range e.Nodes {
		p := i / e.Steps
		m1[p] += e.Weights[i] * x * 2
		m2[p] += e.Weights[i] * x * x * 2
	}
	es := got.ESDSummary
	if es.Probes != 2 || es.Steps != 4 || math.Abs(es.Mean-(m1[0]+m1[1])/2) > 1e-14 || math.Abs(es.Moment2-(m2[0]+m2[1])/2) > 1e-13 ||
		math.Abs(es.MeanStdErr-math.Abs(m1[0]-m1[1])/2) > 1e-14 {
		t.Errorf("ESD summary %+v; want mean %g ± %g, moment2 %g", es, (m1[0]+m1[1])/2, math.Abs(m1[0]-m1[1])/2, (m2[0]+m2[1])/2)
	}
	if es.MinNode != slices.Min(e.Nodes) || es.MaxNode != slices.Max(e.Nodes) {
		t.Errorf("node range %g…%g, want %g…%g", es.MinNode, es.MaxNode, slices.Min(e.Nodes), slices.Max(e.Nodes))
	}
	var neg, total, radius float64
	for _, x := range e.Nodes {
		radius = math.Max(radius, math.Abs(x))
	}
	for i, x := range e.Nodes {
		total += e.Weights[i]
		if x < -1e-3*radius {
			neg += e.Weights[i]
		}
	}
	if math.Abs(es.NegativeMass-neg/total) > 1e-15 {
		t.Errorf("negative mass %g, want %g", es.NegativeMass, neg/total)
	}
	// The median of the spectral measure: the smallest node with at least
	// half the weight at or below it.
	idx := make([]int, len(e.Nodes))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return cmpFloat(e.Nodes[a], e.Nodes[b]) })
	var cum, median float64
	for _, i := range idx {
		cum += e.Weights[i] / total
		if cum >= 0.5 {
			median = e.Nodes[i]
			break
		}
	}
	for _, q := range es.Quantiles {
		if q.P == 0.5 && q.Value != median {
			t.Errorf("median %g, want %g", q.Value, median)
		}
	}

	text := inspMust(t, "show", "--db", path, "--run", "alpha", "--step", "10")
	for _, wantStr := range []string{"run alpha, step 10", "fc1.weight", "fc2.weight", "hutch++, 30 probes", "2 probe(s) × 4 Lanczos steps", "warm start",
		num(s.Eigenvalues[0]), num(s.Trace.Blocks[0].Value), num(s.SharpnessRatio)} {
		if !strings.Contains(text, wantStr) {
			t.Errorf("show --step 10 lacks %q:\n%s", wantStr, text)
		}
	}
	if text := inspMust(t, "show", "--db", path, "--run", "alpha", "--step", "20"); !strings.Contains(text, "FAILED: nan: NaN in Hessian-vector product") {
		t.Errorf("failed snapshot shown as:\n%s", text)
	}
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// inspCell parses a CSV cell back: empty is NaN.
func inspCell(t *testing.T, s string) float64 {
	t.Helper()
	if s == "" {
		return math.NaN()
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("cell %q: %v", s, err)
	}
	return v
}

// inspSame reports whether two floats are identical (NaN equals NaN).
func inspSame(a, b float64) bool { return a == b || math.IsNaN(a) && math.IsNaN(b) }

func TestExportCSVMatchesSnapshots(t *testing.T) {
	path, want := inspFixture(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "alpha.csv")
	code, _, errs := inspRun(t, "export", "--db", path, "--run", "alpha", "--format", "csv", "--out", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	read := func(name string) [][]string {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		recs, err := csv.NewReader(f).ReadAll()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return recs
	}
	recs := read("alpha.csv")
	wantHead := []string{"step", "time", "loss", "lr", "optimizer", "sharpness_threshold", "sharpness_ratio",
		"lambda_1", "lambda_2", "lambda_3", "residual_1", "residual_2", "residual_3",
		"lambda_min", "residual_min", "preconditioned_lambda1", "preconditioned_residual",
		"trace", "trace_stderr", "trace_probes", "trace_method", "hvps", "seconds", "warm", "failure", "failure_detail",
		"kind", "reason", "precision", "peak_bytes"}
	if !slices.Equal(recs[0], wantHead) {
		t.Fatalf("header %q, want %q", recs[0], wantHead)
	}
	if len(recs) != 1+len(want["alpha"]) {
		t.Fatalf("%d rows, want %d", len(recs)-1, len(want["alpha"]))
	}
	for i, s := range want["alpha"] {
		row := map[string]string{}
		for j, h := range recs[0] {
			row[h] = recs[i+1][j]
		}
		f := func(col string, x float64) {
			if g := inspCell(t, row[col]); !inspSame(g, x) {
				t.Errorf("step %d %s = %q, want %v", s.Step, col, row[col], x)
			}
		}
		if row["step"] != strconv.FormatInt(s.Step, 10) || row["optimizer"] != string(s.Optimizer) || row["hvps"] != strconv.Itoa(s.HVPs) ||
			row["warm"] != strconv.FormatBool(s.Warm) || row["failure"] != string(s.Failure) || row["failure_detail"] != s.Detail {
			t.Errorf("step %d: row %v", s.Step, row)
		}
		if tm, err := time.Parse(time.RFC3339Nano, row["time"]); err != nil || !tm.Equal(s.Time) {
			t.Errorf("step %d time %q, want %v", s.Step, row["time"], s.Time)
		}
		f("loss", s.Loss)
		f("lr", s.LearningRate)
		f("seconds", s.Seconds)
		for k := range 3 {
			l, r := math.NaN(), math.NaN()
			if k < len(s.Eigenvalues) {
				l, r = s.Eigenvalues[k], s.Residuals[k]
			}
			f("lambda_"+strconv.Itoa(k+1), l)
			f("residual_"+strconv.Itoa(k+1), r)
		}
		if s.Failed() {
			for _, c := range []string{"sharpness_threshold", "sharpness_ratio", "trace", "trace_stderr", "trace_probes", "trace_method"} {
				if c != "sharpness_threshold" && row[c] != "" {
					t.Errorf("failed step %d: %s = %q, want empty", s.Step, c, row[c])
				}
			}
			continue
		}
		f("sharpness_threshold", s.SharpnessThreshold)
		f("sharpness_ratio", s.SharpnessRatio)
		f("trace", s.Trace.Value)
		f("trace_stderr", s.Trace.StdErr)
		if row["trace_probes"] != strconv.Itoa(s.Trace.Probes) || row["trace_method"] != s.Trace.Method {
			t.Errorf("step %d trace probes/method %q %q", s.Step, row["trace_probes"], row["trace_method"])
		}
	}

	// Long-format ESD and block files, row for row.
	esd := read("alpha.esd.csv")
	blocks := read("alpha.blocks.csv")
	if !slices.Equal(esd[0], []string{"step", "probe", "node", "weight"}) || !slices.Equal(blocks[0], []string{"step", "block", "value", "stderr"}) {
		t.Fatalf("side-file headers %q, %q", esd[0], blocks[0])
	}
	var wantESD, wantBlocks [][]string
	for _, s := range want["alpha"] {
		step := strconv.FormatInt(s.Step, 10)
		if s.ESD != nil {
			for i, x := range s.ESD.Nodes {
				wantESD = append(wantESD, []string{step, strconv.Itoa(i / s.ESD.Steps), strconv.FormatFloat(x, 'g', -1, 64), strconv.FormatFloat(s.ESD.Weights[i], 'g', -1, 64)})
			}
		}
		if s.Trace != nil {
			for _, b := range s.Trace.Blocks {
				wantBlocks = append(wantBlocks, []string{step, b.Name, strconv.FormatFloat(b.Value, 'g', -1, 64), strconv.FormatFloat(b.StdErr, 'g', -1, 64)})
			}
		}
	}
	if diff := cmp.Diff(wantESD, esd[1:]); diff != "" {
		t.Errorf("alpha.esd.csv (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantBlocks, blocks[1:]); diff != "" {
		t.Errorf("alpha.blocks.csv (-want +got):\n%s", diff)
	}
	if !strings.Contains(errs, "alpha.esd.csv") || !strings.Contains(errs, "alpha.blocks.csv") {
		t.Errorf("export did not name the files it wrote: %q", errs)
	}

	// To standard output: the same main table, and a note on the side files.
	code, stdout, errs := inspRun(t, "export", "--db", path, "--run", "alpha")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	main, _ := os.ReadFile(out)
	if stdout != string(main) || !strings.Contains(errs, "only with --out") {
		t.Errorf("export to stdout differs from --out, or lacks the side-file note (%q)", errs)
	}
	// beta: NaN residual as an empty cell.
	recs, err := csv.NewReader(strings.NewReader(inspMust(t, "export", "--db", path, "--run", "beta"))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if recs[0][9] != "residual_1" || recs[1][9] != "" || recs[1][10] != "0.0001" {
		t.Errorf("beta residual cells %q %q (%q)", recs[1][9], recs[1][10], recs[0])
	}
}

func TestExportJSON(t *testing.T) {
	path, want := inspFixture(t)
	type js struct {
		Step         int64       `json:"step"`
		Loss         *float64    `json:"loss"`
		Eigenvalues  []float64   `json:"eigenvalues"`
		Eigenvectors [][]float64 `json:"eigenvectors"`
		Failure      string      `json:"failure"`
		ESD          *snapshot.ESD
	}
	check := func(what string, got []js, vectors bool) {
		t.Helper()
		if len(got) != len(want["alpha"]) {
			t.Fatalf("%s: %d snapshots, want %d", what, len(got), len(want["alpha"]))
		}
		for i, s := range want["alpha"] {
			g := got[i]
			if g.Step != s.Step || g.Failure != string(s.Failure) || !slices.Equal(g.Eigenvalues, s.Eigenvalues) {
				t.Errorf("%s: snapshot %d = %+v", what, i, g)
			}
			if math.IsNaN(s.Loss) != (g.Loss == nil) || g.Loss != nil && *g.Loss != s.Loss {
				t.Errorf("%s: step %d loss %v, want %v (NaN as null)", what, s.Step, g.Loss, s.Loss)
			}
			if s.ESD != nil && (g.ESD == nil || !slices.Equal(g.ESD.Nodes, s.ESD.Nodes)) {
				t.Errorf("%s: step %d ESD missing or different", what, s.Step)
			}
			if vectors != (g.Eigenvectors != nil) && s.Eigenvectors != nil {
				t.Errorf("%s: step %d eigenvectors present = %v, want %v", what, s.Step, g.Eigenvectors != nil, vectors)
			}
		}
	}
	var arr []js
	if err := json.Unmarshal([]byte(inspMust(t, "export", "--db", path, "--run", "alpha", "--format", "json")), &arr); err != nil {
		t.Fatal(err)
	}
	check("json", arr, false)
	var lines []js
	for _, l := range strings.Split(strings.TrimSpace(inspMust(t, "export", "--db", path, "--run", "alpha", "--format", "jsonl", "--vectors")), "\n") {
		var s js
		if err := json.Unmarshal([]byte(l), &s); err != nil {
			t.Fatalf("jsonl line %q: %v", l, err)
		}
		lines = append(lines, s)
	}
	check("jsonl", lines, true)
	// --from/--to select steps.
	arr = nil
	if err := json.Unmarshal([]byte(inspMust(t, "export", "--db", path, "--run", "alpha", "--format", "json", "--from", "10", "--to", "20")), &arr); err != nil {
		t.Fatal(err)
	}
	if len(arr) != 2 || arr[0].Step != 10 || arr[1].Step != 20 {
		t.Errorf("--from 10 --to 20 exported %d snapshots", len(arr))
	}
}

func TestPlotEveryKind(t *testing.T) {
	path, _ := inspFixture(t)
	dir := t.TempDir()
	cases := [][]string{
		{"--run", "alpha", "--kind", "eigen"},
		{"--run", "alpha,beta", "--kind", "eigen"},
		{"--run", "alpha", "--kind", "trace"},
		{"--run", "alpha", "--kind", "esd"},
		{"--run", "alpha", "--kind", "esd", "--steps", "10,30"},
		{"--run", "alpha", "--kind", "esd-heatmap"},
		{"--run", "alpha", "--kind", "blocks", "--top", "2"},
	}
	for i, c := range cases {
		out := filepath.Join(dir, strconv.Itoa(i)+".png")
		args := append([]string{"plot", "--db", path, "--out", out, "--width", "640", "--height", "420"}, c...)
		stdout := inspMust(t, args...)
		if !strings.HasPrefix(stdout, "wrote "+out) {
			t.Errorf("%v: printed %q", c, stdout)
		}
		f, err := os.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatalf("%v: %s is not a PNG: %v", c, out, err)
		}
		if got := img.Bounds().Size(); got != (image.Point{X: 640, Y: 420}) {
			t.Errorf("%v: %v, want 640×420", c, got)
		}
	}
}

func TestInspectErrors(t *testing.T) {
	path, _ := inspFixture(t)
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "corrupt.db")
	junk := bytes.Repeat([]byte("not a bbolt page "), 1000)
	if err := os.WriteFile(corrupt, junk, 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.db")
	png := filepath.Join(dir, "x.png")
	for _, c := range []struct {
		args []string
		code int
		want []string // substrings of stderr
	}{
		{[]string{"runs", "--db", missing}, 1, []string{missing, "does not exist"}},
		{[]string{"show", "--db", missing, "--run", "a"}, 1, []string{"does not exist"}},
		{[]string{"plot", "--db", missing, "--run", "a", "--out", png}, 1, []string{"does not exist"}},
		{[]string{"serve", "--db", missing}, 1, []string{"does not exist"}},
		{[]string{"runs", "--db", corrupt}, 1, []string{corrupt, "corrupt"}},
		{[]string{"export", "--db", corrupt, "--run", "a"}, 1, []string{"corrupt"}},
		{[]string{"show", "--db", path, "--run", "gamma"}, 1, []string{`unknown run "gamma"`, "known runs: alpha, beta"}},
		{[]string{"export", "--db", path, "--run", "gamma"}, 1, []string{"known runs: alpha, beta"}},
		{[]string{"plot", "--db", path, "--run", "alpha,gamma", "--out", png}, 1, []string{"known runs: alpha, beta"}},
		{[]string{"show", "--db", path, "--run", "alpha", "--step", "7"}, 1, []string{"no snapshot at step 7", "its steps: 0, 10, 20, 30"}},
		{[]string{"plot", "--db", path, "--run", "alpha", "--kind", "esd", "--steps", "20", "--out", png}, 1, []string{"no ESD at step 20", "0, 10, 30"}},
		{[]string{"plot", "--db", path, "--run", "beta", "--kind", "trace", "--out", png}, 1, []string{"nothing to draw"}},
		// Bad flags: exit 2.
		{[]string{"runs", "--db", path, "--bogus"}, 2, []string{"flag provided but not defined: -bogus"}},
		{[]string{"show", "--db", path}, 2, []string{"2 runs", "--run", "alpha, beta"}},
		{[]string{"show", "--db", path, "--run", "alpha", "--from", "-3"}, 2, []string{"--from"}},
		{[]string{"export", "--db", path, "--run", "alpha", "--format", "xml"}, 2, []string{`--format "xml"`}},
		{[]string{"plot", "--db", path, "--run", "alpha", "--kind", "pie", "--out", png}, 2, []string{`--kind "pie"`, "esd-heatmap"}},
		{[]string{"plot", "--db", path, "--run", "alpha"}, 2, []string{"--out is required"}},
		{[]string{"plot", "--db", path, "--run", "alpha", "--out", png, "--width", "10"}, 2, []string{"--width"}},
		{[]string{"plot", "--db", path, "--run", "alpha", "--out", png, "--steps", "1,x", "--kind", "esd"}, 2, []string{"--steps"}},
		{[]string{"plot", "--db", path, "--run", "alpha", "--out", png, "--steps", "10"}, 2, []string{"--kind esd only"}},
		{[]string{"serve", "--db", path, "--listen", ""}, 2, []string{"--listen"}},
		{[]string{"runs", "extra"}, 2, []string{`unexpected argument "extra"`}},
	} {
		code, stdout, stderr := inspRun(t, c.args...)
		if code != c.code {
			t.Errorf("%v: exit %d, want %d (stderr %q)", c.args, code, c.code, stderr)
		}
		for _, w := range c.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("%v: stderr %q lacks %q", c.args, stderr, w)
			}
		}
		if stdout != "" {
			t.Errorf("%v: printed %q on stdout", c.args, stdout)
		}
		// Run-time errors are one line; flag errors add the usage text.
		if c.code == 1 && strings.Count(stderr, "\n") != 1 {
			t.Errorf("%v: error is %d lines: %q", c.args, strings.Count(stderr, "\n"), stderr)
		}
	}
	if _, err := os.Stat(png); err == nil {
		t.Error("a failed plot left an image behind")
	}
}

func TestInspectHelp(t *testing.T) {
	for _, name := range []string{"runs", "show", "export", "plot", "serve"} {
		code, _, stderr := inspRun(t, name, "--help")
		if code != 0 {
			t.Errorf("%s --help: exit %d", name, code)
		}
		if !strings.HasPrefix(stderr, "hessmon "+name+": ") || !strings.Contains(stderr, "Example:\n  hessmon "+name+" ") || !strings.Contains(stderr, "-db") {
			t.Errorf("%s --help lacks a description, flags or an example:\n%s", name, stderr)
		}
	}
	if _, _, stderr := inspRun(t, "export", "--help"); !strings.Contains(stderr, "F.esd.csv (step, probe, node, weight") {
		t.Errorf("export --help does not document the ESD file:\n%s", stderr)
	}
}

// A trainer holds the store's exclusive lock: inspection must fail with the
// locked error that names the live API, after the store's ~1 s lock
// timeout, instead of hanging.
func TestLockedStore(t *testing.T) {
	path, _ := inspFixture(t)
	w, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for _, cmd := range [][]string{
		{"runs", "--db", path},
		{"show", "--db", path, "--run", "alpha"},
		{"plot", "--db", path, "--run", "alpha", "--out", filepath.Join(t.TempDir(), "x.png")},
		{"serve", "--db", path, "--listen", "127.0.0.1:0"},
	} {
		type result struct {
			code   int
			stderr string
		}
		done := make(chan result, 1)
		start := time.Now()
		go func() {
			var out, errb bytes.Buffer
			done <- result{run(context.Background(), cmd, &out, &errb), errb.String()}
		}()
		select {
		case r := <-done:
			t.Logf("%s: locked error after %v", cmd[0], time.Since(start).Round(time.Millisecond))
			if r.code != 1 || !strings.Contains(r.stderr, "locked") || !strings.Contains(r.stderr, "curl http://127.0.0.1:9464/api/runs") {
				t.Errorf("%s: exit %d, stderr %q; want the locked error naming the live API", cmd[0], r.code, r.stderr)
			}
			if strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("%s: error is not one line: %q", cmd[0], r.stderr)
			}
		case <-time.After(time.Minute): // a hang, not a slow machine
			t.Fatalf("%s: still waiting for the lock after a minute", cmd[0])
		}
	}
}
