//go:build openblas

package trainer

// #cgo LDFLAGS: -lopenblas
import "C"

import (
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/netlib/blas/netlib"
)

// BLAS names the BLAS implementation this binary uses.
const BLAS = "openblas"

// With -tags openblas every gonum BLAS call in the process (the GEMMs of the
// layers and the estimators' vector operations) goes to OpenBLAS through
// gonum's cgo binding. blas64.Use is process-wide by design; this is the
// only place hessmon sets it.
func init() { blas64.Use(netlib.Implementation{}) }

// serialGemmBelow is 0: OpenBLAS manages its own threads.
const serialGemmBelow = 0
