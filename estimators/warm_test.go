package estimators

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"reflect"
	"testing"

	"github.com/hessmon/hessmon/hvp"
)

// warmFixture runs every estimator once and returns the bundled state.
func warmFixture(t testing.TB) (*testMatrix, Warm, []Block) {
	t.Helper()
	const n = 60
	tm := newTestMatrix(hessianSpectrum(n, 1), 2)
	ctx := context.Background()
	ev, ew, err := TopEigen(ctx, tm.op, EigenOptions{K: 3, KeepVectors: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	blocks := []Block{{"w1", 0, 20}, {"b1", 20, 40}}
	_, tw, err := Trace(ctx, tm.op, TraceOptions{Deflate: ev.Vectors, Blocks: blocks, MaxHVPs: 23, RelTol: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, sw, err := ESD(ctx, tm.op, ESDOptions{Probes: 2, Steps: 5, Seed: 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tm, Warm{Eigen: ew, Trace: tw, ESD: sw}, blocks
}

func TestWarmRoundTrip(t *testing.T) {
	tm, w, blocks := warmFixture(t)
	data, err := w.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var got Warm
	if err := got.UnmarshalBinary(data); err != nil {
		t.Fatal(err)
	}
	// Everything survives exactly except the eigenvectors, which are
	// stored as float32.
	want := w
	want.Eigen = rounded32(w.Eigen)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip changed the state:\n got %+v\nwant %+v", got.Trace, w.Trace)
	}
	if v := w.Eigen.Vectors[0]; reflect.DeepEqual(got.Eigen.Vectors[0], v) {
		t.Error("eigenvectors kept float64 bits: not stored as float32")
	}
	// The decoded state drives the next solve like the original: as warm,
	// in as many HVPs, to the same eigenvalues within the tolerance.
	ctx := context.Background()
	p, _ := tm.perturbed(1e-4, 1)
	ev1, _, err := TopEigen(ctx, p, EigenOptions{K: 3, KeepVectors: true}, w.Eigen)
	if err != nil {
		t.Fatal(err)
	}
	ev2, _, err := TopEigen(ctx, p, EigenOptions{K: 3, KeepVectors: true}, got.Eigen)
	if err != nil {
		t.Fatal(err)
	}
	if !ev2.Warm || ev2.HVPs != ev1.HVPs {
		t.Errorf("decoded eigen warm state: warm %v in %d HVPs, the original warm %v in %d", ev2.Warm, ev2.HVPs, ev1.Warm, ev1.HVPs)
	}
	for i := range ev1.Values {
		if d := math.Abs(ev1.Values[i] - ev2.Values[i]); d > 1e-6*math.Abs(ev1.Values[0]) {
			t.Errorf("λ%d = %v from the decoded state, %v from the original", i+1, ev2.Values[i], ev1.Values[i])
		}
	}
	opt := TraceOptions{Deflate: ev1.Vectors, Blocks: blocks, MaxHVPs: 23, RelTol: -1, Seed: 1}
	t1, _, err := Trace(ctx, p, opt, w.Trace)
	if err != nil {
		t.Fatal(err)
	}
	t2, _, err := Trace(ctx, p, opt, got.Trace)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(t1, t2) || t2.Reused == 0 {
		t.Errorf("decoded trace warm state behaves differently (reused %d)", t2.Reused)
	}
	// Empty bundle.
	empty, err := (&Warm{}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var e Warm
	if err := e.UnmarshalBinary(empty); err != nil || e.Eigen != nil || e.Trace != nil || e.ESD != nil {
		t.Errorf("empty bundle: %+v, %v", e, err)
	}
}

// rounded32 is ew with its vectors rounded to float32, as HMW2 stores them.
func rounded32(ew *EigenWarm) *EigenWarm {
	out := &EigenWarm{Values: ew.Values}
	for _, v := range ew.Vectors {
		r := make([]float64, len(v))
		for i, x := range v {
			r[i] = float64(float32(x))
		}
		out.Vectors = append(out.Vectors, r)
	}
	return out
}

// TestWarmReadsV1: states written before eigenvectors were stored as
// float32 (HMW1) still load, exactly; the new encoding is about half the
// size for the vectors.
func TestWarmReadsV1(t *testing.T) {
	_, w, _ := warmFixture(t)
	old, err := w.marshal(warmMagicV1)
	if err != nil {
		t.Fatal(err)
	}
	var got Warm
	if err := got.UnmarshalBinary(old); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, w) {
		t.Fatal("HMW1 state did not load exactly")
	}
	cur, err := w.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	vecBytes := 0
	for _, v := range w.Eigen.Vectors {
		vecBytes += 4 * len(v)
	}
	if len(old)-len(cur) != vecBytes {
		t.Errorf("HMW2 is %d bytes, HMW1 %d: want %d fewer (4 per eigenvector entry)", len(cur), len(old), vecBytes)
	}
}

func TestWarmRejectsGarbage(t *testing.T) {
	_, w, _ := warmFixture(t)
	data, err := w.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	bad := [][]byte{
		nil,
		[]byte("HMW1"),
		[]byte("not a warm state at all"),
		data[:len(data)-1],
		data[:len(data)/2],
		append(bytes.Clone(data), 0),
	}
	flipped := bytes.Clone(data)
	flipped[len(flipped)/3] ^= 0x40
	bad = append(bad, flipped)
	for i, b := range bad {
		var got Warm
		if err := got.UnmarshalBinary(b); !errors.Is(err, ErrBadWarm) {
			t.Errorf("case %d: err = %v, want ErrBadWarm", i, err)
		}
	}
	// A checksum-valid encoding of an inconsistent state is rejected too.
	bad2 := Warm{Eigen: &EigenWarm{Values: []float64{1, 2}, Vectors: [][]float64{{1, 0}, {0}}}}
	enc, err := bad2.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var got Warm
	if err := got.UnmarshalBinary(enc); !errors.Is(err, ErrBadWarm) {
		t.Errorf("ragged eigenvectors: %v", err)
	}
}

func FuzzWarmUnmarshal(f *testing.F) {
	_, w, _ := warmFixture(f)
	data, err := w.MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	if old, err := w.marshal(warmMagicV1); err == nil {
		f.Add(old)
	}
	small, _ := (&Warm{ESD: &ESDWarm{Dim: 3, Seed: 9}}).MarshalBinary()
	f.Add(small)
	f.Add([]byte("HMW1\x07"))
	f.Fuzz(func(t *testing.T, b []byte) {
		// Raw bytes, and the same bytes with their checksum repaired so
		// that the decoder proper is exercised too.
		fixed := bytes.Clone(b)
		if len(fixed) >= 4 {
			fixed = binary.LittleEndian.AppendUint32(fixed[:len(fixed)-4], crc32.ChecksumIEEE(fixed[:len(fixed)-4]))
		}
		for _, in := range [][]byte{b, fixed} {
			var w Warm
			if err := w.UnmarshalBinary(in); err != nil {
				if !errors.Is(err, ErrBadWarm) {
					t.Fatalf("error %v does not wrap ErrBadWarm", err)
				}
				continue
			}
			// Whatever is accepted encodes back to the same bytes in its
			// own version.
			again, err := w.marshal(string(in[:len(warmMagic)]))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again, in) {
				t.Fatalf("accepted input does not round-trip")
			}
		}
	})
}

func TestHVPCountsAreHonest(t *testing.T) {
	tm := newTestMatrix(hessianSpectrum(80, 2), 3)
	ctx := context.Background()
	c := &hvp.Counting{Op: tm.op}
	ev, ew, err := TopEigen(ctx, c, EigenOptions{K: 4, KeepVectors: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Count() != ev.HVPs {
		t.Errorf("TopEigen reports %d HVPs, made %d", ev.HVPs, c.Count())
	}
	before := c.Count()
	ev2, _, err := TopEigen(ctx, c, EigenOptions{K: 4}, ew)
	if err != nil {
		t.Fatal(err)
	}
	if c.Count()-before != ev2.HVPs {
		t.Errorf("warm TopEigen reports %d HVPs, made %d", ev2.HVPs, c.Count()-before)
	}
	before = c.Count()
	tr, _, err := Trace(ctx, c, TraceOptions{Deflate: ev.Vectors, MaxHVPs: 30, RelTol: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Count()-before != tr.HVPs || tr.HVPs != 30 {
		t.Errorf("Trace reports %d HVPs, made %d", tr.HVPs, c.Count()-before)
	}
	before = c.Count()
	sk, _, err := Trace(ctx, c, TraceOptions{SketchRank: 3, MaxHVPs: 20, RelTol: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Count()-before != sk.HVPs {
		t.Errorf("sketched Trace reports %d HVPs, made %d", sk.HVPs, c.Count()-before)
	}
	before = c.Count()
	es, _, err := ESD(ctx, c, ESDOptions{Probes: 2, Steps: 15}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Count()-before != es.HVPs {
		t.Errorf("ESD reports %d HVPs, made %d", es.HVPs, c.Count()-before)
	}
	before = c.Count()
	pw, err := PowerIteration(ctx, c, PowerOptions{K: 2})
	if err != nil {
		t.Fatal(err)
	}
	if c.Count()-before != pw.HVPs {
		t.Errorf("PowerIteration reports %d HVPs, made %d", pw.HVPs, c.Count()-before)
	}
}
