package store

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/hessmon/hessmon/snapshot"
)

// sameSnapshot compares snapshots with NaN equal to NaN and times by instant.
var sameSnapshot = cmpopts.EquateNaNs()

// fullSnapshot has every field set, NaN, ±Inf and -0 included.
func fullSnapshot(run string, step int64) snapshot.Snapshot {
	return snapshot.Snapshot{
		Run:                run,
		Step:               step,
		Time:               time.Date(2025, 3, 4, 5, 6, 7, 890, time.FixedZone("CET", 3600)),
		Loss:               math.NaN(),
		LearningRate:       0.05,
		Optimizer:          "sgd",
		Beta1:              0.9,
		SharpnessThreshold: 40,
		SharpnessRatio:     math.Inf(1),
		Eigenvalues:        []float64{12.5, -3, math.Copysign(0, -1)},
		Residuals:          []float64{1e-9, math.Inf(-1), math.NaN()},
		Eigenvectors:       [][]float64{{1, 0}, {0, -1}, {}},
		Trace: &snapshot.Trace{
			Value: 101.5, StdErr: 2.25, Probes: 30, Method: "hutch++",
			Blocks: []snapshot.BlockTrace{{Name: "fc1.weight", Value: 90, StdErr: 2}, {Name: "fc1.bias", Value: 11.5, StdErr: math.NaN()}},
		},
		ESD: &snapshot.ESD{
			Nodes: []float64{-1, 0.5, 12}, Weights: []float64{0.25, 0.5, 0.25},
			Probes: 1, Steps: 3, Sigma2: 1e-5,
		},
		HVPs:    123,
		Seconds: 0.75,
		Warm:    true,
		Failure: "nan",
		Detail:  "loss was NaN",
	}
}

func TestCodecRoundTrip(t *testing.T) {
	for _, want := range []snapshot.Snapshot{
		{},
		{Run: "r", Step: 1, Eigenvalues: []float64{}},
		fullSnapshot("run-1", 1<<40),
	} {
		b, err := EncodeSnapshot(want)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeSnapshot(b)
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(want, got, sameSnapshot); d != "" {
			t.Errorf("round trip (-want +got):\n%s", d)
		}
		if _, off := got.Time.Zone(); !want.Time.IsZero() && off != 3600 {
			t.Errorf("zone offset %d lost", off)
		}
	}
}

// TestCodecCoversEveryField fills every field of Snapshot by reflection, so
// that a field added to snapshot.Snapshot without a codec entry fails here.
func TestCodecCoversEveryField(t *testing.T) {
	var want snapshot.Snapshot
	n := 0
	fill(reflect.ValueOf(&want).Elem(), &n)
	b, err := EncodeSnapshot(want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeSnapshot(b)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got, sameSnapshot); d != "" {
		t.Errorf("field lost in the codec (-want +got):\n%s", d)
	}
}

// fill sets v to distinct non-zero values, recursively.
func fill(v reflect.Value, n *int) {
	*n++
	if v.Type() == reflect.TypeFor[time.Time]() {
		v.Set(reflect.ValueOf(time.Unix(int64(*n)*1000, int64(*n)).UTC()))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(strings.Repeat("x", *n))
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(*n))
	case reflect.Float64:
		v.SetFloat(float64(*n) + 0.5)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), n)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := range 2 {
			fill(v.Index(i), n)
		}
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
	case reflect.Struct:
		for i := range v.NumField() {
			fill(v.Field(i), n)
		}
	default:
		panic("fill: unhandled kind " + v.Kind().String())
	}
}

func TestDecodeCorrupt(t *testing.T) {
	good, err := EncodeSnapshot(fullSnapshot("r", 3))
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][]byte{
		"empty":         nil,
		"version":       append([]byte{99}, good[1:]...),
		"truncated":     good[:len(good)/2],
		"bad tag":       {encodingVersion, 0x00},
		"wrong type":    {encodingVersion, 0x08 | 0, 1},           // field 1 (run) as varint
		"odd packed":    {encodingVersion, 10<<3 | 2, 3, 1, 2, 3}, // 3 bytes of doubles
		"long bytes":    {encodingVersion, 1<<3 | 2, 0xff, 0xff, 0x03},
		"bad time":      {encodingVersion, 3<<3 | 2, 2, 9, 9},
		"long varint":   {encodingVersion, 15 << 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"nested broken": {encodingVersion, 13<<3 | 2, 2, 1<<3 | 1, 0},
	}
	for name, b := range cases {
		if _, err := DecodeSnapshot(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: got %v, want ErrCorrupt", name, err)
		}
	}
	// Unknown fields are skipped, for forward compatibility.
	extra := protowire.AppendVarint(append([]byte{}, good...), 100<<3|0)
	extra = append(extra, 7)
	if _, err := DecodeSnapshot(extra); err != nil {
		t.Errorf("unknown field: %v", err)
	}
}

// FuzzDecodeSnapshot checks that no input makes the decoder panic, and that
// whatever it accepts re-encodes to the same snapshot.
func FuzzDecodeSnapshot(f *testing.F) {
	for _, s := range []snapshot.Snapshot{{}, fullSnapshot("run", 7), {Run: "x", Step: 1, Failure: "panic"}} {
		b, err := EncodeSnapshot(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{encodingVersion, 13<<3 | 2, 4, 5<<3 | 2, 2, 1<<3 | 2, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeSnapshot(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		b2, err := EncodeSnapshot(s)
		if err != nil {
			// A decoded time that time.MarshalBinary refuses is the only
			// way to get here.
			t.Skip(err)
		}
		s2, err := DecodeSnapshot(b2)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if d := cmp.Diff(s, s2, sameSnapshot); d != "" {
			t.Fatalf("re-encode changed the snapshot (-first +second):\n%s", d)
		}
	})
}
