package trainer

import (
	"errors"
	"fmt"
)

// ErrFloat32Unsupported reports a model or loss the float32 HVP path does
// not cover. The float64 path covers every layer.
var ErrFloat32Unsupported = errors.New("float32 HVPs support MLPs: Linear layers, relu/tanh/gelu/identity activations, cross-entropy or MSE loss")

// Network32 is a frozen float32 copy of a Network's parameters, for
// float32 Hessian-vector products (Tape32). It covers the MLP family:
// Linear layers, elementwise activations and nested Sequentials.
//
// float32 halves the bytes every GEMM of an HVP moves and doubles the
// SIMD width, so an HVP costs about half the float64 one; the price is
// rounding of order 10⁻⁶ relative in H·v (see docs/benchmarks.md,
// "Precision").
type Network32 struct {
	net    *Network
	plan   []step32
	params []float32
}

// step32 is one layer of the float32 plan.
type step32 struct {
	linear  bool
	in, out int // linear: sizes; activation: out only is used
	off     int // offset of the layer's parameters in the flat vector
	bias    bool
	act     Activation
}

// SupportsFloat32 returns nil when n is in the MLP family that float32
// HVPs cover, else the error NewNetwork32 would return, without copying
// the parameters: a command can refuse --precision float32 up front.
func SupportsFloat32(n *Network) error {
	m := &Network32{net: n}
	return m.flatten(n.root, 0, "")
}

// NewNetwork32 converts n's current parameters to float32. It returns an
// error wrapping ErrFloat32Unsupported for any layer outside the MLP family
// (BatchNorm, convolutions, pooling, residual blocks).
func NewNetwork32(n *Network) (*Network32, error) {
	m := &Network32{net: n, params: make([]float32, n.Dim())}
	if err := m.flatten(n.root, 0, ""); err != nil {
		return nil, err
	}
	if len(m.plan) == 0 {
		return nil, fmt.Errorf("%w: %s has no layers", ErrFloat32Unsupported, n)
	}
	m.CopyFrom(n)
	return m, nil
}

func (m *Network32) flatten(s *Sequential, base int, prefix string) error {
	for i, nl := range s.Layers {
		off := base + s.pOff[i]
		switch l := nl.Layer.(type) {
		case *Linear:
			m.plan = append(m.plan, step32{linear: true, in: l.In, out: l.Out, off: off, bias: !l.NoBias})
		case *Act:
			m.plan = append(m.plan, step32{act: l.Fn})
		case *Sequential:
			if err := m.flatten(l, off, join(prefix, nl.Name)); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w; layer %q of %s is a %T: use --precision float64", ErrFloat32Unsupported, join(prefix, nl.Name), m.net, nl.Layer)
		}
	}
	return nil
}

// CopyFrom converts the current parameters of n, the network m was made
// from (or a Clone of it), to float32.
func (m *Network32) CopyFrom(n *Network) {
	p := n.params
	parallelFor(len(p), 1, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			m.params[i] = float32(p[i])
		}
	})
}

// Dim is the number of parameters.
func (m *Network32) Dim() int { return len(m.params) }

// Network is the network m was made from.
func (m *Network32) Network() *Network { return m.net }

// Tape32 is the float32 evaluation state of one batch: the activations of
// the forward pass and the gradients of the backward pass, both computed
// once by Forward, and the buffers of the HVPs. Like Tape it is not safe for
// concurrent use.
type Tape32 struct {
	net    *Network32
	rows   int
	lossCE bool
	layers []layer32
	p      []float32 // softmax probabilities (cross-entropy)
	rgz    []float32
	v, hv  []float32
	// v64 and dst are HVP's arguments while it runs (see HVP).
	v64, dst []float64
	acc      []float64 // bias-gradient sums
	lossV    float64
	ready    bool
}

// layer32 is one layer's buffers on the tape.
type layer32 struct {
	x, y   []float32 // input (not owned) and output of the forward pass
	gy     []float32 // ∂L/∂y (not owned)
	gx     []float32
	d1     []float32 // activation: σ'(x)
	d2g    []float32 // activation: σ”(x)·∂L/∂y; nil when σ” = 0
	rx     []float32 // R{x} of the current HVP (not owned; nil: zero)
	ry     []float32
	rgx    []float32
	pack   *inputPack32
	hasRGX bool
}

// inputPack32 is inputPack in float32, for the first layer only: its input
// is the data, whose all-zero columns (MNIST's border pixels) contribute
// nothing to x·Vᵀ and leave gyᵀ·x zero.
type inputPack32 struct {
	cols   []int
	x      []float32 // rows × len(cols)
	vw, hw []float32 // out × len(cols)
}

// NewTape32 returns a tape over m's parameters.
func (m *Network32) NewTape32() *Tape32 {
	return &Tape32{net: m, layers: make([]layer32, len(m.plan))}
}

// Loss is the mean loss of the last Forward (accumulated in float64 from
// float32 outputs).
func (t *Tape32) Loss() float64 { return t.lossV }

// Forward runs the float32 forward pass and the backward pass of the
// gradient on b and returns the mean loss; both stay on the tape for HVP.
// BatchNorm modes do not matter here: the MLP family has no BatchNorm.
func (t *Tape32) Forward(b Batch, loss Loss) (float64, error) {
	t.ready = false
	switch loss.(type) {
	case CrossEntropy, *CrossEntropy:
		t.lossCE = true
	case MSE, *MSE:
		t.lossCE = false
	default:
		return 0, fmt.Errorf("%w; the loss is %s: use --precision float64", ErrFloat32Unsupported, loss.Name())
	}
	n := t.net.net
	if b.X == nil || b.X.N == 0 {
		return 0, errors.New("trainer: empty batch")
	}
	if b.X.Shape != n.in {
		return 0, fmt.Errorf("trainer: batch shape %v, network expects %v", b.X.Shape, n.in)
	}
	t.rows = b.X.Rows()
	x := grow32(nil, len(b.X.Data))
	toFloat32(x, b.X.Data)
	for i := range t.layers {
		x = t.forward(i, x)
	}
	gz := grow32(nil, len(x))
	l, err := t.evalLoss(gz, x, b)
	if err != nil {
		return 0, err
	}
	t.backward(gz)
	t.lossV, t.ready = l, true
	return l, nil
}

func (t *Tape32) forward(i int, x []float32) []float32 {
	s, L := t.net.plan[i], &t.layers[i]
	L.x = x
	if !s.linear {
		L.y, L.d1 = grow32(L.y, len(x)), grow32(L.d1, len(x))
		second := s.act == Tanh || s.act == GELU
		if second {
			L.d2g = grow32(L.d2g, len(x))
		} else {
			L.d2g = nil
		}
		y, d1, d2 := L.y, L.d1, L.d2g
		parallelFor(len(x), 8, func(lo, hi int) {
			for j := lo; j < hi; j++ {
				xj := float64(x[j])
				yj := s.act.apply(xj)
				a, b := s.act.derivs(xj, yj)
				y[j], d1[j] = float32(yj), float32(a)
				if second {
					d2[j] = float32(b)
				}
			}
		})
		return L.y
	}
	w := t.net.params[s.off : s.off+s.in*s.out]
	L.y = grow32(L.y, t.rows*s.out)
	sgemm(false, true, t.rows, s.out, s.in, x, w, 0, L.y)
	if s.bias {
		addBias32(L.y, t.net.params[s.off+s.in*s.out:s.off+s.in*s.out+s.out])
	}
	if i == 0 {
		L.pack = buildPack32(x, t.rows, s.in, s.out)
	}
	return L.y
}

// evalLoss writes ∂L/∂z into gz and keeps what the loss's Hessian needs.
func (t *Tape32) evalLoss(gz, z []float32, b Batch) (float64, error) {
	if !t.lossCE {
		if len(b.Targets) != len(z) {
			return 0, fmt.Errorf("mse: %d targets for %d outputs", len(b.Targets), len(z))
		}
		inv := 1 / float64(len(z))
		var loss float64
		for i, v := range z {
			d := float64(v) - b.Targets[i]
			loss += d * d
			gz[i] = float32(2 * d * inv)
		}
		return loss * inv, nil
	}
	c := len(z) / t.rows
	if len(b.Labels) != t.rows || b.X.H != 1 || b.X.W != 1 {
		return 0, fmt.Errorf("cross-entropy: %d labels for %d rows of dense logits", len(b.Labels), t.rows)
	}
	t.p = grow32(t.p, len(z))
	inv := 1 / float64(t.rows)
	p64, row := probs(c), probs(c)
	var loss float64
	for i, y := range b.Labels {
		if y < 0 || y >= c {
			return 0, fmt.Errorf("cross-entropy: label %d out of range [0,%d)", y, c)
		}
		for j := range row {
			row[j] = float64(z[i*c+j])
		}
		loss += softmaxRow(p64, row) - row[y]
		for j, pj := range p64 {
			t.p[i*c+j] = float32(pj)
			g := pj * inv
			if j == y {
				g -= inv
			}
			gz[i*c+j] = float32(g)
		}
	}
	return loss * inv, nil
}

// backward propagates ∂L/∂z down once; the HVPs reuse every layer's gy.
func (t *Tape32) backward(gz []float32) {
	g := gz
	for i := len(t.layers) - 1; i >= 0; i-- {
		s, L := t.net.plan[i], &t.layers[i]
		L.gy = g
		if s.linear {
			if i == 0 {
				break
			}
			L.gx = grow32(L.gx, t.rows*s.in)
			sgemm(false, false, t.rows, s.in, s.out, g, t.net.params[s.off:s.off+s.in*s.out], 0, L.gx)
			g = L.gx
			continue
		}
		L.gx = grow32(L.gx, len(g))
		gx, d1, d2g := L.gx, L.d1, L.d2g
		parallelFor(len(g), 1, func(lo, hi int) {
			for j := lo; j < hi; j++ {
				gx[j] = d1[j] * g[j]
				if d2g != nil {
					d2g[j] *= g[j]
				}
			}
		})
		g = gx
	}
}

// HVP writes H·v into dst with the float32 R-operator: v is rounded to
// float32, the R-forward and R-backward passes run in float32 through
// sgemm (the bias gradients sum in float64), and H·v is widened back.
func (t *Tape32) HVP(dst, v []float64) error {
	n := t.net.Dim()
	if len(dst) != n || len(v) != n {
		return fmt.Errorf("trainer: HVP vectors have lengths %d and %d, want %d", len(dst), len(v), n)
	}
	if !t.ready {
		return errors.New("trainer: HVP before Forward")
	}
	if t.v == nil {
		t.v, t.hv = make([]float32, n), make([]float32, n)
	}
	// A packed first layer reads its part of v and writes its part of H·v
	// in float64 directly, in its gather and scatter: [lo, hi) skips the
	// conversions, which would be two more passes over most of the vector.
	lo, hi := 0, 0
	if p := t.layers[0].pack; p != nil {
		lo, hi = t.net.plan[0].off, t.net.plan[0].off+t.net.plan[0].in*t.net.plan[0].out
	}
	toFloat32(t.v[:lo], v[:lo])
	toFloat32(t.v[hi:], v[hi:])
	t.v64, t.dst = v, dst
	defer func() { t.v64, t.dst = nil, nil }()
	var r []float32
	for i := range t.layers {
		r = t.rforward(i, r)
	}
	t.rgz = grow32(t.rgz, len(t.layers[len(t.layers)-1].y))
	t.lossHessVec(t.rgz, r)
	rg := t.rgz
	for i := len(t.layers) - 1; i >= 0; i-- {
		rg = t.rbackward(i, rg)
	}
	toFloat64(dst[:lo], t.hv[:lo])
	toFloat64(dst[hi:], t.hv[hi:])
	if hasNonFinite(dst) {
		return fmt.Errorf("%w in the float32 HVP (the model or loss has diverged, or float32 overflowed)", ErrNonFinite)
	}
	return nil
}

// rforward: linear R{y} = x·Vᵀ + R{x}·Wᵀ + v_b; activation R{y} = σ'(x)·R{x}.
func (t *Tape32) rforward(i int, rx []float32) []float32 {
	s, L := t.net.plan[i], &t.layers[i]
	L.rx = rx
	if !s.linear {
		if rx == nil {
			return nil
		}
		L.ry = grow32(L.ry, len(rx))
		ry, d1 := L.ry, L.d1
		parallelFor(len(rx), 1, func(lo, hi int) {
			for j := lo; j < hi; j++ {
				ry[j] = d1[j] * rx[j]
			}
		})
		return L.ry
	}
	nw := s.in * s.out
	vw, w := t.v[s.off:s.off+nw], t.net.params[s.off:s.off+nw]
	L.ry = grow32(L.ry, t.rows*s.out)
	if p := L.pack; p != nil {
		k := len(p.cols)
		v64 := t.v64[s.off : s.off+nw]
		for o := range s.out {
			src, d := v64[o*s.in:(o+1)*s.in], p.vw[o*k:(o+1)*k]
			for l, j := range p.cols {
				d[l] = float32(src[j])
			}
		}
		if k > 0 {
			sgemm(false, true, t.rows, s.out, k, p.x, p.vw, 0, L.ry)
		} else {
			clear(L.ry)
		}
	} else {
		sgemm(false, true, t.rows, s.out, s.in, L.x, vw, 0, L.ry)
	}
	if rx != nil {
		sgemm(false, true, t.rows, s.out, s.in, rx, w, 1, L.ry)
	}
	if s.bias {
		addBias32(L.ry, t.v[s.off+nw:s.off+nw+s.out])
	}
	return L.ry
}

// lossHessVec writes (∂²L/∂z²)·rz: cross-entropy (diag(p) − p·pᵀ)/N per
// sample, MSE 2·rz/len(z).
func (t *Tape32) lossHessVec(dst, rz []float32) {
	if rz == nil {
		clear(dst)
		return
	}
	if !t.lossCE {
		s := float32(2 / float64(len(rz)))
		for i, r := range rz {
			dst[i] = s * r
		}
		return
	}
	c := len(rz) / t.rows
	inv := float32(1 / float64(t.rows))
	parallelFor(t.rows, 2*c, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			p, r, d := t.p[i*c:(i+1)*c], rz[i*c:(i+1)*c], dst[i*c:(i+1)*c]
			var pr float64
			for j := range p {
				pr += float64(p[j]) * float64(r[j])
			}
			for j := range p {
				d[j] = p[j] * (r[j] - float32(pr)) * inv
			}
		}
	})
}

// rbackward takes R{∂L/∂y} and returns R{∂L/∂x}; a linear layer writes its
// part of H·v: R{gW} = R{gy}ᵀ·x + gyᵀ·R{x}, R{gb} = Σ R{gy}, and
// R{gx} = R{gy}·W + gy·V.
func (t *Tape32) rbackward(i int, rg []float32) []float32 {
	s, L := t.net.plan[i], &t.layers[i]
	if !s.linear {
		L.rgx = grow32(L.rgx, len(rg))
		rgx, d1, d2g, rx := L.rgx, L.d1, L.d2g, L.rx
		if d2g == nil || rx == nil {
			parallelFor(len(rg), 1, func(lo, hi int) {
				for j := lo; j < hi; j++ {
					rgx[j] = d1[j] * rg[j]
				}
			})
			return rgx
		}
		parallelFor(len(rg), 1, func(lo, hi int) {
			for j := lo; j < hi; j++ {
				rgx[j] = d1[j]*rg[j] + d2g[j]*rx[j]
			}
		})
		return rgx
	}
	nw := s.in * s.out
	hw := t.hv[s.off : s.off+nw]
	if p := L.pack; p != nil {
		k := len(p.cols)
		if k > 0 {
			sgemm(true, false, s.out, k, t.rows, rg, p.x, 0, p.hw)
		}
		hw64 := t.dst[s.off : s.off+nw]
		for o := range s.out {
			src, d := p.hw[o*k:(o+1)*k], hw64[o*s.in:(o+1)*s.in]
			clear(d)
			for l, j := range p.cols {
				d[j] = float64(src[l])
			}
		}
	} else {
		sgemm(true, false, s.out, s.in, t.rows, rg, L.x, 0, hw)
	}
	if L.rx != nil {
		sgemm(true, false, s.out, s.in, t.rows, L.gy, L.rx, 1, hw)
	}
	if s.bias {
		if cap(t.acc) < s.out {
			t.acc = make([]float64, s.out)
		}
		sumRows32(t.hv[s.off+nw:s.off+nw+s.out], rg, t.acc)
	}
	if i == 0 {
		return nil
	}
	L.rgx = grow32(L.rgx, t.rows*s.in)
	sgemm(false, false, t.rows, s.in, s.out, rg, t.net.params[s.off:s.off+nw], 0, L.rgx)
	sgemm(false, false, t.rows, s.in, s.out, L.gy, t.v[s.off:s.off+nw], 1, L.rgx)
	return L.rgx
}

// buildPack32 packs x's nonzero columns when at least packMinZeroFrac of
// them are zero in the whole batch, else returns nil. Columns of H·v that
// the pack skips are never written, so they stay zero (exactly as in
// float64: those weights do not touch the loss).
func buildPack32(x []float32, rows, in, out int) *inputPack32 {
	used := make([]bool, in)
	for i := 0; i < rows*in; i += in {
		for j, v := range x[i : i+in] {
			if v != 0 {
				used[j] = true
			}
		}
	}
	p := &inputPack32{}
	for j, u := range used {
		if u {
			p.cols = append(p.cols, j)
		}
	}
	k := len(p.cols)
	if float64(in-k) < packMinZeroFrac*float64(in) {
		return nil
	}
	p.x = make([]float32, rows*k)
	for i := range rows {
		row, d := x[i*in:(i+1)*in], p.x[i*k:(i+1)*k]
		for l, j := range p.cols {
			d[l] = row[j]
		}
	}
	p.vw, p.hw = make([]float32, out*k), make([]float32, out*k)
	return p
}

func grow32(b []float32, n int) []float32 {
	if cap(b) < n {
		return make([]float32, n)
	}
	return b[:n]
}

func toFloat32(dst []float32, src []float64) {
	parallelFor(len(src), 1, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			dst[i] = float32(src[i])
		}
	})
}

func toFloat64(dst []float64, src []float32) {
	parallelFor(len(src), 1, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			dst[i] = float64(src[i])
		}
	})
}

// addBias32 adds b to every row of the rows×len(b) matrix y.
func addBias32(y, b []float32) {
	c := len(b)
	parallelFor(len(y)/c, c, func(lo, hi int) {
		for i := lo * c; i < hi*c; i += c {
			row := y[i : i+c]
			for j, v := range b {
				row[j] += v
			}
		}
	})
}

// sumRows32 writes the column sums of the rows×len(dst) matrix y into dst,
// accumulated in float64: a float32 running sum over a batch of 1000 rows
// would lose three digits to cancellation.
func sumRows32(dst, y []float32, acc []float64) {
	c := len(dst)
	acc = acc[:c]
	clear(acc)
	for i := 0; i < len(y); i += c {
		for j, v := range y[i : i+c] {
			acc[j] += float64(v)
		}
	}
	for j, s := range acc {
		dst[j] = float32(s)
	}
}
