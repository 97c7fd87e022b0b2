//go:build !openblas

package trainer

// BLAS names the BLAS implementation this binary uses: gonum's pure-Go one
// unless built with -tags openblas.
const BLAS = "gonum"
