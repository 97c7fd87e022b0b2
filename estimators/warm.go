package estimators

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
)

// Warm bundles the warm states of all estimators, for a monitor to carry
// from one probe to the next and to persist (MarshalBinary).
type Warm struct {
	Eigen *EigenWarm
	Trace *TraceWarm
	ESD   *ESDWarm
	// Precond is the preconditioned sharpness solve's (λ1(P⁻¹H)).
	Precond *EigenWarm
}

// ErrBadWarm reports bytes that are not a serialised Warm.
var ErrBadWarm = errors.New("estimators: invalid warm-state encoding")

// The encoding's versions: HMW1 stored eigenvectors as float64; HMW2
// stores them as float32, halving the state a store keeps per run (a
// warm start only needs a direction: the solve refines it, and rounding of
// 6·10⁻⁸ relative is far below any eigen tolerance a probe uses). Both are
// read; HMW2 is written.
const (
	warmMagicV1 = "HMW1"
	warmMagic   = "HMW2"
	flagEigen   = 1
	flagTrace   = 2
	flagESD     = 4
	flagPrecond = 8
	maxBlockLen = 1 << 16 // longest block name accepted
)

// MarshalBinary encodes the warm state in a small versioned little-endian
// format closed by a CRC-32, so that corruption is detected on load.
// Eigenvectors are stored as float32; everything else as float64.
func (w *Warm) MarshalBinary() ([]byte, error) { return w.marshal(warmMagic) }

// marshal writes the given version (tests write HMW1 to check that old
// states still load).
func (w *Warm) marshal(magic string) ([]byte, error) {
	e := enc{vec32: magic != warmMagicV1}
	e.b = append(e.b, magic...)
	var flags byte
	if w.Eigen != nil {
		flags |= flagEigen
	}
	if w.Trace != nil {
		flags |= flagTrace
	}
	if w.ESD != nil {
		flags |= flagESD
	}
	if w.Precond != nil {
		flags |= flagPrecond
	}
	e.b = append(e.b, flags)
	if ew := w.Eigen; ew != nil {
		if err := e.eigen(ew); err != nil {
			return nil, err
		}
	}
	if tw := w.Trace; tw != nil {
		e.u64(uint64(tw.Dim))
		e.u64(tw.Seed)
		e.u64(tw.NextID)
		e.u64(uint64(len(tw.IDs)))
		for _, id := range tw.IDs {
			e.u64(id)
		}
		e.u64(uint64(len(tw.Blocks)))
		for _, b := range tw.Blocks {
			e.u64(uint64(len(b.Name)))
			e.b = append(e.b, b.Name...)
			e.u64(uint64(b.Offset))
			e.u64(uint64(b.Len))
		}
		e.u64(uint64(tw.DeflateRank))
		e.chain(tw.Plain)
		e.chain(tw.Deflated)
	}
	if sw := w.ESD; sw != nil {
		e.u64(uint64(sw.Dim))
		e.u64(sw.Seed)
	}
	if pw := w.Precond; pw != nil {
		if err := e.eigen(pw); err != nil {
			return nil, err
		}
	}
	return binary.LittleEndian.AppendUint32(e.b, crc32.ChecksumIEEE(e.b)), nil
}

// UnmarshalBinary decodes what MarshalBinary wrote. Any other input gives
// an error wrapping ErrBadWarm; it never panics and never allocates more
// than the input's size warrants.
func (w *Warm) UnmarshalBinary(data []byte) error {
	if len(data) < len(warmMagic)+1+4 {
		return fmt.Errorf("%w: missing header", ErrBadWarm)
	}
	magic := string(data[:len(warmMagic)])
	if magic != warmMagic && magic != warmMagicV1 {
		return fmt.Errorf("%w: missing header", ErrBadWarm)
	}
	body := data[:len(data)-4]
	if crc32.ChecksumIEEE(body) != binary.LittleEndian.Uint32(data[len(data)-4:]) {
		return fmt.Errorf("%w: checksum mismatch", ErrBadWarm)
	}
	d := dec{b: body[len(warmMagic):], vec32: magic != warmMagicV1}
	flags := d.byte()
	if flags&^(flagEigen|flagTrace|flagESD|flagPrecond) != 0 {
		return fmt.Errorf("%w: unknown section flags %#x", ErrBadWarm, flags)
	}
	var out Warm
	if flags&flagEigen != 0 {
		ew, err := d.eigen()
		if err != nil {
			return err
		}
		out.Eigen = ew
	}
	if flags&flagTrace != 0 {
		tw := &TraceWarm{Dim: d.int(), Seed: d.u64(), NextID: d.u64()}
		nid := d.count(8)
		tw.IDs = make([]uint64, 0, nid)
		for i := 0; i < nid && d.err == nil; i++ {
			tw.IDs = append(tw.IDs, d.u64())
		}
		nb := d.count(24)
		tw.Blocks = make([]Block, 0, nb)
		for i := 0; i < nb && d.err == nil; i++ {
			name := d.bytes(maxBlockLen)
			tw.Blocks = append(tw.Blocks, Block{Name: string(name), Offset: d.int(), Len: d.int()})
		}
		tw.DeflateRank = d.int()
		tw.Plain = d.chain()
		tw.Deflated = d.chain()
		if d.err == nil {
			if err := tw.validate(); err != nil {
				return err
			}
		}
		out.Trace = tw
	}
	if flags&flagESD != 0 {
		out.ESD = &ESDWarm{Dim: d.int(), Seed: d.u64()}
	}
	if flags&flagPrecond != 0 {
		pw, err := d.eigen()
		if err != nil {
			return err
		}
		out.Precond = pw
	}
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrBadWarm, len(d.b))
	}
	*w = out
	return nil
}

// eigen writes an eigen warm section.
func (e *enc) eigen(ew *EigenWarm) error {
	if len(ew.Values) != len(ew.Vectors) {
		return fmt.Errorf("estimators: eigen warm state has %d values for %d vectors", len(ew.Values), len(ew.Vectors))
	}
	e.floats(ew.Values)
	e.u64(uint64(len(ew.Vectors)))
	for _, v := range ew.Vectors {
		if e.vec32 {
			e.floats32(v)
		} else {
			e.floats(v)
		}
	}
	return nil
}

// eigen reads an eigen warm section.
func (d *dec) eigen() (*EigenWarm, error) {
	ew := &EigenWarm{Values: d.floats()}
	nv := d.count(8)
	ew.Vectors = make([][]float64, 0, nv)
	for i := 0; i < nv && d.err == nil; i++ {
		if d.vec32 {
			ew.Vectors = append(ew.Vectors, d.floats32())
		} else {
			ew.Vectors = append(ew.Vectors, d.floats())
		}
	}
	if d.err == nil {
		if err := ew.validate(); err != nil {
			return nil, err
		}
	}
	return ew, nil
}

func (ew *EigenWarm) validate() error {
	if len(ew.Values) != len(ew.Vectors) {
		return fmt.Errorf("%w: %d eigenvalues for %d vectors", ErrBadWarm, len(ew.Values), len(ew.Vectors))
	}
	for i, v := range ew.Vectors {
		if len(v) != len(ew.Vectors[0]) {
			return fmt.Errorf("%w: eigenvector %d has length %d, want %d", ErrBadWarm, i, len(v), len(ew.Vectors[0]))
		}
		for _, x := range v {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				return fmt.Errorf("%w: non-finite eigenvector entry", ErrBadWarm)
			}
		}
	}
	return nil
}

func (tw *TraceWarm) validate() error {
	if tw.Dim < 0 || tw.DeflateRank < 0 {
		return fmt.Errorf("%w: negative trace dimension", ErrBadWarm)
	}
	for _, b := range tw.Blocks {
		if b.Offset < 0 || b.Len < 0 || b.Offset > tw.Dim-b.Len {
			return fmt.Errorf("%w: block %q out of range", ErrBadWarm, b.Name)
		}
	}
	for _, ch := range []TraceChain{tw.Plain, tw.Deflated} {
		if !ch.Valid {
			continue
		}
		if len(ch.Comps) != len(tw.Blocks)+1 {
			return fmt.Errorf("%w: trace chain has %d components for %d blocks", ErrBadWarm, len(ch.Comps), len(tw.Blocks))
		}
		for _, c := range ch.Comps {
			if len(c.Samples) != len(tw.IDs) {
				return fmt.Errorf("%w: trace chain has %d samples for %d probes", ErrBadWarm, len(c.Samples), len(tw.IDs))
			}
		}
	}
	return nil
}

// enc appends the encoding; vec32 writes eigenvectors as float32.
type enc struct {
	b     []byte
	vec32 bool
}

func (e *enc) u64(x uint64)  { e.b = binary.LittleEndian.AppendUint64(e.b, x) }
func (e *enc) f64(x float64) { e.u64(math.Float64bits(x)) }
func (e *enc) floats(x []float64) {
	e.u64(uint64(len(x)))
	for _, v := range x {
		e.f64(v)
	}
}

// floats32 writes x rounded to float32 (entries beyond float32's range
// become ±Inf, which the decoder rejects: no unit eigenvector has them).
func (e *enc) floats32(x []float64) {
	e.u64(uint64(len(x)))
	for _, v := range x {
		e.b = binary.LittleEndian.AppendUint32(e.b, math.Float32bits(float32(v)))
	}
}

func (e *enc) chain(c TraceChain) {
	if !c.Valid {
		e.b = append(e.b, 0)
		return
	}
	e.b = append(e.b, 1)
	e.u64(uint64(len(c.Comps)))
	for _, cc := range c.Comps {
		e.f64(cc.Value)
		e.f64(cc.Var)
		e.f64(cc.Omega)
		e.f64(cc.S2)
		e.f64(cc.Nu)
		e.f64(cc.S2D)
		e.f64(cc.NuD)
		e.floats(cc.Samples)
	}
}

// dec reads with bounds checks; the first failure sticks in err and every
// later read returns zero values.
type dec struct {
	b     []byte
	err   error
	vec32 bool // eigenvectors are float32 (HMW2)
}

func (d *dec) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated or malformed %s", ErrBadWarm, what)
	}
	d.b = nil
}

func (d *dec) byte() byte {
	if d.err != nil || len(d.b) < 1 {
		d.fail("byte")
		return 0
	}
	x := d.b[0]
	d.b = d.b[1:]
	return x
}

func (d *dec) u64() uint64 {
	if d.err != nil || len(d.b) < 8 {
		d.fail("integer")
		return 0
	}
	x := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return x
}

// int reads a non-negative int.
func (d *dec) int() int {
	x := d.u64()
	if x > math.MaxInt32*1024 {
		d.fail("length")
		return 0
	}
	return int(x)
}

// count reads an element count whose elements take at least size bytes
// each, rejecting counts the remaining input cannot hold.
func (d *dec) count(size int) int {
	x := d.u64()
	if d.err != nil || x > uint64(len(d.b)/size) {
		d.fail("count")
		return 0
	}
	return int(x)
}

func (d *dec) floats() []float64 {
	n := d.count(8)
	if d.err != nil {
		return nil
	}
	out := make([]float64, n)
	for i := range out {
		out[i] = math.Float64frombits(binary.LittleEndian.Uint64(d.b[8*i:]))
	}
	d.b = d.b[8*n:]
	return out
}

func (d *dec) floats32() []float64 {
	n := d.count(4)
	if d.err != nil {
		return nil
	}
	out := make([]float64, n)
	for i := range out {
		out[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(d.b[4*i:])))
	}
	d.b = d.b[4*n:]
	return out
}

func (d *dec) bytes(limit int) []byte {
	n := d.count(1)
	if d.err != nil {
		return nil
	}
	if n > limit {
		d.fail("string")
		return nil
	}
	out := d.b[:n]
	d.b = d.b[n:]
	return out
}

func (d *dec) chain() TraceChain {
	switch d.byte() {
	case 0:
		return TraceChain{}
	case 1:
	default:
		d.fail("chain flag")
		return TraceChain{}
	}
	nc := d.count(64)
	ch := TraceChain{Valid: true, Comps: make([]ChainComp, 0, nc)}
	for i := 0; i < nc && d.err == nil; i++ {
		cc := ChainComp{}
		cc.Value = math.Float64frombits(d.u64())
		cc.Var = math.Float64frombits(d.u64())
		cc.Omega = math.Float64frombits(d.u64())
		cc.S2 = math.Float64frombits(d.u64())
		cc.Nu = math.Float64frombits(d.u64())
		cc.S2D = math.Float64frombits(d.u64())
		cc.NuD = math.Float64frombits(d.u64())
		cc.Samples = d.floats()
		ch.Comps = append(ch.Comps, cc)
	}
	return ch
}
