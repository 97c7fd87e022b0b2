package trainer

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"slices"

	"github.com/nlpodyssey/safetensors"
)

// LoadSafetensors reads parameters (and BatchNorm running statistics, when
// present) from a .safetensors file written by PyTorch's
// safetensors.torch.save_file(model.state_dict()). Names and shapes must
// match the network's (fc1.weight [out,in], …); F32, F64 and F16/BF16-free
// files are accepted. Every parameter tensor must be present; extra entries
// such as num_batches_tracked are ignored.
func LoadSafetensors(net *Network, path string) error {
	buf, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("trainer: weights: %w", err)
	}
	st, err := safetensors.Deserialize(buf)
	if err != nil {
		return fmt.Errorf("trainer: %s is not a valid safetensors file: %w", path, err)
	}
	load := func(info []ParamInfo, dst []float64, required bool) error {
		for _, p := range info {
			tv, ok := st.Tensor(p.Name)
			if !ok {
				if required {
					return fmt.Errorf("trainer: %s has no tensor %q (the model %s needs it; names follow PyTorch's state_dict)", path, p.Name, net)
				}
				continue
			}
			shape := make([]int, len(tv.Shape()))
			for i, d := range tv.Shape() {
				shape[i] = int(d)
			}
			if !slices.Equal(shape, p.Shape) {
				return fmt.Errorf("trainer: %s: tensor %q has shape %v, model expects %v", path, p.Name, shape, p.Shape)
			}
			out := dst[p.Offset : p.Offset+p.Len]
			data := tv.Data()
			switch tv.DType() {
			case safetensors.F64:
				for i := range out {
					out[i] = math.Float64frombits(binary.LittleEndian.Uint64(data[8*i:]))
				}
			case safetensors.F32:
				for i := range out {
					out[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:])))
				}
			default:
				return fmt.Errorf("trainer: %s: tensor %q has dtype %v; save it as float32 or float64", path, p.Name, tv.DType())
			}
		}
		return nil
	}
	if err := load(net.ParamInfo(), net.params, true); err != nil {
		return err
	}
	return load(net.BufferInfo(), net.buffers, false)
}

// f64View is a float64 tensor for safetensors serialisation.
type f64View struct {
	shape []uint64
	data  []byte
}

func (v f64View) DType() safetensors.DType { return safetensors.F64 }
func (v f64View) Shape() []uint64          { return v.shape }
func (v f64View) Data() []byte             { return v.data }
func (v f64View) DataLen() uint64          { return uint64(len(v.data)) }

// SaveSafetensors writes parameters and buffers as float64 tensors with
// PyTorch names and shapes, readable by safetensors.torch.load_file.
func SaveSafetensors(net *Network, path string) error {
	views := map[string]f64View{}
	add := func(info []ParamInfo, src []float64) {
		for _, p := range info {
			b := make([]byte, 8*p.Len)
			for i, x := range src[p.Offset : p.Offset+p.Len] {
				binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(x))
			}
			shape := make([]uint64, len(p.Shape))
			for i, d := range p.Shape {
				shape[i] = uint64(d)
			}
			views[p.Name] = f64View{shape: shape, data: b}
		}
	}
	add(net.ParamInfo(), net.params)
	add(net.BufferInfo(), net.buffers)
	out, err := safetensors.Serialize(views, map[string]string{"model": net.String(), "format": "pt"})
	if err != nil {
		return fmt.Errorf("trainer: encoding safetensors: %w", err)
	}
	return os.WriteFile(path, out, 0o644)
}
