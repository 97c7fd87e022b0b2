//go:build !openblas

package rtblas

// defaultRequest applies when HESSMON_BLAS is unset.
const defaultRequest = "auto"
