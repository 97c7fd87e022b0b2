//go:build !openblas

package trainer

// BLAS names the BLAS implementation this binary uses: gonum's pure-Go one
// unless built with -tags openblas.
const BLAS = "gonum"

// serialGemmBelow is the size m·n·k under which gemm keeps a product on the
// calling goroutine. On the 2-core development machine gonum's parallel
// Dgemm made the 784-128-128-10 MLP's gradient and HVP 8–15% slower at
// batch 64 and 128 (hessmon bench hvp); serial products also keep an
// asynchronous Hessian probe on one core, off the training loop's.
const serialGemmBelow = 1 << 24
