package trainer

import (
	"fmt"
	"math"
)

// Batch is a set of inputs with targets: class labels for classification,
// or dense targets (same shape as the output) for regression.
type Batch struct {
	X       *Tensor
	Labels  []int
	Targets []float64
}

// Len is the number of samples.
func (b Batch) Len() int {
	if b.X == nil {
		return 0
	}
	return b.X.N
}

// Loss maps network outputs to a scalar mean loss. Both methods use the
// outputs as a rows×C matrix, one row per sample.
type Loss interface {
	// Eval returns the mean loss and, when grad is not nil, writes ∂L/∂z.
	Eval(grad []float64, z *Tensor, b Batch) (float64, error)
	// HessVec writes (∂²L/∂z²)·rz into dst.
	HessVec(dst []float64, z *Tensor, rz []float64, b Batch)
	Name() string
}

// CrossEntropy is softmax cross-entropy averaged over the batch, PyTorch's
// nn.CrossEntropyLoss(). It is stateless, so one value serves concurrent
// evaluations.
type CrossEntropy struct{}

// Name returns "cross-entropy".
func (CrossEntropy) Name() string { return "cross-entropy" }

// softmaxRow writes softmax(z) into p and returns log Σ exp(z).
func softmaxRow(p, z []float64) float64 {
	m := math.Inf(-1)
	for _, v := range z {
		m = math.Max(m, v)
	}
	var s float64
	for j, v := range z {
		p[j] = math.Exp(v - m)
		s += p[j]
	}
	for j := range p {
		p[j] /= s
	}
	return m + math.Log(s)
}

// probs returns scratch for one row of softmax probabilities; up to 64
// classes it stays on the stack after inlining, so HVPs do not allocate.
func probs(c int) []float64 {
	if c <= 64 {
		var buf [64]float64
		return buf[:c]
	}
	return make([]float64, c)
}

// Eval computes mean −log softmax(z)_y and its gradient (p − e_y)/N.
func (CrossEntropy) Eval(grad []float64, z *Tensor, b Batch) (float64, error) {
	if z.H != 1 || z.W != 1 {
		return 0, fmt.Errorf("cross-entropy: want dense logits, got %v", z.Shape)
	}
	if len(b.Labels) != z.N {
		return 0, fmt.Errorf("cross-entropy: %d labels for %d samples", len(b.Labels), z.N)
	}
	c := z.C
	inv := 1 / float64(z.N)
	p := probs(c)
	var loss float64
	for i, y := range b.Labels {
		if y < 0 || y >= c {
			return 0, fmt.Errorf("cross-entropy: label %d out of range [0,%d)", y, c)
		}
		row := z.Data[i*c : (i+1)*c]
		lse := softmaxRow(p, row)
		loss += lse - row[y]
		if grad != nil {
			g := grad[i*c : (i+1)*c]
			for j := range g {
				g[j] = p[j] * inv
			}
			g[y] -= inv
		}
	}
	return loss * inv, nil
}

// HessVec uses ∂²L/∂z² = (diag(p) − p·pᵀ)/N per sample.
func (CrossEntropy) HessVec(dst []float64, z *Tensor, rz []float64, _ Batch) {
	c := z.C
	inv := 1 / float64(z.N)
	// A row costs c exponentials, about four elementwise passes' worth.
	parallelFor(z.N, 4*c, func(lo, hi int) {
		p := probs(c)
		for i := lo; i < hi; i++ {
			softmaxRow(p, z.Data[i*c:(i+1)*c])
			r, d := rz[i*c:(i+1)*c], dst[i*c:(i+1)*c]
			var pr float64
			for j := range p {
				pr += p[j] * r[j]
			}
			for j := range p {
				d[j] = p[j] * (r[j] - pr) * inv
			}
		}
	})
}

// MSE is the mean over all output elements of (z − t)², PyTorch's
// nn.MSELoss().
type MSE struct{}

// Name returns "mse".
func (MSE) Name() string { return "mse" }

// Eval computes mean (z − t)².
func (MSE) Eval(grad []float64, z *Tensor, b Batch) (float64, error) {
	if len(b.Targets) != len(z.Data) {
		return 0, fmt.Errorf("mse: %d targets for %d outputs", len(b.Targets), len(z.Data))
	}
	inv := 1 / float64(len(z.Data))
	var loss float64
	for i, v := range z.Data {
		d := v - b.Targets[i]
		loss += d * d
		if grad != nil {
			grad[i] = 2 * d * inv
		}
	}
	return loss * inv, nil
}

// HessVec is 2·rz/len(z).
func (MSE) HessVec(dst []float64, z *Tensor, rz []float64, _ Batch) {
	s := 2 / float64(len(z.Data))
	for i, r := range rz {
		dst[i] = s * r
	}
}
