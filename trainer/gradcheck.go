package trainer

import (
	"fmt"
	"math"
	"math/rand/v2"

	"gonum.org/v1/gonum/floats"

	"github.com/hessmon/hessmon/data"
)

// CheckResult holds the worst relative errors of one derivative check.
type CheckResult struct {
	Model          string  `json:"model"`
	Params         int     `json:"params"`
	Mode           string  `json:"mode"`
	HVPRelErr      float64 `json:"hvp_rel_err"`
	GradRelErr     float64 `json:"grad_rel_err"`
	SymmetryRelErr float64 `json:"symmetry_rel_err"`
}

// CheckDerivatives compares, at net's current parameters on batch b:
//   - the exact HVP against central differences of the exact gradient,
//     ‖Hv − D(v)‖/‖Hv‖;
//   - the gradient against central differences of the loss along random
//     directions, |gᵀu − D_L(u)|/(‖g‖‖u‖);
//   - symmetry, |uᵀHv − vᵀHu|/(‖u‖‖Hv‖ + ‖v‖‖Hu‖);
//
// for `trials` seeded random directions, returning the worst of each.
//
// Each finite difference is taken at two step sizes: a Richardson-
// extrapolated central difference at h = 1e-3 (error O(h⁴), right for smooth
// models) and a plain one at h = 1e-6 (less likely to straddle a ReLU or
// max-pool kink). The smaller disagreement is reported: both are
// approximations of the truth, and a bug shows in both.
func CheckDerivatives(net *Network, b Batch, loss Loss, mode Mode, trials int, seed uint64) (CheckResult, error) {
	if mode == ModeTrainUpdate {
		return CheckResult{}, fmt.Errorf("trainer: derivative check in %v would change the running statistics", mode)
	}
	net = net.Clone()
	n := net.Dim()
	res := CheckResult{Model: net.String(), Params: n, Mode: mode.String()}
	tape := net.NewTape()
	rng := rand.New(rand.NewPCG(seed, 17))
	x0 := append([]float64(nil), net.Params()...)
	g0 := make([]float64, n)
	if _, err := tape.Grad(g0, b, loss, mode); err != nil {
		return res, err
	}
	randVec := func() []float64 {
		v := make([]float64, n)
		for i := range v {
			v[i] = rng.NormFloat64()
		}
		floats.Scale(1/floats.Norm(v, 2), v)
		return v
	}
	// at evaluates the loss (and gradient into g, if not nil) at x0 + t·v.
	p := net.Params()
	at := func(g, v []float64, t float64) (float64, error) {
		floats.AddScaledTo(p, x0, t, v)
		defer copy(p, x0)
		if g == nil {
			return tape.Forward(b, loss, mode)
		}
		return tape.Grad(g, b, loss, mode)
	}
	gp, gm := make([]float64, n), make([]float64, n)
	central := func(dst, v []float64, h float64) error {
		if _, err := at(gp, v, h); err != nil {
			return err
		}
		if _, err := at(gm, v, -h); err != nil {
			return err
		}
		floats.SubTo(dst, gp, gm)
		floats.Scale(1/(2*h), dst)
		return nil
	}
	fdHVP := func(v []float64) ([][]float64, error) {
		d1, d2, d3 := make([]float64, n), make([]float64, n), make([]float64, n)
		if err := central(d1, v, 1e-3); err != nil {
			return nil, err
		}
		if err := central(d2, v, 5e-4); err != nil {
			return nil, err
		}
		if err := central(d3, v, 1e-6); err != nil {
			return nil, err
		}
		rich := make([]float64, n)
		for i := range rich {
			rich[i] = (4*d2[i] - d1[i]) / 3
		}
		return [][]float64{rich, d3}, nil
	}
	fdLoss := func(u []float64) (float64, error) {
		best := math.Inf(1)
		for _, h := range []float64{1e-3, 1e-6} {
			var d [2]float64
			for k, hh := range []float64{h, h / 2} {
				lp, err := at(nil, u, hh)
				if err != nil {
					return 0, err
				}
				lm, err := at(nil, u, -hh)
				if err != nil {
					return 0, err
				}
				d[k] = (lp - lm) / (2 * hh)
			}
			est := d[1]
			if h > 1e-5 {
				est = (4*d[1] - d[0]) / 3
			}
			best = math.Min(best, math.Abs(est-floats.Dot(g0, u)))
		}
		return best, nil
	}
	// Restore the tape's forward pass at x0 before the exact HVPs.
	hv, hu := make([]float64, n), make([]float64, n)
	for t := 0; t < trials; t++ {
		u, v := randVec(), randVec()
		if _, err := tape.Forward(b, loss, mode); err != nil {
			return res, err
		}
		if err := tape.HVP(hv, v); err != nil {
			return res, err
		}
		if err := tape.HVP(hu, u); err != nil {
			return res, err
		}
		hvNorm := floats.Norm(hv, 2)
		sym := math.Abs(floats.Dot(u, hv)-floats.Dot(v, hu)) / (floats.Norm(hv, 2) + floats.Norm(hu, 2) + math.SmallestNonzeroFloat64)
		res.SymmetryRelErr = math.Max(res.SymmetryRelErr, sym)
		fds, err := fdHVP(v)
		if err != nil {
			return res, err
		}
		e := math.Inf(1)
		for _, fd := range fds {
			e = math.Min(e, floats.Distance(hv, fd, 2)/math.Max(hvNorm, 1e-300))
		}
		res.HVPRelErr = math.Max(res.HVPRelErr, e)
		ge, err := fdLoss(u)
		if err != nil {
			return res, err
		}
		res.GradRelErr = math.Max(res.GradRelErr, ge/math.Max(floats.Norm(g0, 2), 1e-300))
	}
	return res, nil
}

// CheckCase is one model family with a batch and BatchNorm mode, small
// enough for finite differences.
type CheckCase struct {
	Name  string
	Net   *Network
	Batch Batch
	Mode  Mode
}

// StandardChecks returns every built-in model family in the configurations
// `hessmon gradcheck` verifies: MLPs with and without BatchNorm (BN in eval
// and train mode), the CNN with and without BN, and the ResNet with and
// without BN and skip connections. Inputs are seeded synthetic data.
func StandardChecks(seed uint64) ([]CheckCase, error) {
	var cases []CheckCase
	add := func(name string, net *Network, err error, in Shape, n int, mode Mode) error {
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		d := data.Synthetic(n, in, net.OutShape().C, seed+uint64(len(cases)))
		cases = append(cases, CheckCase{Name: name, Net: net, Batch: HeadBatch(d, 0), Mode: mode})
		return nil
	}
	dense := Shape{H: 1, W: 1, C: 12}
	img := Shape{H: 8, W: 8, C: 1}
	for _, act := range []Activation{Tanh, GELU, ReLU} {
		net, err := NewMLP(MLPConfig{Sizes: []int{12, 10, 8, 4}, Activation: act}, seed)
		if err := add("mlp-"+act.String(), net, err, dense, 16, ModeEval); err != nil {
			return nil, err
		}
	}
	for _, mode := range []Mode{ModeEval, ModeTrain} {
		net, err := NewMLP(MLPConfig{Sizes: []int{12, 10, 8, 4}, Activation: Tanh, BN: true}, seed)
		if err == nil {
			perturbBN(net, seed)
		}
		if err := add("mlp-bn-"+mode.String(), net, err, dense, 16, mode); err != nil {
			return nil, err
		}
	}
	for _, bn := range []bool{false, true} {
		modes := []Mode{ModeEval}
		if bn {
			modes = append(modes, ModeTrain)
		}
		for _, mode := range modes {
			net, err := NewCNN(CNNConfig{In: img, Channels: []int{3, 4}, Hidden: 6, Classes: 3, Activation: Tanh, BN: bn}, seed)
			if err == nil && bn {
				perturbBN(net, seed)
			}
			name := "cnn"
			if bn {
				name += "-bn-" + mode.String()
			}
			if err := add(name, net, err, img, 6, mode); err != nil {
				return nil, err
			}
		}
	}
	for _, bn := range []bool{false, true} {
		for _, skip := range []bool{true, false} {
			modes := []Mode{ModeEval}
			if bn {
				modes = append(modes, ModeTrain)
			}
			for _, mode := range modes {
				cfg := ResNetConfig{In: img, Classes: 3, Width: 3, Blocks: 1, BN: bn, Skip: skip}
				net, err := NewResNet(cfg, seed)
				if err == nil && bn {
					perturbBN(net, seed)
				}
				name := "resnet"
				if bn {
					name += "-bn-" + mode.String()
				} else {
					name += "-nobn"
				}
				if skip {
					name += "-skip"
				} else {
					name += "-noskip"
				}
				if err := add(name, net, err, img, 4, mode); err != nil {
					return nil, err
				}
			}
		}
	}
	return cases, nil
}

// perturbBN moves BatchNorm parameters and running statistics away from
// their initial values (γ = 1, β = 0, mean 0, var 1), where some
// second-order terms vanish and a bug could hide.
func perturbBN(net *Network, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 99))
	for _, p := range net.ParamInfo() {
		if isBN(p.Name) {
			for i := p.Offset; i < p.Offset+p.Len; i++ {
				net.params[i] += 0.3 * rng.NormFloat64()
			}
		}
	}
	for _, p := range net.BufferInfo() {
		for i := p.Offset; i < p.Offset+p.Len; i++ {
			net.buffers[i] = 0.2*rng.NormFloat64() + 1.2*float64(bool2int(p.Name[len(p.Name)-3:] == "var"))
		}
	}
}

func isBN(name string) bool {
	for _, f := range []string{"bn", "shortcut.1"} {
		if len(name) >= len(f) && containsSeg(name, f) {
			return true
		}
	}
	return false
}

func containsSeg(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func bool2int(b bool) int {
	if b {
		return 1
	}
	return 0
}
