package torchref

import (
	"encoding/binary"
	"math"
	"path/filepath"
	"slices"
	"testing"

	"os"

	"github.com/nlpodyssey/safetensors"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/trainer"
)

// TestSaveRoundTrip reads the file back and finds every tensor with its
// shape and values.
func TestSaveRoundTrip(t *testing.T) {
	net, err := trainer.NewMLP(trainer.MLPConfig{Sizes: []int{4, 3, 2}, Activation: trainer.Tanh}, 1)
	if err != nil {
		t.Fatal(err)
	}
	b := trainer.HeadBatch(data.Synthetic(5, net.InShape(), 2, 1), 0)
	n := net.Dim()
	v, hv := make([]float64, n), make([]float64, n)
	for i := range v {
		v[i], hv[i] = float64(i)-2.5, 1/float64(i+1)
	}
	path := filepath.Join(t.TempDir(), "ref.safetensors")
	if err := Save(path, net, b, v, hv); err != nil {
		t.Fatal(err)
	}
	buf, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := safetensors.Deserialize(buf)
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, shape []uint64, want []float64) {
		tv, ok := st.Tensor(name)
		if !ok {
			t.Fatalf("no tensor %q", name)
		}
		if tv.DType() != safetensors.F64 || !slices.Equal(tv.Shape(), shape) {
			t.Fatalf("%s: %v %v, want F64 %v", name, tv.DType(), tv.Shape(), shape)
		}
		for i, w := range want {
			if got := math.Float64frombits(binary.LittleEndian.Uint64(tv.Data()[8*i:])); got != w {
				t.Fatalf("%s[%d] = %v, want %v", name, i, got, w)
			}
		}
	}
	params := net.Params()
	for _, p := range net.ParamInfo() {
		shape := make([]uint64, len(p.Shape))
		for i, d := range p.Shape {
			shape[i] = uint64(d)
		}
		check(p.Name, shape, params[p.Offset:p.Offset+p.Len])
	}
	labels := make([]float64, len(b.Labels))
	for i, l := range b.Labels {
		labels[i] = float64(l)
	}
	check("input", []uint64{5, 4}, b.X.Data)
	check("labels", []uint64{5}, labels)
	check("v", []uint64{uint64(n)}, v)
	check("hv", []uint64{uint64(n)}, hv)
	if err := Save(path, net, b, v[:1], hv); err == nil {
		t.Error("a short v: no error")
	}
}
