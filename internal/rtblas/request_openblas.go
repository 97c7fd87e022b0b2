//go:build openblas

package rtblas

// defaultRequest: the openblas build tag is kept as an alias of
// HESSMON_BLAS=openblas (it no longer links OpenBLAS with cgo).
const defaultRequest = "openblas"
