package main

import (
	"flag"

	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

// float32Tol is analyze's default eigen tolerance in float32: a float32
// HVP is exact to about 2·10⁻⁷‖H‖, so residuals stall near there and the
// float64 default (10⁻⁸) would spend the whole --max-hvps budget.
const float32Tol = 1e-6

// precisionFlags reads --precision for analyze: with float32 and no
// explicit --tol, *tol becomes float32Tol. float32 is not offered over MPI.
func precisionFlags(fs *flag.FlagSet, precision string, tol *float64, distributed bool) (snapshot.Precision, error) {
	prec, err := hessian.ParsePrecision(precision)
	if err != nil {
		return "", usageErr("--precision: %v", err)
	}
	if prec != snapshot.Float32 {
		return prec, nil
	}
	if distributed {
		return "", usageErr("--precision float32 is not supported with --distributed; use --precision float64")
	}
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == "tol" })
	if !set {
		*tol = float32Tol
	}
	return prec, nil
}

// probePrecision reads train's --precision and refuses float32 up front
// for a model it does not cover, rather than failing every probe.
func probePrecision(precision string, net *trainer.Network) (snapshot.Precision, error) {
	prec, err := hessian.ParsePrecision(precision)
	if err != nil {
		return "", usageErr("--precision: %v", err)
	}
	if prec == snapshot.Float32 {
		if err := trainer.SupportsFloat32(net); err != nil {
			return "", usageErr("--precision float32: %v", err)
		}
	}
	return prec, nil
}
