package plot

import (
	"bytes"
	"errors"
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gonum.org/v1/plot/plotter"

	"github.com/hessmon/hessmon/snapshot"
)

// spectrumESD is the exact spectral measure of a matrix with eigenvalues
// eig: one "probe" whose nodes are the eigenvalues, each of weight 1/n.
func spectrumESD(eig []float64) *snapshot.ESD {
	w := make([]float64, len(eig))
	for i := range w {
		w[i] = 1 / float64(len(eig))
	}
	return &snapshot.ESD{Nodes: eig, Weights: w, Probes: 1, Steps: len(eig), Sigma2: 1e-5}
}

// testSeries is a run of every kind of data, with a failed snapshot and a
// learning-rate drop in the middle.
func testSeries(label string, scale float64) Series {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var s Series
	s.Label = label
	for i, step := range []int64{0, 25, 50, 75, 100} {
		lr := 0.1
		if step >= 75 {
			lr = 0.05
		}
		l1 := scale * (2 + 0.3*float64(i))
		sn := snapshot.Snapshot{
			Run: label, Step: step, Time: t0.Add(time.Duration(i) * time.Minute),
			Loss: 1 / float64(i+1), LearningRate: lr, Optimizer: "sgd",
			SharpnessThreshold: 2 / lr, SharpnessRatio: l1 * lr / 2,
			Eigenvalues: []float64{l1, 0.7 * l1, 0.2 * l1}, Residuals: []float64{1e-9, 1e-8, 1e-6},
			Trace: &snapshot.Trace{Value: 10 * l1, StdErr: 0.5, Probes: 30, Method: "hutch++", Blocks: []snapshot.BlockTrace{
				{Name: "fc1.weight", Value: 6 * l1, StdErr: 0.3}, {Name: "fc1.bias", Value: 0.1 * l1, StdErr: 0.01},
				{Name: "fc2.weight", Value: 3 * l1, StdErr: 0.2},
			}},
			ESD:  spectrumESD([]float64{-0.05 * l1, 0, 0, 0, 0.01, 0.1 * l1, 0.5 * l1, l1}),
			HVPs: 100, Seconds: 0.5, Warm: i > 0,
			LambdaMin:    &snapshot.Eigenpair{Value: -0.05 * l1, Residual: 1e-4},
			BlockLambda1: []snapshot.BlockValue{{Name: "fc1.weight", Value: 0.8 * l1, Residual: 1e-5}, {Name: "fc2.weight", Value: 0.5 * l1, Residual: 1e-5}},
		}
		if step == 50 {
			sn = snapshot.Snapshot{Run: label, Step: step, Loss: math.NaN(), Failure: "nan", Detail: "NaN in HVP"}
		}
		s.Snapshots = append(s.Snapshots, sn)
	}
	return s
}

func decodePNG(t *testing.T, b []byte) image.Image {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	return img
}

// colours counts the distinct colours of img: a blank or near-blank
// canvas has a handful.
func colours(img image.Image) int {
	seen := map[[4]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bl, a := img.At(x, y).RGBA()
			seen[[4]uint32{r, g, bl, a}] = true
		}
	}
	return len(seen)
}

func TestEveryKindRendersPNG(t *testing.T) {
	for _, series := range [][]Series{
		{testSeries("bn", 1)},
		{testSeries("bn", 1), testSeries("no-bn", 3)},
	} {
		for _, k := range Kinds() {
			f, err := New(k, series, Options{})
			if err != nil {
				t.Fatalf("%s, %d series: %v", k, len(series), err)
			}
			var buf bytes.Buffer
			if err := f.Render(&buf, "png", 640, 400); err != nil {
				t.Fatalf("%s: %v", k, err)
			}
			img := decodePNG(t, buf.Bytes())
			if got := img.Bounds().Size(); got != (image.Point{X: 640, Y: 400}) {
				t.Errorf("%s: image is %v, want 640×400", k, got)
			}
			if n := colours(img); n < 20 {
				t.Errorf("%s, %d series: only %d distinct colours: is the figure empty?", k, len(series), n)
			}
		}
	}
}

func TestSave(t *testing.T) {
	dir := t.TempDir()
	series := []Series{testSeries("a", 1)}
	for _, name := range []string{"e.png", "e.svg", "e.pdf"} {
		path := filepath.Join(dir, name)
		if err := Save(path, KindEigen, series, Options{Width: 500, Height: 300}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if fi, err := os.Stat(path); err != nil || fi.Size() == 0 {
			t.Fatalf("%s: not written (%v)", name, err)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "e.png"))
	if err != nil {
		t.Fatal(err)
	}
	if got := decodePNG(t, b).Bounds().Size(); got != (image.Point{X: 500, Y: 300}) {
		t.Errorf("e.png is %v, want 500×300", got)
	}
	for _, name := range []string{"noext", "e.bmp"} {
		if err := Save(filepath.Join(dir, name), KindEigen, series, Options{}); err == nil {
			t.Errorf("%s: no error for a file without a known format", name)
		}
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			t.Errorf("%s: file left behind after an error", name)
		}
	}
	// A bad size fails without leaving a partial file.
	if err := Save(filepath.Join(dir, "tiny.png"), KindEigen, series, Options{Width: 10, Height: 10}); err == nil {
		t.Error("10×10 pixels: no error")
	}
	if _, err := os.Stat(filepath.Join(dir, "tiny.png")); err == nil {
		t.Error("tiny.png left behind after an error")
	}
}

func TestESDSteps(t *testing.T) {
	s := testSeries("a", 1)
	if _, err := New(KindESD, []Series{s}, Options{Steps: []int64{25, 100}}); err != nil {
		t.Fatal(err)
	}
	// Step 50 failed, step 60 does not exist: both are unknown for an ESD.
	for _, step := range []int64{50, 60} {
		_, err := New(KindESD, []Series{s}, Options{Steps: []int64{0, step}})
		if !errors.Is(err, snapshot.ErrUnknownStep) {
			t.Fatalf("step %d: err = %v, want ErrUnknownStep", step, err)
		}
		if !strings.Contains(err.Error(), "0, 25, 75, 100") {
			t.Errorf("step %d: error %q does not list the steps with an ESD", step, err)
		}
	}
	picked, err := esdSteps(s, nil)
	if err != nil || len(picked) != 2 || picked[0].Step != 0 || picked[1].Step != 100 {
		t.Errorf("default steps = %v (%v), want first and last: 0 and 100", picked, err)
	}
}

func TestNoData(t *testing.T) {
	empty := Series{Label: "x", Snapshots: []snapshot.Snapshot{
		{Run: "x", Step: 0, Loss: 1},
		{Run: "x", Step: 1, Failure: "panic", Eigenvalues: []float64{1}, Trace: &snapshot.Trace{Value: 1}, ESD: spectrumESD([]float64{1, 2})},
	}}
	for _, k := range Kinds() {
		if _, err := New(k, []Series{empty}, Options{}); !errors.Is(err, ErrNoData) {
			t.Errorf("%s: err = %v, want ErrNoData", k, err)
		}
	}
	if _, err := New(KindEigen, nil, Options{}); !errors.Is(err, ErrNoData) {
		t.Errorf("no series: err = %v, want ErrNoData", err)
	}
	if _, err := New("pie", []Series{testSeries("a", 1)}, Options{}); err == nil {
		t.Error("unknown kind: no error")
	}
}

// Non-finite and malformed values must neither panic nor poison a figure.
func TestBadValues(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	s := testSeries("a", 1)
	s.Snapshots = append(s.Snapshots,
		snapshot.Snapshot{Run: "a", Step: 200, Eigenvalues: []float64{nan, inf}, Residuals: []float64{nan},
			SharpnessThreshold: inf, Trace: &snapshot.Trace{Value: nan, StdErr: inf, Blocks: []snapshot.BlockTrace{{Name: "fc1.weight", Value: inf}}},
			ESD: &snapshot.ESD{Nodes: []float64{nan, 1}, Weights: []float64{0.5, 0.5}, Probes: 1, Steps: 2}},
		snapshot.Snapshot{Run: "a", Step: 300, Trace: &snapshot.Trace{Value: 1, StdErr: nan},
			ESD: &snapshot.ESD{Nodes: []float64{1, 2, 3}, Weights: []float64{1}, Probes: 2, Steps: 2}},
	)
	for _, k := range Kinds() {
		f, err := New(k, []Series{s}, Options{})
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		var buf bytes.Buffer
		if err := f.Render(&buf, "png", 300, 200); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
	}
	// Asking for the malformed ESD by step is an unknown step, not a panic.
	if _, err := New(KindESD, []Series{s}, Options{Steps: []int64{300}}); !errors.Is(err, snapshot.ErrUnknownStep) {
		t.Errorf("malformed ESD: err = %v, want ErrUnknownStep", err)
	}
}

// The ESD curve is PyHessian's density_generate: a Gaussian mixture over the
// nodes with variance Sigma2·max(1, range), range = λmax−λmin+0.02,
// normalised on the grid. Checked against the mixture written out here.
func TestESDCurveIsPyHessianDensity(t *testing.T) {
	eig := []float64{-0.5, 0, 0, 0, 0.2, 3, 7.5}
	e := spectrumESD(eig)
	e.Sigma2 = 1e-3
	grid, dens, err := esdCurves([]*snapshot.ESD{e}, 4000)
	if err != nil {
		t.Fatal(err)
	}
	variance := e.Sigma2 * math.Max(1, 7.5-(-0.5)+0.02)
	if lo, hi := grid[0], grid[len(grid)-1]; lo > -0.5-5*math.Sqrt(variance) || hi < 7.5+5*math.Sqrt(variance) {
		t.Fatalf("grid [%g, %g] cuts the outer peaks (σ = %g)", lo, hi, math.Sqrt(variance))
	}
	var maxRel float64
	for i, x := range grid {
		var want float64
		for _, l := range eig {
			want += math.Exp(-(x-l)*(x-l)/(2*variance)) / math.Sqrt(2*math.Pi*variance) / float64(len(eig))
		}
		if want > 1e-3 {
			maxRel = math.Max(maxRel, math.Abs(dens[0][i]-want)/want)
		}
	}
	// The grid holds all the mass, so the Riemann normalisation changes
	// the mixture by the quadrature error only.
	if maxRel > 1e-4 {
		t.Errorf("density differs from the Gaussian mixture by %.2g (relative)", maxRel)
	}
}

func TestCellDensity(t *testing.T) {
	nodes := []float64{-1, 0, 0.05, 4}
	weights := []float64{0.1, 0.5, 0.3, 0.1}
	const variance = 0.01
	edges := []float64{-2, -1.1, -0.9, -0.3, 0, 0.02, 0.1, 1, 3.95, 4.1, 6}
	got := make([]float64, len(edges)-1)
	if err := CellDensity(got, edges, nodes, weights, variance); err != nil {
		t.Fatal(err)
	}
	mixture := func(x float64) float64 {
		var s float64
		for j, t := range nodes {
			s += weights[j] * math.Exp(-(x-t)*(x-t)/(2*variance)) / math.Sqrt(2*math.Pi*variance)
		}
		return s
	}
	var mass float64
	for i := range got {
		// Composite Simpson over the cell with 20000 panels.
		a, b := edges[i], edges[i+1]
		const n = 20000
		h := (b - a) / n
		s := mixture(a) + mixture(b)
		for k := 1; k < n; k++ {
			c := 2.0
			if k%2 == 1 {
				c = 4
			}
			s += c * mixture(a+float64(k)*h)
		}
		want := s * h / 3 / (b - a)
		if math.Abs(got[i]-want) > 1e-9*math.Max(1, want) {
			t.Errorf("cell [%g, %g]: mean density %.12g, Simpson %.12g", a, b, got[i], want)
		}
		mass += got[i] * (b - a)
	}
	if math.Abs(mass-1) > 1e-12 {
		t.Errorf("cells covering ±10σ hold mass %.15g, want 1", mass)
	}
	for _, bad := range []struct {
		dst, edges []float64
		v          float64
	}{
		{make([]float64, 2), []float64{0, 1}, 1},
		{make([]float64, 1), []float64{1, 0}, 1},
		{make([]float64, 1), []float64{0, 1}, 0},
		{make([]float64, 1), []float64{0, 1}, math.NaN()},
	} {
		if err := CellDensity(bad.dst, bad.edges, nodes, weights, bad.v); err == nil {
			t.Errorf("CellDensity(len %d, %v, variance %g): no error", len(bad.dst), bad.edges, bad.v)
		}
	}
}

// Uneven probe steps: each resampled column shows the nearest snapshot.
func TestUniformColumns(t *testing.T) {
	g := &densityGrid{x: []float64{0, 10, 100}, y: []float64{0}, z: [][]float64{{1}, {2}, {3}}}
	u := newUniformColumns(g, 110)
	if lo, hi := u.X(0)-u.dx/2, u.X(u.n-1)+u.dx/2; math.Abs(lo+5) > 1e-9 || math.Abs(hi-145) > 1e-9 {
		t.Fatalf("columns span [%g, %g], want [-5, 145]", lo, hi)
	}
	for c := range u.n {
		x := u.X(c)
		want := 1.0
		switch {
		case x > 55:
			want = 3
		case x > 5:
			want = 2
		}
		if got := u.Z(c, 0); got != want {
			t.Errorf("column at x=%g shows %g, want %g", x, got, want)
		}
	}
}

func TestThresholdName(t *testing.T) {
	for _, c := range []struct {
		sn   snapshot.Snapshot
		want string
	}{
		{snapshot.Snapshot{Optimizer: "sgd", LearningRate: 0.1, SharpnessThreshold: 20}, "2/η"},
		{snapshot.Snapshot{Optimizer: "sgd", LearningRate: 0.05, Beta1: 0.9, SharpnessThreshold: 3.8 / 0.05}, "(2+2β)/η"},
		{snapshot.Snapshot{Optimizer: "adam", LearningRate: 0.001, Beta1: 0.9, SharpnessThreshold: 3.8 / (0.001 * 0.1)}, "(2+2β1)/(η(1−β1))"},
		{snapshot.Snapshot{Optimizer: "sgd", LearningRate: 0.1, SharpnessThreshold: 7}, "sharpness threshold"},
	} {
		if got := thresholdName(c.sn); got != c.want {
			t.Errorf("%+v: %q, want %q", c.sn, got, c.want)
		}
	}
}

func TestParseKind(t *testing.T) {
	for _, k := range Kinds() {
		if got, err := ParseKind(string(k)); err != nil || got != k {
			t.Errorf("ParseKind(%q) = %q, %v", k, got, err)
		}
	}
	if _, err := ParseKind("histogram"); err == nil || !strings.Contains(err.Error(), "esd-heatmap") {
		t.Errorf("ParseKind(histogram): %v, want an error listing the kinds", err)
	}
}

// The threshold line is drawn when it is near the eigenvalues and left out
// (legend only) when it would flatten them.
func TestThresholdScale(t *testing.T) {
	for _, c := range []struct {
		lr      float64
		visible bool
	}{{0.4, true}, {0.001, false}} {
		s := Series{Label: "a"}
		for step, l1 := range []float64{3, 4, 4.8} {
			s.Snapshots = append(s.Snapshots, snapshot.Snapshot{Run: "a", Step: int64(step), Optimizer: "sgd", LearningRate: c.lr,
				SharpnessThreshold: 2 / c.lr, Eigenvalues: []float64{l1}})
		}
		f, err := New(KindEigen, []Series{s}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		p := f.Plots()[0]
		if got := p.Y.Max >= 2/c.lr; got != c.visible {
			t.Errorf("lr %g: y-axis ends at %g, threshold %g visible = %v, want %v", c.lr, p.Y.Max, 2/c.lr, got, c.visible)
		}
	}
}

// TestThinKeepsExtremes: a long series is cut to the limit, keeps its first
// and last points' buckets and every bucket's extremes (a spike survives).
func TestThinKeepsExtremes(t *testing.T) {
	var pts plotter.XYs
	for i := range 10000 {
		pts = append(pts, plotter.XY{X: float64(i), Y: math.Sin(float64(i) / 100)})
	}
	pts[4321].Y = 50 // a spike
	got := thin(pts, 1000)
	if len(got) > 1000 || len(got) < 500 {
		t.Fatalf("%d points", len(got))
	}
	spike := false
	for i, p := range got {
		if i > 0 && p.X <= got[i-1].X {
			t.Fatalf("not in X order at %d", i)
		}
		spike = spike || p.Y == 50
	}
	if !spike {
		t.Error("the spike was thinned away")
	}
	if short := thin(pts[:10], 1000); len(short) != 10 {
		t.Errorf("a short series was thinned to %d", len(short))
	}
}
