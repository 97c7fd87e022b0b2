package trainer

import (
	"github.com/hessmon/hessmon/internal/rtblas"
)

// BLASInfo says which BLAS serves the process's gonum blas64 calls, and
// from which file it was loaded.
type BLASInfo = rtblas.Info

// BLAS returns the process's BLAS, choosing it on the first call: OpenBLAS
// loaded at run time when the machine has it (no cgo), else gonum's pure-Go
// BLAS; HESSMON_BLAS=auto|openblas|gonum|<path> overrides. NewNetwork calls
// it, so the choice is made before the first GEMM. The choice is
// process-wide because gonum's blas64.Use is.
func BLAS() BLASInfo { return rtblas.Init() }

// serialGemmBelow is the size m·n·k under which gemm keeps a product on the
// calling goroutine when gonum's pure-Go BLAS is in use. On the 2-core
// development machine gonum's parallel Dgemm made the 784-128-128-10 MLP's
// gradient and HVP 8–15% slower at batch 64 and 128 (hessmon bench hvp);
// serial products also keep an asynchronous Hessian probe on one core, off
// the training loop's. A loaded BLAS gets every product in one call: it
// manages its own threads.
const serialGemmBelow = 1 << 24
