package trainer

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"

	"github.com/nlpodyssey/safetensors"
)

// SaveHVPReference writes what another framework needs to reproduce one
// HVP: the parameters under their PyTorch names, the batch as "input"
// [N, features] and "labels" [N], the direction "v" and hessmon's "hv",
// all float64. bench/torch_hvp.py reads it.
func SaveHVPReference(path string, net *Network, b Batch, v, hv []float64) error {
	if len(v) != net.Dim() || len(hv) != net.Dim() {
		return fmt.Errorf("trainer: reference vectors have lengths %d and %d, want %d", len(v), len(hv), net.Dim())
	}
	if b.X == nil || len(b.Labels) != b.X.N {
		return fmt.Errorf("trainer: the reference batch needs labels for every sample")
	}
	views := map[string]f64View{}
	put := func(name string, shape []int, src []float64) {
		buf := make([]byte, 8*len(src))
		for i, x := range src {
			binary.LittleEndian.PutUint64(buf[8*i:], math.Float64bits(x))
		}
		s := make([]uint64, len(shape))
		for i, d := range shape {
			s[i] = uint64(d)
		}
		views[name] = f64View{shape: s, data: buf}
	}
	for _, p := range net.ParamInfo() {
		put(p.Name, p.Shape, net.params[p.Offset:p.Offset+p.Len])
	}
	labels := make([]float64, len(b.Labels))
	for i, l := range b.Labels {
		labels[i] = float64(l)
	}
	put("input", []int{b.X.N, b.X.Shape.Size()}, b.X.Data[:b.X.N*b.X.Shape.Size()])
	put("labels", []int{len(labels)}, labels)
	put("v", []int{len(v)}, v)
	put("hv", []int{len(hv)}, hv)
	out, err := safetensors.Serialize(views, map[string]string{"model": net.String(), "format": "pt"})
	if err != nil {
		return fmt.Errorf("trainer: encoding safetensors: %w", err)
	}
	if err := os.WriteFile(path, out, 0o644); err != nil {
		return fmt.Errorf("trainer: %w", err)
	}
	return nil
}
