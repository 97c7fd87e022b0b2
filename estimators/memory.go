package estimators

// Memory. Every estimator holds its working set in n-vectors (float64
// slices of the operator's dimension n); everything else is O(k²) or
// O(steps²). The functions below give, for options with their defaults
// filled in, the most n-vectors a call allocates, so that a caller with a
// memory limit (monitor.Config.MaxProbeBytes) can shrink the options
// before it runs out: bytes ≈ 8·n·Vectors. Views a call is handed (a
// Start basis, deflation vectors passed as orthonormal) are the caller's
// and not counted again; the operator's own memory (a frozen model copy,
// its tape) is not counted.

// Vectors returns the n-vectors ESD holds: the Lanczos basis (Steps) and
// one product; with KeepBasis every probe's basis and products, and for a
// single probe esdBasisSpare rows of room in each for the eigen solve to
// grow them in place (that room is the eigen solve's basis, see
// EigenOptions.Vectors).
func (o ESDOptions) Vectors() int {
	probes, steps := max(o.Probes, 1), o.Steps
	if steps <= 0 {
		steps = 100
	}
	switch {
	case !o.KeepBasis:
		return steps + 1
	case probes == 1:
		return 2*(steps+esdBasisSpare) + 1
	default:
		return 2*probes*steps + 1
	}
}

// Vectors returns the n-vectors TopEigen allocates: the larger of its two
// paths.
//
//   - Krylov–Schur: the basis, MaxBasis + b, and the block of products b,
//     plus K Ritz vectors, K products with KeepProducts and K copies with
//     KeepVectors, and b warm start vectors.
//   - Subspace refinement (with a Start basis of s directions): the basis
//     and its products, 2·(s + 2K + 10) at most, none of them when the
//     Start is an ESD single-probe basis with room to grow in place; 2·(K+1)
//     Ritz vectors and products, K+1 residual directions, one product
//     scratch and K copies with KeepVectors.
func (o EigenOptions) Vectors() int {
	k := max(o.K, 1)
	b := o.BlockSize
	if b == 0 {
		b = min(k, 3)
	}
	maxBasis := o.MaxBasis
	if maxBasis == 0 {
		maxBasis = max(3*k, k+6*b, 30)
	}
	maxBasis = max(maxBasis, k+2*b)
	keep := 0
	if o.KeepVectors {
		keep = k
	}
	ks := maxBasis + 2*b + k + keep + b
	if o.KeepProducts {
		ks += k
	}
	s := 0
	if o.Start != nil {
		s = len(o.Start.Basis)
	}
	basis := 2 * (max(s+k+10, 4*k, 20) + k)
	if o.Start != nil && o.Start.Orthonormal && s > 0 && inPlaceRoom(o.Start.Basis, o.Start.Products) >= basis/2-s {
		basis = 0
	}
	if s == 0 && k > 1 {
		return ks // no Start: only a single tracked pair refines
	}
	rf := basis + 2*(k+1) + (k + 1) + 1 + keep
	return max(ks, rf)
}

// inPlaceRoom is the number of rows that contiguous rows and their
// products can grow by without reallocating.
func inPlaceRoom(rows, products [][]float64) int {
	n := len(rows[0])
	xc, hc := contiguous(rows, n), contiguous(products, n)
	if xc == nil || hc == nil || n == 0 {
		return 0
	}
	return min(cap(xc), cap(hc))/n - len(rows)
}

// Vectors returns the n-vectors Trace allocates for an operator of
// dimension n: three chunk buffers (probes, deflated probes, products) of
// at most max(MinProbes, 16) rows and 2²³ values each, and the copies of a
// deflation basis that is not passed as orthonormal with products (two per
// vector), or 2·SketchRank for a sketch.
func (o TraceOptions) Vectors(n int) int {
	deflated := len(o.Deflate) > 0 || o.SketchRank > 0
	if !deflated {
		return 2
	}
	first := traceFirstChunk(n, o.MinProbes)
	v := 3 * first
	switch {
	case o.SketchRank > 0:
		v += 4 * o.SketchRank
	case !(o.DeflateOrthonormal && o.DeflateProducts != nil):
		v += 2 * len(o.Deflate)
	}
	return v
}

// traceFirstChunk is the row count of the trace's chunk buffers.
func traceFirstChunk(n, minProbes int) int {
	if minProbes <= 0 {
		minProbes = 10
	}
	limit := max(1, traceChunkFloats/max(n, 1))
	return min(max(min(traceChunk, limit), minProbes), limit)
}
