package bench

import (
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/hessmon/hessmon/hvp"
)

func TestParseHWM(t *testing.T) {
	got, err := parseHWM([]byte("Name:\thessmon\nVmPeak:\t  999 kB\nVmHWM:\t   12345 kB\nVmRSS:\t 100 kB\n"))
	if err != nil || got != 12345*1024 {
		t.Fatalf("parseHWM = %d, %v; want %d", got, err, 12345*1024)
	}
	if _, err := parseHWM([]byte("VmRSS: 1 kB\n")); err == nil {
		t.Error("no VmHWM line: want an error")
	}
	if _, err := parseHWM([]byte("VmHWM: 12 MB\n")); err == nil {
		t.Error("unit MB: want an error")
	}
	if rss, err := PeakRSS(); err != nil || rss <= 0 {
		t.Errorf("PeakRSS = %d, %v", rss, err)
	}
}

// TestTimed: the wrapper passes products through unchanged and counts them.
func TestTimed(t *testing.T) {
	d := hvp.NewDense(mat.NewSymDense(3, []float64{1, 0, 0, 0, 2, 0, 0, 0, 3}))
	tm := &Timed{Op: d}
	dst := make([]float64, 3)
	for range 4 {
		if err := tm.Apply(dst, []float64{1, 1, 1}); err != nil {
			t.Fatal(err)
		}
	}
	if dst[0] != 1 || dst[1] != 2 || dst[2] != 3 || tm.Count != 4 || tm.Dim() != 3 {
		t.Errorf("Apply gave %v after %d products (dim %d)", dst, tm.Count, tm.Dim())
	}
	if tm.Blocks() != nil || tm.Loss() != 0 {
		t.Error("an operator without Blocks or Loss: want nil and 0")
	}
}
