// Package torchref writes what PyTorch needs to reproduce one of hessmon's
// HVPs, for `hessmon bench hvp --vs-torch`: bench/torch_hvp.py reads it.
package torchref

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"

	"github.com/nlpodyssey/safetensors"

	"github.com/hessmon/hessmon/trainer"
)

// Save writes the parameters of net under their PyTorch names, the batch as
// "input" [N, features] and "labels" [N], the direction "v" and hessmon's
// "hv", all float64, to a safetensors file at path.
func Save(path string, net *trainer.Network, b trainer.Batch, v, hv []float64) error {
	if len(v) != net.Dim() || len(hv) != net.Dim() {
		return fmt.Errorf("torchref: reference vectors have lengths %d and %d, want %d", len(v), len(hv), net.Dim())
	}
	if b.X == nil || len(b.Labels) != b.X.N {
		return fmt.Errorf("torchref: the reference batch needs labels for every sample")
	}
	views := map[string]safetensors.TensorView{}
	var err error
	put := func(name string, shape []int, x []float64) {
		if err != nil {
			return
		}
		buf := make([]byte, 8*len(x))
		for i, f := range x {
			binary.LittleEndian.PutUint64(buf[8*i:], math.Float64bits(f))
		}
		s := make([]uint64, len(shape))
		for i, d := range shape {
			s[i] = uint64(d)
		}
		views[name], err = safetensors.NewTensorView(safetensors.F64, s, buf)
	}
	params := net.Params()
	for _, p := range net.ParamInfo() {
		put(p.Name, p.Shape, params[p.Offset:p.Offset+p.Len])
	}
	labels := make([]float64, len(b.Labels))
	for i, l := range b.Labels {
		labels[i] = float64(l)
	}
	size := b.X.Shape.Size()
	put("input", []int{b.X.N, size}, b.X.Data[:b.X.N*size])
	put("labels", []int{len(labels)}, labels)
	put("v", []int{len(v)}, v)
	put("hv", []int{len(hv)}, hv)
	if err != nil {
		return fmt.Errorf("torchref: %w", err)
	}
	out, err := safetensors.Serialize(views, map[string]string{"model": net.String(), "format": "pt"})
	if err != nil {
		return fmt.Errorf("torchref: encoding safetensors: %w", err)
	}
	if err := os.WriteFile(path, out, 0o644); err != nil {
		return fmt.Errorf("torchref: %w", err)
	}
	return nil
}
