package trainer

import (
	"math"
	"os"
	"testing"

	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/blas/gonum"

	"github.com/hessmon/hessmon/internal/rtblas"
)

func relErr(got, want []float64) float64 {
	var num, den float64
	for i := range want {
		num += (got[i] - want[i]) * (got[i] - want[i])
		den += want[i] * want[i]
	}
	return math.Sqrt(num / math.Max(den, 1e-300))
}

// TestBLASPathsAgree computes the gradient and several HVPs of every
// standard model (MLP, BN, CNN, ResNet) once with gonum's pure-Go BLAS and
// once with OpenBLAS loaded at run time, and asks for agreement to 1e-12
// relative. It skips when OpenBLAS is not installed, unless HESSMON_BLAS=openblas.
func TestBLASPathsAgree(t *testing.T) {
	var ob *rtblas.Implementation
	for _, name := range []string{"libopenblas.so.0", "libopenblas.so", "libblas.so.3"} {
		impl, info, err := rtblas.Load(name, true)
		if err == nil {
			ob = impl.ForwardAll() // small models too go to the library
			t.Logf("OpenBLAS: %v", info)
			break
		}
		t.Logf("%v", err)
	}
	if ob == nil {
		if os.Getenv(rtblas.EnvVar) == "openblas" {
			t.Fatal("HESSMON_BLAS=openblas but OpenBLAS does not load")
		}
		t.Skip("OpenBLAS not installed")
	}
	BLAS() // make the process's choice first, so the restore below keeps it
	prev := blas64.Implementation()
	defer blas64.Use(prev)

	cases, err := StandardChecks(1)
	if err != nil {
		t.Fatal(err)
	}
	// Add the benchmark MLP at a batch that takes the large-GEMM paths.
	tape, b, _, _ := benchMLP(t, 300)
	cases = append(cases, CheckCase{Name: "mlp-784-128-128-10-b300", Net: tape.Network(), Batch: b, Mode: ModeEval})
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			n := c.Net.Dim()
			vs := make([][]float64, 3)
			for k := range vs {
				vs[k] = make([]float64, n)
				for i := range vs[k] {
					vs[k][i] = math.Sin(float64(i*(k+3)) + 0.5)
				}
			}
			eval := func() ([]float64, [][]float64) {
				tp := c.Net.NewTape()
				g := make([]float64, n)
				if _, err := tp.Grad(g, c.Batch, CrossEntropy{}, c.Mode); err != nil {
					t.Fatal(err)
				}
				hvs := make([][]float64, len(vs))
				for k, v := range vs {
					hvs[k] = make([]float64, n)
					if err := tp.HVP(hvs[k], v); err != nil {
						t.Fatal(err)
					}
				}
				return g, hvs
			}
			blas64.Use(gonum.Implementation{})
			g0, h0 := eval()
			blas64.Use(ob)
			g1, h1 := eval()
			worst := relErr(g1, g0)
			for k := range h0 {
				worst = math.Max(worst, relErr(h1[k], h0[k]))
			}
			t.Logf("%s: params=%d, worst relative difference gonum vs OpenBLAS %.2e", c.Name, n, worst)
			if !(worst <= 1e-12) {
				t.Errorf("gonum and OpenBLAS gradients/HVPs differ by %.3g relative", worst)
			}
		})
	}
}

// TestBLASChoice: the process's choice follows HESSMON_BLAS, and
// HESSMON_BLAS=gonum (the CI fallback run) really runs pure Go.
func TestBLASChoice(t *testing.T) {
	info := BLAS()
	t.Logf("BLAS: %v (request %q)", info, info.Request)
	_, native := blas64.Implementation().(gonum.Implementation)
	switch os.Getenv(rtblas.EnvVar) {
	case "gonum":
		if info.Loaded() || !native {
			t.Errorf("HESSMON_BLAS=gonum but the BLAS is %v", info)
		}
	case "openblas":
		if info.Name != "openblas" || native {
			t.Errorf("HESSMON_BLAS=openblas but the BLAS is %v", info)
		}
	}
	if info.Loaded() == native {
		t.Errorf("Info says loaded=%v but blas64 has %T", info.Loaded(), blas64.Implementation())
	}
}

// TestSGDMatchesPyTorchRule checks the BLAS-vector SGD step against
// PyTorch's rule written out per element (g += wd·p; buf = μ·buf + g with
// buf = g on the first step; p −= η·buf), on a vector long enough for the
// library path.
func TestSGDMatchesPyTorchRule(t *testing.T) {
	for _, o := range []*SGD{{LR: 0.1}, {LR: 0.05, Momentum: 0.9}, {LR: 0.02, Momentum: 0.8, WeightDecay: 1e-3}} {
		n := 5000
		p, ref, buf := make([]float64, n), make([]float64, n), make([]float64, n)
		for i := range p {
			p[i] = math.Sin(float64(i))
			ref[i] = p[i]
		}
		for step := 0; step < 3; step++ {
			g, rg := make([]float64, n), make([]float64, n)
			for i := range g {
				g[i] = math.Cos(float64(i*(step+2))) + 0.1*p[i]
				rg[i] = math.Cos(float64(i*(step+2))) + 0.1*ref[i]
			}
			o.Step(p, g)
			for i := range ref {
				d := rg[i] + o.WeightDecay*ref[i]
				if o.Momentum != 0 {
					if step == 0 {
						buf[i] = d
					} else {
						buf[i] = o.Momentum*buf[i] + d
					}
					d = buf[i]
				}
				ref[i] -= o.LR * d
			}
		}
		if r := relErr(p, ref); !(r <= 1e-14) {
			t.Errorf("%+v: parameters differ from the per-element rule by %.3g relative", *o, r)
		}
	}
}
