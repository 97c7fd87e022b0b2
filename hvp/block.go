package hvp

import (
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Range is the contiguous run of coordinates [Offset, Offset+Len), typically
// one parameter tensor.
type Range struct {
	Offset, Len int
}

// Restricted is the principal submatrix H_SS of an operator H on a set S of
// coordinates given as ranges: one diagonal block H_bb for a single range
// (one layer's tensor), or the coupled block of several tensors that belong
// together but do not sit next to each other in the parameter vector (all
// attention Q and K projections of a transformer, say).
//
// Its coordinates are those of S in the order of the ranges. By Cauchy's
// interlacing theorem its eigenvalues lie between λmin(H) and λ1(H), so
// λ1(H_SS) ≤ λ1(H): the layer-wise sharpness never exceeds the sharpness.
//
// Each Apply costs one full Apply of H (v is embedded with zeros, H applied,
// the block's part kept), so λ1 of every block of a partition costs about
// as many full HVPs as the number of blocks times a λ1 solve. Apply is
// safe for concurrent use when H's Apply is.
type Restricted struct {
	op     Operator
	ranges []Range
	n      int
	bufs   sync.Pool // *[2][]float64 of length op.Dim()
}

// NewBlock returns the diagonal block of op on [offset, offset+n).
func NewBlock(op Operator, offset, n int) (*Restricted, error) {
	return NewRestricted(op, []Range{{Offset: offset, Len: n}})
}

// NewRestricted returns the principal submatrix of op on the union of
// ranges. The ranges must lie inside op, be non-empty and must not overlap;
// they need not be sorted or adjacent. ranges is copied.
func NewRestricted(op Operator, ranges []Range) (*Restricted, error) {
	if op == nil {
		return nil, errors.New("hvp: Restricted needs an operator")
	}
	if len(ranges) == 0 {
		return nil, errors.New("hvp: Restricted needs at least one range")
	}
	dim := op.Dim()
	n := 0
	for i, r := range ranges {
		if r.Len <= 0 || r.Offset < 0 || r.Offset > dim-r.Len {
			return nil, fmt.Errorf("%w: range %d [%d, %d+%d) is empty or outside the operator (dim %d)", ErrDim, i, r.Offset, r.Offset, r.Len, dim)
		}
		n += r.Len
	}
	sorted := slices.Clone(ranges)
	slices.SortFunc(sorted, func(a, b Range) int { return a.Offset - b.Offset })
	for i := 1; i < len(sorted); i++ {
		if sorted[i].Offset < sorted[i-1].Offset+sorted[i-1].Len {
			return nil, fmt.Errorf("hvp: ranges [%d,+%d) and [%d,+%d) overlap", sorted[i-1].Offset, sorted[i-1].Len, sorted[i].Offset, sorted[i].Len)
		}
	}
	return &Restricted{op: op, ranges: slices.Clone(ranges), n: n}, nil
}

// Dim is the number of coordinates in the block.
func (r *Restricted) Dim() int { return r.n }

// Ranges returns a copy of the block's ranges, in the block's coordinate
// order.
func (r *Restricted) Ranges() []Range { return slices.Clone(r.ranges) }

// Unwrap returns the full operator.
func (r *Restricted) Unwrap() Operator { return r.op }

// SetWorkers forwards to the full operator when it has a SetWorkers method.
func (r *Restricted) SetWorkers(n int) {
	if w, ok := r.op.(interface{ SetWorkers(int) }); ok {
		w.SetWorkers(n)
	}
}

// Embed writes the block vector v into the zero full-length vector dst
// (len(dst) = the full dimension).
func (r *Restricted) Embed(dst, v []float64) {
	clear(dst)
	k := 0
	for _, g := range r.ranges {
		copy(dst[g.Offset:g.Offset+g.Len], v[k:k+g.Len])
		k += g.Len
	}
}

// Extract writes the block's coordinates of the full vector x into dst.
func (r *Restricted) Extract(dst, x []float64) {
	k := 0
	for _, g := range r.ranges {
		copy(dst[k:k+g.Len], x[g.Offset:g.Offset+g.Len])
		k += g.Len
	}
}

// Apply computes dst = H_SS·v with one full product.
func (r *Restricted) Apply(dst, v []float64) error {
	if err := checkDims(r.n, dst, v); err != nil {
		return err
	}
	bp, _ := r.bufs.Get().(*[2][]float64)
	if bp == nil {
		full := r.op.Dim()
		bp = &[2][]float64{make([]float64, full), make([]float64, full)}
	}
	defer r.bufs.Put(bp)
	in, out := bp[0], bp[1]
	r.Embed(in, v)
	if err := r.op.Apply(out, in); err != nil {
		return err
	}
	r.Extract(dst, out)
	return nil
}
