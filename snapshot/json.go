package snapshot

import (
	"encoding/json"
	"math"
)

// Float is a float64 whose JSON form is null when it is NaN or ±Inf, which
// JSON cannot represent (failed probes carry NaN losses). null decodes back
// to NaN.
type Float float64

// MarshalJSON implements json.Marshaler.
func (f Float) MarshalJSON() ([]byte, error) {
	if !finite(float64(f)) {
		return []byte("null"), nil
	}
	return json.Marshal(float64(f))
}

// UnmarshalJSON implements json.Unmarshaler.
func (f *Float) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*f = Float(math.NaN())
		return nil
	}
	return json.Unmarshal(b, (*float64)(f))
}

func floats(v []float64) []Float {
	if v == nil {
		return nil
	}
	out := make([]Float, len(v))
	for i, x := range v {
		out[i] = Float(x)
	}
	return out
}

// JSONSnapshot is the API's JSON form of a snapshot: the same field names as
// Snapshot's own JSON, with every float a Float so that NaN and Inf
// become null instead of failing the encoder. The float fields shadow the
// embedded snapshot's (encoding/json picks the shallower field).
type JSONSnapshot struct {
	Snapshot
	Loss               Float      `json:"loss"`
	LearningRate       Float      `json:"learning_rate"`
	Beta1              Float      `json:"beta1,omitempty"`
	SharpnessThreshold Float      `json:"sharpness_threshold,omitempty"`
	SharpnessRatio     Float      `json:"sharpness_ratio,omitempty"`
	Eigenvalues        []Float    `json:"eigenvalues,omitempty"`
	Residuals          []Float    `json:"residuals,omitempty"`
	Eigenvectors       [][]Float  `json:"eigenvectors,omitempty"`
	Trace              *JSONTrace `json:"trace,omitempty"`
	ESD                *JSONESD   `json:"esd,omitempty"`
	Seconds            Float      `json:"seconds"`

	LambdaMin             *JSONEigenpair   `json:"lambda_min,omitempty"`
	PreconditionedLambda1 *JSONEigenpair   `json:"preconditioned_lambda1,omitempty"`
	BlockMass             []JSONBlockValue `json:"block_mass,omitempty"`
	BlockLambda1          []JSONBlockValue `json:"block_lambda1,omitempty"`
}

// JSONEigenpair is Eigenpair with NaN-safe floats.
type JSONEigenpair struct {
	Value    Float `json:"value"`
	Residual Float `json:"residual"`
}

// JSONBlockValue is BlockValue with NaN-safe floats.
type JSONBlockValue struct {
	Name     string `json:"name"`
	Value    Float  `json:"value"`
	Residual Float  `json:"residual,omitempty"`
}

func jsonPair(p *Eigenpair) *JSONEigenpair {
	if p == nil {
		return nil
	}
	return &JSONEigenpair{Value: Float(p.Value), Residual: Float(p.Residual)}
}

func jsonBlocks(bs []BlockValue) []JSONBlockValue {
	var out []JSONBlockValue
	for _, b := range bs {
		out = append(out, JSONBlockValue{Name: b.Name, Value: Float(b.Value), Residual: Float(b.Residual)})
	}
	return out
}

// JSONTrace is Trace with NaN-safe floats.
type JSONTrace struct {
	Trace
	Value  Float            `json:"value"`
	StdErr Float            `json:"stderr"`
	Blocks []JSONBlockTrace `json:"blocks,omitempty"`
}

// JSONBlockTrace is BlockTrace with NaN-safe floats.
type JSONBlockTrace struct {
	BlockTrace
	Value  Float `json:"value"`
	StdErr Float `json:"stderr"`
}

// JSONESD is ESD with NaN-safe floats.
type JSONESD struct {
	ESD
	Nodes   []Float `json:"nodes"`
	Weights []Float `json:"weights"`
	Sigma2  Float   `json:"sigma2"`
}

// NewJSONSnapshot converts s for JSON output.
func NewJSONSnapshot(s Snapshot) JSONSnapshot {
	j := JSONSnapshot{
		Snapshot:           s,
		Loss:               Float(s.Loss),
		LearningRate:       Float(s.LearningRate),
		Beta1:              Float(s.Beta1),
		SharpnessThreshold: Float(s.SharpnessThreshold),
		SharpnessRatio:     Float(s.SharpnessRatio),
		Eigenvalues:        floats(s.Eigenvalues),
		Residuals:          floats(s.Residuals),
		Seconds:            Float(s.Seconds),

		LambdaMin:             jsonPair(s.LambdaMin),
		PreconditionedLambda1: jsonPair(s.PreconditionedLambda1),
		BlockMass:             jsonBlocks(s.BlockMass),
		BlockLambda1:          jsonBlocks(s.BlockLambda1),
	}
	for _, v := range s.Eigenvectors {
		j.Eigenvectors = append(j.Eigenvectors, floats(v))
	}
	if t := s.Trace; t != nil {
		jt := &JSONTrace{Trace: *t, Value: Float(t.Value), StdErr: Float(t.StdErr)}
		for _, b := range t.Blocks {
			jt.Blocks = append(jt.Blocks, JSONBlockTrace{BlockTrace: b, Value: Float(b.Value), StdErr: Float(b.StdErr)})
		}
		j.Trace = jt
	}
	if e := s.ESD; e != nil {
		j.ESD = &JSONESD{ESD: *e, Nodes: floats(e.Nodes), Weights: floats(e.Weights), Sigma2: Float(e.Sigma2)}
	}
	return j
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
