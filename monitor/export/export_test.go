package export

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hessmon/hessmon/snapshot"
)

// A quadrature whose measure is known: two probes, each the discrete
// measure ¼δ(−2) + ¼δ(0) + ½δ(4) (second probe with a tiny shift, so the
// Monte Carlo errors are non-zero but the moments are still by hand). As
// stored, the weights of all probes together sum to 1.
func knownESD() *snapshot.ESD {
	return &snapshot.ESD{
		Nodes:   []float64{-2, 0, 4, -2.002, 0, 4.002},
		Weights: []float64{0.125, 0.125, 0.25, 0.125, 0.125, 0.25},
		Probes:  2, Steps: 3, Sigma2: 1e-5,
	}
}

func TestSummarizeESDMomentsAndMass(t *testing.T) {
	e := knownESD()
	s := SummarizeESD(e)
	// Per probe: mean Σ wᵢxᵢ, second moment Σ wᵢxᵢ².
	var m1, m2 [2]float64
	for p := range 2 {
		for i := range 3 {
			x, w := e.Nodes[3*p+i], e.Weights[3*p+i]*float64(e.Probes) // each probe's own measure
			m1[p] += w * x
			m2[p] += w * x * x
		}
	}
	if want := (m1[0] + m1[1]) / 2; math.Abs(float64(s.Mean)-want) > 1e-12 {
		t.Errorf("mean %v, want %v", s.Mean, want)
	}
	if want := (m2[0] + m2[1]) / 2; math.Abs(float64(s.Moment2)-want) > 1e-12 {
		t.Errorf("second moment %v, want %v", s.Moment2, want)
	}
	// Two probes: the standard error of the mean is |a−b|/2.
	if want := math.Abs(m1[0]-m1[1]) / 2; math.Abs(float64(s.MeanStdErr)-want) > 1e-12 {
		t.Errorf("mean stderr %v, want %v", s.MeanStdErr, want)
	}
	if s.MinNode != -2.002 || s.MaxNode != 4.002 {
		t.Errorf("node range [%v, %v]", s.MinNode, s.MaxNode)
	}
	if math.Abs(float64(s.NegativeMass)-0.25) > 1e-15 {
		t.Errorf("negative mass %v, want 0.25 (the nodes at −2)", s.NegativeMass)
	}
	// Quantiles of the pooled measure: the smallest node whose cumulative
	// weight reaches p.
	type nw struct{ x, w float64 }
	var pts []nw
	for i := range e.Nodes {
		pts = append(pts, nw{e.Nodes[i], e.Weights[i]})
	}
	sort.Slice(pts, func(i, j int) bool { return pts[i].x < pts[j].x })
	if len(s.Quantiles) != len(Quantiles()) {
		t.Fatalf("%d quantiles", len(s.Quantiles))
	}
	for _, q := range s.Quantiles {
		var cum float64
		want := math.NaN()
		for _, p := range pts {
			cum += p.w
			if cum >= q.P-1e-12 {
				want = p.x
				break
			}
		}
		if float64(q.Value) != want {
			t.Errorf("quantile %v = %v, want %v", q.P, q.Value, want)
		}
	}
}

func TestSummarizeESDMalformed(t *testing.T) {
	if SummarizeESD(nil) != nil {
		t.Error("nil ESD gives a summary")
	}
	bad := knownESD()
	bad.Weights = bad.Weights[:5]
	s := SummarizeESD(bad)
	if s.Probes != 2 || !math.IsNaN(float64(s.Mean)) || !math.IsNaN(float64(s.NegativeMass)) || s.Quantiles != nil {
		t.Errorf("malformed ESD: %+v, want the certificate and NaN estimates", s)
	}
}

func testSnapshots() []snapshot.Snapshot {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	return []snapshot.Snapshot{
		{Run: "r", Step: 10, Time: t0, Loss: 0.5, LearningRate: 0.1, Optimizer: snapshot.SGD,
			SharpnessThreshold: 20, SharpnessRatio: 0.5 / 3,
			Eigenvalues: []float64{10.0 / 3, -1e-300}, Residuals: []float64{1e-9, 2e-9},
			Trace: &snapshot.Trace{Value: 42.125, StdErr: 0.5, Probes: 7, Method: "hutch++",
				Blocks: []snapshot.BlockTrace{{Name: "fc1.weight", Value: 40, StdErr: 0.4}, {Name: "fc1.bias", Value: 2.125, StdErr: 0.1}}},
			ESD: knownESD(), HVPs: 60, Seconds: 1.25, Warm: true,
			LambdaMin: &snapshot.Eigenpair{Value: -0.75, Residual: 3e-5}},
		{Run: "r", Step: 20, Time: t0.Add(time.Minute), Loss: math.NaN(), LearningRate: math.Inf(1),
			Eigenvalues: []float64{7}, Residuals: []float64{math.Inf(-1)}, HVPs: 3, Failure: snapshot.FailBudget, Detail: "out of HVPs, with a comma"},
	}
}

func TestWriteCSVRoundTrips(t *testing.T) {
	snaps := testSnapshots()
	var b bytes.Buffer
	if err := WriteCSV(&b, snaps); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&b).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 || !slices.Equal(rows[0], Header(2)) {
		t.Fatalf("rows %d, header %v", len(rows), rows[0])
	}
	col := func(row []string, name string) string { return row[slices.Index(rows[0], name)] }
	parse := func(s string) float64 {
		x, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		return x
	}
	r := rows[1]
	for name, want := range map[string]float64{"lambda_1": 10.0 / 3, "lambda_2": -1e-300, "residual_1": 1e-9, "trace": 42.125,
		"sharpness_ratio": 0.5 / 3, "loss": 0.5, "seconds": 1.25, "lambda_min": -0.75, "residual_min": 3e-5} {
		if got := parse(col(r, name)); got != want {
			t.Errorf("%s = %v, want %v exactly", name, got, want)
		}
	}
	if col(r, "time") != snaps[0].Time.Format(time.RFC3339Nano) || col(r, "optimizer") != "sgd" || col(r, "warm") != "true" || col(r, "trace_method") != "hutch++" {
		t.Errorf("row 1: %v", r)
	}
	f := rows[2]
	if col(r, "preconditioned_lambda1") != "" || col(f, "lambda_min") != "" {
		t.Errorf("missing eigenpairs are not empty cells: %q %q", col(r, "preconditioned_lambda1"), col(f, "lambda_min"))
	}
	if col(f, "loss") != "" || col(f, "lr") != "inf" || col(f, "residual_1") != "-inf" || col(f, "lambda_2") != "" || col(f, "trace") != "" {
		t.Errorf("NaN/Inf/missing cells: %v", f)
	}
	if col(f, "failure") != "budget" || col(f, "failure_detail") != snaps[1].Detail || col(f, "sharpness_threshold") != "" {
		t.Errorf("failed row: %v", f)
	}
}

func TestWriteLongCSVs(t *testing.T) {
	snaps := testSnapshots()
	if !HasESD(snaps) || !HasBlocks(snaps) || HasESD(snaps[1:]) || HasBlocks(snaps[1:]) {
		t.Fatal("HasESD/HasBlocks")
	}
	var b bytes.Buffer
	if err := WriteESDCSV(&b, snaps); err != nil {
		t.Fatal(err)
	}
	rows, _ := csv.NewReader(&b).ReadAll()
	e := snaps[0].ESD
	if len(rows) != 1+len(e.Nodes) {
		t.Fatalf("%d ESD rows for %d nodes", len(rows), len(e.Nodes))
	}
	for i, r := range rows[1:] {
		if r[0] != "10" || r[1] != strconv.Itoa(i/e.Steps) || r[2] != strconv.FormatFloat(e.Nodes[i], 'g', -1, 64) ||
			r[3] != strconv.FormatFloat(e.Weights[i], 'g', -1, 64) {
			t.Errorf("ESD row %d: %v", i, r)
		}
	}
	b.Reset()
	if err := WriteBlocksCSV(&b, snaps); err != nil {
		t.Fatal(err)
	}
	rows, _ = csv.NewReader(&b).ReadAll()
	if len(rows) != 3 || rows[1][1] != "fc1.weight" || rows[2][2] != "2.125" || rows[2][3] != "0.1" {
		t.Errorf("block rows %v", rows)
	}
}

func TestWriteJSONLNaNAsNull(t *testing.T) {
	snaps := testSnapshots()
	var b bytes.Buffer
	if err := WriteJSONL(&b, snaps); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(&b)
	sc.Buffer(nil, 1<<20)
	var lines []map[string]any
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 {
		t.Fatalf("%d lines", len(lines))
	}
	if lines[0]["step"] != 10.0 || lines[0]["trace"].(map[string]any)["value"] != 42.125 {
		t.Errorf("line 1: %v", lines[0])
	}
	if v, ok := lines[1]["loss"]; !ok || v != nil {
		t.Errorf("NaN loss encoded as %v, want null", v)
	}
	var arr bytes.Buffer
	if err := WriteJSON(&arr, snaps); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(arr.String(), "[") || strings.Count(arr.String(), `"step"`) != 2 {
		t.Errorf("JSON array: %.80s…", arr.String())
	}
}
