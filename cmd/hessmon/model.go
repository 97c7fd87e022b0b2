package main

import (
	"flag"
	"strings"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/trainer"
)

// modelFlags are the architecture and data flags shared by train, analyze
// and bench.
type modelFlags struct {
	model    string
	hidden   string
	act      string
	bn       bool
	width    int
	blocks   int
	noSkip   bool
	channels string
	data     string
	seed     uint64
}

func (m *modelFlags) register(fs *flag.FlagSet, defHidden, defAct string) {
	fs.StringVar(&m.model, "model", "mlp", "model family: mlp, cnn or resnet")
	fs.StringVar(&m.hidden, "hidden", defHidden, "mlp: hidden layer sizes; cnn: the hidden fc size (first value)")
	fs.StringVar(&m.act, "act", defAct, "activation for mlp and cnn: relu, tanh or gelu")
	fs.BoolVar(&m.bn, "bn", false, "add BatchNorm layers")
	fs.IntVar(&m.width, "width", 8, "resnet: channels of the first stage")
	fs.IntVar(&m.blocks, "blocks", 1, "resnet: basic blocks per stage (depth = 2 + 4·blocks)")
	fs.BoolVar(&m.noSkip, "no-skip", false, "resnet: remove the residual connections")
	fs.StringVar(&m.channels, "channels", "8,16", "cnn: conv channels per stage")
	fs.StringVar(&m.data, "data", "mnist", "data set: mnist (from the GoMNIST module, or $HESSMON_MNIST_DIR) or synthetic")
	fs.Uint64Var(&m.seed, "seed", 1, "seed for initialisation, batching and probes")
}

// build makes the network for inputs of shape in with the given classes.
func (m *modelFlags) build(in trainer.Shape, classes int) (*trainer.Network, error) {
	act, err := trainer.ParseActivation(m.act)
	if err != nil {
		return nil, usageErr("--act: %v", err)
	}
	switch strings.ToLower(m.model) {
	case "mlp":
		hidden, err := trainer.ParseSizes(m.hidden)
		if err != nil {
			return nil, usageErr("--hidden: %v", err)
		}
		sizes := append([]int{in.Size()}, hidden...)
		return trainer.NewMLP(trainer.MLPConfig{Sizes: append(sizes, classes), Activation: act, BN: m.bn}, m.seed)
	case "cnn":
		ch, err := trainer.ParseSizes(m.channels)
		if err != nil || len(ch) == 0 {
			return nil, usageErr("--channels: want e.g. 8,16")
		}
		hidden, err := trainer.ParseSizes(m.hidden)
		if err != nil || len(hidden) == 0 {
			return nil, usageErr("--hidden: want the fc size, e.g. 32")
		}
		return trainer.NewCNN(trainer.CNNConfig{In: in, Channels: ch, Hidden: hidden[0], Classes: classes, Activation: act, BN: m.bn}, m.seed)
	case "resnet":
		if m.width <= 0 || m.blocks <= 0 {
			return nil, usageErr("--width and --blocks must be positive")
		}
		return trainer.NewResNet(trainer.ResNetConfig{In: in, Classes: classes, Width: m.width, Blocks: m.blocks, BN: m.bn, Skip: !m.noSkip}, m.seed)
	}
	return nil, usageErr("--model %q: want mlp, cnn or resnet", m.model)
}

// loadData returns the training and test sets named by --data. Synthetic
// data has MNIST's shape so every model fits it.
func (m *modelFlags) loadData() (train, test *data.Dataset, err error) {
	switch m.data {
	case "mnist":
		return data.LoadMNIST("")
	case "synthetic":
		shape := trainer.Shape{H: 28, W: 28, C: 1}
		return data.Synthetic(6000, shape, 10, m.seed), data.Synthetic(1000, shape, 10, m.seed+1), nil
	}
	return nil, nil, usageErr("--data %q: want mnist or synthetic", m.data)
}

// setup loads the data named by --data, builds the model for it and
// returns the data shaped for that model (flat vectors for MLPs).
func (m *modelFlags) setup() (net *trainer.Network, train, test *data.Dataset, err error) {
	train, test, err = m.loadData()
	if err != nil {
		return nil, nil, nil, err
	}
	net, err = m.build(train.Shape, train.Classes)
	if err != nil {
		return nil, nil, nil, err
	}
	return net, forModel(train, net), forModel(test, net), nil
}

// setupProbe is setup for a command that cuts a probe batch of n samples
// from the training set: a batch larger than the set (--probe-batch 70000 on
// MNIST's 60,000) is refused rather than quietly shrunk to the whole set.
func (m *modelFlags) setupProbe(n int) (net *trainer.Network, train, test *data.Dataset, err error) {
	if net, train, test, err = m.setup(); err != nil {
		return nil, nil, nil, err
	}
	if err := train.HasSamples(n); err != nil {
		return nil, nil, nil, usageErr("--probe-batch %d: %v", n, err)
	}
	return net, train, test, nil
}

// parseBNMode reads --bn-mode.
func parseBNMode(s string) (trainer.Mode, error) {
	switch s {
	case "eval":
		return trainer.ModeEval, nil
	case "train":
		return trainer.ModeTrain, nil
	}
	return 0, usageErr("--bn-mode %q: want eval (running statistics, as PyHessian) or train (batch statistics)", s)
}

// forModel adapts the data to the model: MLPs see flat vectors.
func forModel(d *data.Dataset, net *trainer.Network) *data.Dataset {
	if d.Shape != net.InShape() {
		return d.Flat()
	}
	return d
}

func describeData(d *data.Dataset) string { return d.Describe() }
