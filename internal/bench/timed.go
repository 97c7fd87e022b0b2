// Package bench holds the measuring tools behind `hessmon bench`: an
// operator wrapper that times its products, peak resident memory, and the
// scaling driver. It is internal: benchmark knobs are no public API.
package bench

import (
	"time"

	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/hvp"
)

// Timed wraps an operator and adds up the wall time of its products, so
// that a probe's HVP share (HVP seconds ÷ probe seconds) is measured, not
// estimated from a separate HVP benchmark. It passes Loss and Blocks on.
// It is not safe for concurrent Apply calls (a synchronous probe makes
// none).
type Timed struct {
	Op      hvp.Operator
	Elapsed time.Duration
	Count   int
}

// Dim is the wrapped operator's dimension.
func (t *Timed) Dim() int { return t.Op.Dim() }

// Apply applies the wrapped operator and times it.
func (t *Timed) Apply(dst, v []float64) error {
	start := time.Now()
	err := t.Op.Apply(dst, v)
	t.Elapsed += time.Since(start)
	t.Count++
	return err
}

// Loss is the wrapped operator's loss, or 0.
func (t *Timed) Loss() float64 {
	if l, ok := t.Op.(interface{ Loss() float64 }); ok {
		return l.Loss()
	}
	return 0
}

// Blocks are the wrapped operator's blocks, or nil.
func (t *Timed) Blocks() []estimators.Block {
	if b, ok := t.Op.(interface{ Blocks() []estimators.Block }); ok {
		return b.Blocks()
	}
	return nil
}
