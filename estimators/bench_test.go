package estimators

import (
	"context"
	"testing"
)

func BenchmarkTopEigenCold(b *testing.B) {
	tm := newTestMatrix(hessianSpectrum(400, 3), 1)
	var hvps int
	for i := 0; b.Loop(); i++ {
		res, _, err := TopEigen(context.Background(), tm.op, EigenOptions{K: 5, Seed: uint64(i)}, nil)
		if err != nil {
			b.Fatal(err)
		}
		hvps += res.HVPs
	}
	b.ReportMetric(float64(hvps)/float64(b.N), "hvps/op")
}

func BenchmarkTopEigenWarm(b *testing.B) {
	tm := newTestMatrix(hessianSpectrum(400, 3), 1)
	_, warm, err := TopEigen(context.Background(), tm.op, EigenOptions{K: 5}, nil)
	if err != nil {
		b.Fatal(err)
	}
	p, _ := tm.perturbed(1e-3, 5)
	var hvps int
	for b.Loop() {
		res, _, err := TopEigen(context.Background(), p, EigenOptions{K: 5}, warm)
		if err != nil {
			b.Fatal(err)
		}
		hvps += res.HVPs
	}
	b.ReportMetric(float64(hvps)/float64(b.N), "hvps/op")
}

func BenchmarkPowerIteration(b *testing.B) {
	tm := newTestMatrix(hessianSpectrum(400, 3), 1)
	var hvps int
	for i := 0; b.Loop(); i++ {
		res, err := PowerIteration(context.Background(), tm.op, PowerOptions{K: 5, Seed: uint64(i)})
		if err != nil {
			b.Fatal(err)
		}
		hvps += res.HVPs
	}
	b.ReportMetric(float64(hvps)/float64(b.N), "hvps/op")
}

func BenchmarkTrace(b *testing.B) {
	tm := newTestMatrix(hessianSpectrum(400, 3), 1)
	ev, _, err := TopEigen(context.Background(), tm.op, EigenOptions{K: 10, KeepVectors: true}, nil)
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		opt  TraceOptions
	}{
		{"hutchinson", TraceOptions{RelTol: 0.01, MaxHVPs: 1000}},
		{"hutch++", TraceOptions{RelTol: 0.01, MaxHVPs: 1000, Deflate: ev.Vectors}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var hvps int
			for i := 0; b.Loop(); i++ {
				opt := bc.opt
				opt.Seed = uint64(i)
				res, _, err := Trace(context.Background(), tm.op, opt, nil)
				if err != nil {
					b.Fatal(err)
				}
				hvps += res.HVPs
			}
			b.ReportMetric(float64(hvps)/float64(b.N), "hvps/op")
		})
	}
}

func BenchmarkESD(b *testing.B) {
	tm := newTestMatrix(hessianSpectrum(400, 3), 1)
	var hvps int
	for b.Loop() {
		res, _, err := ESD(context.Background(), tm.op, ESDOptions{Probes: 1, Steps: 100}, nil)
		if err != nil {
			b.Fatal(err)
		}
		hvps += res.HVPs
	}
	b.ReportMetric(float64(hvps)/float64(b.N), "hvps/op")
}
