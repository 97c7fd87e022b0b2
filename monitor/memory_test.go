package monitor

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"runtime"
	"strings"
	"testing"

	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/snapshot"
)

// diagOp is H = diag(d): its products allocate nothing, so what a probe
// allocates is its estimators'.
type diagOp []float64

func (d diagOp) Dim() int { return len(d) }
func (d diagOp) Apply(dst, v []float64) error {
	for i, x := range v {
		dst[i] = d[i] * x
	}
	return nil
}

// defaultPeakVectors is the memory model of a default full probe,
// written out: the ESD's kept basis, the top-5 solve, the trace deflated
// by the eigen solve's orthonormal basis, and the warm eigenvectors.
func defaultPeakVectors(n, warm int) int {
	k := make([][]float64, 5)
	return warm + estimators.ESDOptions{Probes: 1, Steps: 30, KeepBasis: true}.Vectors() +
		estimators.EigenOptions{K: 5, KeepVectors: true, KeepProducts: true}.Vectors() +
		estimators.TraceOptions{Deflate: k, DeflateProducts: k, DeflateOrthonormal: true}.Vectors(n)
}

// TestPeakBytesDefaultProbe: a default probe records the memory model's
// peak, cold and warm, and allocates no more than it in n-vectors (garbage
// included, which bounds what it holds at once).
func TestPeakBytesDefaultProbe(t *testing.T) {
	const n = 100_000
	d := make(diagOp, n)
	for i := range d {
		d[i] = 1 / float64(1+i%997)
	}
	d[0], d[1], d[2] = 40, 30, 20
	var warm *estimators.Warm
	for _, name := range []string{"cold", "warm"} {
		var s snapshot.Snapshot
		var a, b runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&a)
		next, cost, err := Analyze(context.Background(), &s, d, Config{}, Inputs{Warm: warm})
		runtime.ReadMemStats(&b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		wv := 0
		if warm != nil {
			wv = len(warm.Eigen.Vectors)
		}
		want := int64(defaultPeakVectors(n, wv)) * 8 * n
		allocated := float64(b.TotalAlloc-a.TotalAlloc) / (8 * n)
		t.Logf("%s: %d HVPs, peak %d n-vectors, %.1f allocated, detail %q", name, cost.Total(), s.PeakBytes/(8*n), allocated, s.Detail)
		if s.PeakBytes != want {
			t.Errorf("%s: PeakBytes %d, the model says %d", name, s.PeakBytes, want)
		}
		if allocated > float64(s.PeakBytes/(8*n))+2 {
			t.Errorf("%s: allocated %.1f n-vectors, over the recorded peak %d", name, allocated, s.PeakBytes/(8*n))
		}
		if s.Detail != "" || s.ESD == nil || s.ESD.Steps != 30 {
			t.Errorf("%s: a default probe shrank: %q", name, s.Detail)
		}
		warm = next
	}
}

// TestMaxProbeBytesShrinks: a probe over its memory limit keeps within it
// by a shorter, unshared ESD, and below the shortest full probe's need
// runs light; the estimates it keeps still match the dense truth.
func TestMaxProbeBytesShrinks(t *testing.T) {
	const n = 200
	lambda := testSpectrum(n)
	op := hvp.NewDense(spectrumMatrix(lambda, 4))
	top, bottom := lambda[0], math.Inf(1)
	for _, l := range lambda {
		bottom = min(bottom, l)
	}
	full := int64(defaultPeakVectors(n, 0)) * 8 * n
	lightNeed := int64(estimators.ExtremesOptions{}.Vectors()) * 8 * n
	need := func(shared bool, steps int) int64 {
		return int64(fullVectors(Config{}.withDefaults(), n, Inputs{}, shared, steps)) * 8 * n
	}
	shared12, floor := need(true, 12), need(false, minESDSteps)
	if !(lightNeed < floor && floor < shared12 && shared12 < full) {
		t.Fatalf("needs: light %d, unshared floor %d, shared at 12 steps %d, default %d", lightNeed, floor, shared12, full)
	}
	for _, c := range []struct {
		name       string
		limit      int64
		light      bool
		maxSteps   int
		minSteps   int
		peakWithin bool
	}{
		{"no shrink", full, false, 30, 30, true},
		{"29 steps", full - 8*n, false, 29, 29, true},
		{"12 steps", shared12, false, 12, 12, true},
		{"unshared", shared12 - 2*8*n*(12-minESDSteps) - 8*n, false, 30, minESDSteps, true},
		{"light", (lightNeed + floor) / 2, true, 0, 0, true},
		{"below light", lightNeed - 1, true, 0, 0, false},
	} {
		var s snapshot.Snapshot
		_, _, err := Analyze(context.Background(), &s, op, Config{MaxProbeBytes: c.limit, MaxHVPs: 1000}, Inputs{})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		t.Logf("%s: limit %d, peak %d, kind %q, detail %q", c.name, c.limit, s.PeakBytes, s.Kind, s.Detail)
		if c.peakWithin && s.PeakBytes > c.limit || s.PeakBytes <= 0 {
			t.Errorf("%s: peak %d over the limit %d", c.name, s.PeakBytes, c.limit)
		}
		if got := s.Kind == snapshot.KindLight; got != c.light {
			t.Errorf("%s: light %v, want %v", c.name, got, c.light)
		}
		if (c.name == "no shrink") != (s.Detail == "") || (s.Detail != "" && !strings.HasPrefix(s.Detail, "memory: ")) {
			t.Errorf("%s: detail %q", c.name, s.Detail)
		}
		if !c.light {
			if s.ESD == nil || s.ESD.Steps > c.maxSteps || s.ESD.Steps < c.minSteps {
				t.Errorf("%s: ESD %+v, want %d..%d steps", c.name, s.ESD, c.minSteps, c.maxSteps)
			}
			if s.Trace == nil {
				t.Errorf("%s: no trace", c.name)
			}
		}
		if math.Abs(s.Eigenvalues[0]-top) > 1e-2*top || s.LambdaMin == nil || math.Abs(s.LambdaMin.Value-bottom) > 1e-2*top {
			t.Errorf("%s: λ1 %v, λmin %+v; truth %v, %v", c.name, s.Eigenvalues[0], s.LambdaMin, top, bottom)
		}
	}
}

// TestMaxProbeBytesLogsOnce: the monitor keeps the memory note in the
// snapshot and logs the first shrunk probe only.
func TestMaxProbeBytesLogsOnce(t *testing.T) {
	const n = 120
	op := hvp.NewDense(spectrumMatrix(testSpectrum(n), 5))
	var logs bytes.Buffer
	m, err := New("r", Config{MaxProbeBytes: 8 * n * 20, MaxHVPs: 1000}, WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	for step := int64(1); step <= 3; step++ {
		s, err := m.Probe(context.Background(), step*50, op, StepInfo{})
		if err != nil || s.Failed() {
			t.Fatalf("step %d: %v %q", step, err, s.Failure)
		}
		if !strings.Contains(s.Detail, "memory: ") || s.Kind != snapshot.KindLight {
			t.Errorf("step %d: kind %q, detail %q", step, s.Kind, s.Detail)
		}
	}
	if c := strings.Count(logs.String(), "memory limit"); c != 1 {
		t.Errorf("logged %d times:\n%s", c, logs.String())
	}
}
