package trainer

import (
	"fmt"
	"strconv"
	"strings"
)

// MLPConfig describes a multi-layer perceptron: Sizes[0] inputs, then hidden
// layers, then Sizes[len-1] outputs. With BN, each hidden Linear is followed
// by BatchNorm1d before the activation.
type MLPConfig struct {
	Sizes      []int
	Activation Activation
	BN         bool
}

// NewMLP builds an MLP whose parameters are named fc1.weight, fc1.bias,
// bn1.weight, bn1.bias, fc2.weight, …, as a PyTorch module with attributes
// fc1, bn1, fc2, … would name them.
func NewMLP(cfg MLPConfig, seed uint64) (*Network, error) {
	if len(cfg.Sizes) < 2 {
		return nil, fmt.Errorf("trainer: MLP needs at least input and output sizes, got %v", cfg.Sizes)
	}
	var layers []Named
	for i := 1; i < len(cfg.Sizes); i++ {
		layers = append(layers, Named{fmt.Sprintf("fc%d", i), &Linear{In: cfg.Sizes[i-1], Out: cfg.Sizes[i]}})
		if i == len(cfg.Sizes)-1 {
			break
		}
		if cfg.BN {
			layers = append(layers, Named{fmt.Sprintf("bn%d", i), &BatchNorm{C: cfg.Sizes[i]}})
		}
		layers = append(layers, Named{"", &Act{Fn: cfg.Activation}})
	}
	desc := "mlp " + joinInts(cfg.Sizes, "-") + " " + cfg.Activation.String()
	if cfg.BN {
		desc += " bn"
	}
	return NewNetwork(desc, Shape{H: 1, W: 1, C: cfg.Sizes[0]}, seed, layers...)
}

func joinInts(xs []int, sep string) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, sep)
}

// ParseSizes reads "128,128" into []int{128, 128}.
func ParseSizes(s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("bad layer size %q: want a positive integer", f)
		}
		out = append(out, v)
	}
	return out, nil
}

// CNNConfig is a small LeNet-style network: for each entry of Channels a
// 3×3 convolution (padding 1), optional BatchNorm2d, the activation and a
// 2×2 max pool; then a hidden Linear layer and the classifier.
type CNNConfig struct {
	In         Shape
	Channels   []int // e.g. {8, 16}
	Hidden     int   // e.g. 32
	Classes    int
	Activation Activation
	BN         bool
}

// NewCNN builds the CNN. Names: conv1, bn1, conv2, …, fc1, fc2.
func NewCNN(cfg CNNConfig, seed uint64) (*Network, error) {
	if len(cfg.Channels) == 0 || cfg.Hidden <= 0 || cfg.Classes <= 0 {
		return nil, fmt.Errorf("trainer: CNN needs channels, a hidden size and classes, got %+v", cfg)
	}
	var layers []Named
	in := cfg.In.C
	for i, c := range cfg.Channels {
		layers = append(layers, Named{fmt.Sprintf("conv%d", i+1), &Conv2D{In: in, Out: c, Kernel: 3, Padding: 1, NoBias: cfg.BN}})
		if cfg.BN {
			layers = append(layers, Named{fmt.Sprintf("bn%d", i+1), &BatchNorm{C: c}})
		}
		layers = append(layers, Named{"", &Act{Fn: cfg.Activation}}, Named{"", &MaxPool2D{K: 2}})
		in = c
	}
	h, w := cfg.In.H, cfg.In.W
	for range cfg.Channels {
		h, w = h/2, w/2
	}
	layers = append(layers,
		Named{"", Flatten{}},
		Named{"fc1", &Linear{In: in * h * w, Out: cfg.Hidden}},
		Named{"", &Act{Fn: cfg.Activation}},
		Named{"fc2", &Linear{In: cfg.Hidden, Out: cfg.Classes}},
	)
	desc := fmt.Sprintf("cnn %s-%d %s", joinInts(cfg.Channels, "-"), cfg.Hidden, cfg.Activation)
	if cfg.BN {
		desc += " bn"
	}
	return NewNetwork(desc, cfg.In, seed, layers...)
}

// ResNetConfig is a small ResNet in the style of He et al.'s CIFAR ResNets,
// scaled for MNIST on CPUs: a 3×3 stem, a 2×2 average pool, Stages stages of
// Blocks basic blocks (two 3×3 convolutions each), the width doubling and
// the resolution halving at every stage after the first, global average
// pooling and a linear classifier. Depth (conv + fc layers) is
// 2 + 2·Stages·Blocks.
//
// BN toggles BatchNorm2d after every convolution; Skip toggles the residual
// connections, the two factors the PyHessian paper studies.
type ResNetConfig struct {
	In      Shape
	Classes int
	Width   int // channels of the first stage, e.g. 8
	Blocks  int // basic blocks per stage, e.g. 1..3
	Stages  int // default 2
	BN      bool
	Skip    bool
}

// Depth is the number of weight layers.
func (c ResNetConfig) Depth() int { return 2 + 2*c.stages()*c.Blocks }

func (c ResNetConfig) stages() int {
	if c.Stages <= 0 {
		return 2
	}
	return c.Stages
}

// NewResNet builds the ResNet with torchvision-like names: conv1, bn1,
// layer1.0.conv1, layer1.0.bn1, layer1.0.conv2, layer1.0.bn2,
// layer2.0.shortcut.0 (1×1 conv), layer2.0.shortcut.1 (BN), …, fc.
func NewResNet(cfg ResNetConfig, seed uint64) (*Network, error) {
	if cfg.Width <= 0 || cfg.Blocks <= 0 || cfg.Classes <= 0 {
		return nil, fmt.Errorf("trainer: ResNet needs width, blocks and classes > 0, got %+v", cfg)
	}
	conv := func(in, out, stride, k int) *Conv2D {
		return &Conv2D{In: in, Out: out, Kernel: k, Stride: stride, Padding: k / 2, NoBias: cfg.BN}
	}
	layers := []Named{{"conv1", conv(cfg.In.C, cfg.Width, 1, 3)}}
	if cfg.BN {
		layers = append(layers, Named{"bn1", &BatchNorm{C: cfg.Width}})
	}
	layers = append(layers, Named{"", &Act{Fn: ReLU}}, Named{"", &AvgPool2D{K: 2}})
	in := cfg.Width
	for s := 0; s < cfg.stages(); s++ {
		out := cfg.Width << s
		for b := 0; b < cfg.Blocks; b++ {
			stride := 1
			if s > 0 && b == 0 {
				stride = 2
			}
			body := []Named{{"conv1", conv(in, out, stride, 3)}}
			if cfg.BN {
				body = append(body, Named{"bn1", &BatchNorm{C: out}})
			}
			body = append(body, Named{"", &Act{Fn: ReLU}}, Named{"conv2", conv(out, out, 1, 3)})
			if cfg.BN {
				body = append(body, Named{"bn2", &BatchNorm{C: out}})
			}
			res := &Residual{Body: Seq(body...), NoSkip: !cfg.Skip}
			if cfg.Skip && (stride != 1 || in != out) {
				sc := []Named{{"0", conv(in, out, stride, 1)}}
				if cfg.BN {
					sc = append(sc, Named{"1", &BatchNorm{C: out}})
				}
				res.Shortcut = Seq(sc...)
			}
			layers = append(layers,
				Named{fmt.Sprintf("layer%d.%d", s+1, b), res},
				Named{"", &Act{Fn: ReLU}})
			in = out
		}
	}
	layers = append(layers, Named{"", &AvgPool2D{K: 0}}, Named{"", Flatten{}}, Named{"fc", &Linear{In: in, Out: cfg.Classes}})
	desc := fmt.Sprintf("resnet%d w%d", cfg.Depth(), cfg.Width)
	if cfg.BN {
		desc += " bn"
	} else {
		desc += " nobn"
	}
	if cfg.Skip {
		desc += " skip"
	} else {
		desc += " noskip"
	}
	return NewNetwork(desc, cfg.In, seed, layers...)
}
