package store

import (
	"fmt"
	"math"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/hessmon/hessmon/snapshot"
)

// Snapshots are stored as one version byte followed by a protobuf-wire
// message (built with protowire, no generated code). Protobuf wire format was
// chosen over JSON because floats travel as raw IEEE-754 bits (NaN and ±Inf
// round-trip exactly, failed probes carry NaN losses), eigenvectors stay
// compact, and unknown fields are skipped so that a newer writer's extra
// fields do not break an older reader.
//
//	Snapshot                      Trace                 ESD
//	 1 run            string       1 value   fixed64     1 nodes   packed fixed64
//	 2 step           zigzag       2 stderr  fixed64     2 weights packed fixed64
//	 3 time           bytes (time.MarshalBinary)         3 probes  zigzag
//	 4 loss           fixed64      3 probes  zigzag      4 steps   zigzag
//	 5 learning_rate  fixed64      4 method  string      5 sigma2  fixed64
//	 6 optimizer      string       5 block   message (repeated)
//	 7 beta1          fixed64
//	 8 sharpness_threshold fixed64  BlockTrace
//	 9 sharpness_ratio     fixed64   1 name   string
//	10 eigenvalues    packed fixed64 2 value  fixed64
//	11 residuals      packed fixed64 3 stderr fixed64
//	12 eigenvector    packed fixed64 (repeated, one per vector)
//	13 trace          message
//	14 esd            message
//	15 hvps           zigzag
//	16 seconds        fixed64
//	17 warm           varint bool
//	18 failure        string
//	19 detail         string
//	20 lambda_min     message (Eigenpair: 1 value, 2 residual)
//	21 preconditioned_lambda1 message (Eigenpair)
//	22 block_mass     message (repeated BlockValue: 1 name, 2 value, 3 residual)
//	23 block_lambda1  message (repeated BlockValue)
//	24 kind           string
//	25 reason         string
//	26 precision      string
//	27 peak_bytes     zigzag
const encodingVersion = 1

// EncodeSnapshot returns the stored encoding of s.
func EncodeSnapshot(s snapshot.Snapshot) ([]byte, error) {
	b := make([]byte, 0, 256+8*(len(s.Eigenvalues)+len(s.Residuals)))
	b = append(b, encodingVersion)
	b = appendString(b, 1, s.Run)
	b = appendInt(b, 2, s.Step)
	if !s.Time.IsZero() {
		t, err := s.Time.MarshalBinary()
		if err != nil {
			return nil, fmt.Errorf("store: encode snapshot time: %w", err)
		}
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendBytes(b, t)
	}
	b = appendFloat(b, 4, s.Loss)
	b = appendFloat(b, 5, s.LearningRate)
	b = appendString(b, 6, string(s.Optimizer))
	b = appendFloat(b, 7, s.Beta1)
	b = appendFloat(b, 8, s.SharpnessThreshold)
	b = appendFloat(b, 9, s.SharpnessRatio)
	b = appendFloats(b, 10, s.Eigenvalues)
	b = appendFloats(b, 11, s.Residuals)
	for _, v := range s.Eigenvectors {
		b = protowire.AppendTag(b, 12, protowire.BytesType)
		b = appendPacked(b, v)
	}
	if t := s.Trace; t != nil {
		var m []byte
		m = appendFloat(m, 1, t.Value)
		m = appendFloat(m, 2, t.StdErr)
		m = appendInt(m, 3, int64(t.Probes))
		m = appendString(m, 4, t.Method)
		for _, bt := range t.Blocks {
			var mb []byte
			mb = appendString(mb, 1, bt.Name)
			mb = appendFloat(mb, 2, bt.Value)
			mb = appendFloat(mb, 3, bt.StdErr)
			m = protowire.AppendTag(m, 5, protowire.BytesType)
			m = protowire.AppendBytes(m, mb)
		}
		b = protowire.AppendTag(b, 13, protowire.BytesType)
		b = protowire.AppendBytes(b, m)
	}
	if e := s.ESD; e != nil {
		var m []byte
		m = appendFloats(m, 1, e.Nodes)
		m = appendFloats(m, 2, e.Weights)
		m = appendInt(m, 3, int64(e.Probes))
		m = appendInt(m, 4, int64(e.Steps))
		m = appendFloat(m, 5, e.Sigma2)
		b = protowire.AppendTag(b, 14, protowire.BytesType)
		b = protowire.AppendBytes(b, m)
	}
	b = appendInt(b, 15, int64(s.HVPs))
	b = appendFloat(b, 16, s.Seconds)
	if s.Warm {
		b = protowire.AppendTag(b, 17, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	b = appendString(b, 18, string(s.Failure))
	b = appendString(b, 19, storedDetail(&s))
	b = appendPair(b, 20, s.LambdaMin)
	b = appendPair(b, 21, s.PreconditionedLambda1)
	for _, bv := range s.BlockMass {
		b = appendBlockValue(b, 22, bv)
	}
	for _, bv := range s.BlockLambda1 {
		b = appendBlockValue(b, 23, bv)
	}
	b = appendString(b, 24, string(s.Kind))
	b = appendString(b, 25, string(s.Reason))
	b = appendString(b, 26, string(s.Precision))
	b = appendInt(b, 27, s.PeakBytes)
	return b, nil
}

// appendPair writes an optional eigenpair as a nested message.
func appendPair(b []byte, num protowire.Number, p *snapshot.Eigenpair) []byte {
	if p == nil {
		return b
	}
	var m []byte
	m = appendFloat(m, 1, p.Value)
	m = appendFloat(m, 2, p.Residual)
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, m)
}

func appendBlockValue(b []byte, num protowire.Number, v snapshot.BlockValue) []byte {
	var m []byte
	m = appendString(m, 1, v.Name)
	m = appendFloat(m, 2, v.Value)
	m = appendFloat(m, 3, v.Residual)
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, m)
}

func (f field) pair() (*snapshot.Eigenpair, error) {
	m, err := f.bytes()
	if err != nil {
		return nil, err
	}
	p := new(snapshot.Eigenpair)
	err = walk(m, func(f field) error {
		var err error
		switch f.num {
		case 1:
			p.Value, err = f.float()
		case 2:
			p.Residual, err = f.float()
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

func (f field) blockValue() (snapshot.BlockValue, error) {
	var v snapshot.BlockValue
	m, err := f.bytes()
	if err != nil {
		return v, err
	}
	err = walk(m, func(f field) error {
		var err error
		switch f.num {
		case 1:
			v.Name, err = f.str()
		case 2:
			v.Value, err = f.float()
		case 3:
			v.Residual, err = f.float()
		}
		return err
	})
	return v, err
}

// DecodeSnapshot decodes a stored snapshot. It never panics: any malformed
// input yields an error wrapping ErrCorrupt.
func DecodeSnapshot(b []byte) (snapshot.Snapshot, error) {
	var s snapshot.Snapshot
	if err := decodeSnapshot(&s, b, AllFields); err != nil {
		return snapshot.Snapshot{}, err
	}
	return s, nil
}

// decodeSnapshot decodes b into s, skipping the bulky fields (eigenvectors,
// trace, ESD) that want leaves out: skipped fields are framed but not decoded,
// nor are their pages touched.
func decodeSnapshot(s *snapshot.Snapshot, b []byte, want Fields) error {
	if len(b) == 0 {
		return fmt.Errorf("%w: empty snapshot record", ErrCorrupt)
	}
	if b[0] != encodingVersion {
		return fmt.Errorf("%w: snapshot encoding version %d, want %d", ErrCorrupt, b[0], encodingVersion)
	}
	return walk(b[1:], func(f field) error {
		var err error
		switch f.num {
		case 1:
			s.Run, err = f.str()
		case 2:
			s.Step, err = f.int()
		case 3:
			s.Time, err = f.time()
		case 4:
			s.Loss, err = f.float()
		case 5:
			s.LearningRate, err = f.float()
		case 6:
			var o string
			o, err = f.str()
			s.Optimizer = snapshot.Optimizer(o)
		case 7:
			s.Beta1, err = f.float()
		case 8:
			s.SharpnessThreshold, err = f.float()
		case 9:
			s.SharpnessRatio, err = f.float()
		case 10:
			s.Eigenvalues, err = f.floats()
		case 11:
			s.Residuals, err = f.floats()
		case 12:
			if want&WithVectors != 0 {
				var v []float64
				if v, err = f.floats(); err == nil {
					s.Eigenvectors = append(s.Eigenvectors, v)
				}
			}
		case 13:
			if want&WithTrace != 0 {
				s.Trace, err = f.trace()
			}
		case 14:
			if want&WithESD != 0 {
				s.ESD, err = f.esd()
			}
		case 15:
			s.HVPs, err = f.intn()
		case 16:
			s.Seconds, err = f.float()
		case 17:
			s.Warm, err = f.bool()
		case 18:
			var r string
			r, err = f.str()
			s.Failure = snapshot.Failure(r)
		case 19:
			s.Detail, err = f.str()
		case 20:
			s.LambdaMin, err = f.pair()
		case 21:
			s.PreconditionedLambda1, err = f.pair()
		case 22:
			var v snapshot.BlockValue
			if v, err = f.blockValue(); err == nil {
				s.BlockMass = append(s.BlockMass, v)
			}
		case 23:
			if want&WithTrace == 0 {
				return nil
			}
			var v snapshot.BlockValue
			if v, err = f.blockValue(); err == nil {
				s.BlockLambda1 = append(s.BlockLambda1, v)
			}
		case 24:
			var k string
			k, err = f.str()
			s.Kind = snapshot.Kind(k)
		case 25:
			var r string
			r, err = f.str()
			s.Reason = snapshot.Reason(r)
		case 26:
			var p string
			p, err = f.str()
			s.Precision = snapshot.Precision(p)
		case 27:
			s.PeakBytes, err = f.int()
		}
		return err
	})
}

func (f field) time() (time.Time, error) {
	var t time.Time
	raw, err := f.bytes()
	if err != nil {
		return t, err
	}
	if err := t.UnmarshalBinary(raw); err != nil {
		return t, fmt.Errorf("%w: snapshot time: %v", ErrCorrupt, err)
	}
	return t, nil
}

func (f field) trace() (*snapshot.Trace, error) {
	m, err := f.bytes()
	if err != nil {
		return nil, err
	}
	t := new(snapshot.Trace)
	err = walk(m, func(f field) error {
		var err error
		switch f.num {
		case 1:
			t.Value, err = f.float()
		case 2:
			t.StdErr, err = f.float()
		case 3:
			t.Probes, err = f.intn()
		case 4:
			t.Method, err = f.str()
		case 5:
			var mb []byte
			if mb, err = f.bytes(); err != nil {
				return err
			}
			var bt snapshot.BlockTrace
			err = walk(mb, func(f field) error {
				var err error
				switch f.num {
				case 1:
					bt.Name, err = f.str()
				case 2:
					bt.Value, err = f.float()
				case 3:
					bt.StdErr, err = f.float()
				}
				return err
			})
			t.Blocks = append(t.Blocks, bt)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

func (f field) esd() (*snapshot.ESD, error) {
	m, err := f.bytes()
	if err != nil {
		return nil, err
	}
	e := new(snapshot.ESD)
	err = walk(m, func(f field) error {
		var err error
		switch f.num {
		case 1:
			e.Nodes, err = f.floats()
		case 2:
			e.Weights, err = f.floats()
		case 3:
			e.Probes, err = f.intn()
		case 4:
			e.Steps, err = f.intn()
		case 5:
			e.Sigma2, err = f.float()
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return e, nil
}

// field is one decoded wire field: its number, type, and either the varint
// or fixed64 value (u) or the length-delimited payload (raw).
type field struct {
	num protowire.Number
	typ protowire.Type
	u   uint64
	raw []byte
}

// walk calls fn for every field of message b; unknown field numbers are the
// caller's to ignore, malformed framing is ErrCorrupt.
func walk(b []byte, fn func(field) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: bad field tag: %v", ErrCorrupt, protowire.ParseError(n))
		}
		b = b[n:]
		f := field{num: num, typ: typ}
		switch typ {
		case protowire.VarintType:
			f.u, n = protowire.ConsumeVarint(b)
		case protowire.Fixed64Type:
			f.u, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			f.raw, n = protowire.ConsumeBytes(b)
		default:
			// Groups and fixed32 are never written; skip them if a future
			// version does.
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("%w: field %d: %v", ErrCorrupt, num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := fn(f); err != nil {
			return err
		}
	}
	return nil
}

func (f field) want(t protowire.Type) error {
	if f.typ != t {
		return fmt.Errorf("%w: field %d has wire type %d, want %d", ErrCorrupt, f.num, f.typ, t)
	}
	return nil
}

func (f field) str() (string, error) {
	if err := f.want(protowire.BytesType); err != nil {
		return "", err
	}
	return string(f.raw), nil
}

func (f field) bytes() ([]byte, error) {
	return f.raw, f.want(protowire.BytesType)
}

func (f field) int() (int64, error) {
	return protowire.DecodeZigZag(f.u), f.want(protowire.VarintType)
}

func (f field) intn() (int, error) {
	v, err := f.int()
	if err == nil && int64(int(v)) != v {
		err = fmt.Errorf("%w: field %d: %d overflows int", ErrCorrupt, f.num, v)
	}
	return int(v), err
}

func (f field) bool() (bool, error) {
	return protowire.DecodeBool(f.u), f.want(protowire.VarintType)
}

func (f field) float() (float64, error) {
	return math.Float64frombits(f.u), f.want(protowire.Fixed64Type)
}

func (f field) floats() ([]float64, error) {
	if err := f.want(protowire.BytesType); err != nil {
		return nil, err
	}
	if len(f.raw)%8 != 0 {
		return nil, fmt.Errorf("%w: field %d: packed doubles of %d bytes", ErrCorrupt, f.num, len(f.raw))
	}
	v := make([]float64, len(f.raw)/8)
	for i := range v {
		u, _ := protowire.ConsumeFixed64(f.raw[8*i:])
		v[i] = math.Float64frombits(u)
	}
	return v, nil
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendInt(b []byte, num protowire.Number, v int64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, protowire.EncodeZigZag(v))
}

// appendFloat writes v's raw bits, skipping only +0 so that -0 and every NaN
// payload survive.
func appendFloat(b []byte, num protowire.Number, v float64) []byte {
	u := math.Float64bits(v)
	if u == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, u)
}

// appendFloats writes v as packed doubles; a non-nil empty slice is kept so
// that it decodes as empty rather than nil.
func appendFloats(b []byte, num protowire.Number, v []float64) []byte {
	if v == nil {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return appendPacked(b, v)
}

func appendPacked(b []byte, v []float64) []byte {
	b = protowire.AppendVarint(b, uint64(8*len(v)))
	for _, x := range v {
		b = protowire.AppendFixed64(b, math.Float64bits(x))
	}
	return b
}
