package trainer

import (
	"bytes"
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
)

// Checkpoint is the state a resumed run continues from: after Step steps,
// the weights, the non-trainable buffers (BatchNorm running statistics),
// the optimiser's state and the data order's position. Training resumed
// from it takes bitwise the same steps as training that never stopped.
type Checkpoint struct {
	Step    int64
	Params  []float64
	Buffers []float64
	// Optimizer is the optimiser's own encoding (see StatefulOptimizer).
	Optimizer []byte
	Batcher   BatcherState
}

// CheckpointSaver receives a checkpoint, e.g. to write it to a store. The
// checkpoint's slices are copies it may keep.
type CheckpointSaver func(ctx context.Context, c *Checkpoint) error

// StatefulOptimizer is an optimiser whose state (momentum buffer, Adam's
// moments and step count) can be saved and restored. SGD and Adam are.
type StatefulOptimizer interface {
	Optimizer
	MarshalBinary() ([]byte, error)
	UnmarshalBinary([]byte) error
}

// sgdState and adamState are the optimisers' gob encodings.
type sgdState struct{ Buf []float64 }

type adamState struct {
	M, V []float64
	T    int
}

func gobBytes(v any) ([]byte, error) {
	var b bytes.Buffer
	err := gob.NewEncoder(&b).Encode(v)
	return b.Bytes(), err
}

// MarshalBinary encodes the momentum buffer.
func (o *SGD) MarshalBinary() ([]byte, error) { return gobBytes(sgdState{Buf: o.buf}) }

// UnmarshalBinary restores the momentum buffer.
func (o *SGD) UnmarshalBinary(b []byte) error {
	var s sgdState
	if err := gob.NewDecoder(bytes.NewReader(b)).Decode(&s); err != nil {
		return fmt.Errorf("trainer: SGD state: %w", err)
	}
	o.buf = s.Buf
	return nil
}

// MarshalBinary encodes the moments and the step count.
func (o *Adam) MarshalBinary() ([]byte, error) { return gobBytes(adamState{M: o.m, V: o.v, T: o.t}) }

// UnmarshalBinary restores the moments and the step count.
func (o *Adam) UnmarshalBinary(b []byte) error {
	var s adamState
	if err := gob.NewDecoder(bytes.NewReader(b)).Decode(&s); err != nil {
		return fmt.Errorf("trainer: Adam state: %w", err)
	}
	if len(s.M) != len(s.V) {
		return fmt.Errorf("trainer: Adam state with %d first and %d second moments", len(s.M), len(s.V))
	}
	o.m, o.v, o.t = s.M, s.V, s.T
	return nil
}

// BatcherState is a Batcher's position in its seeded data order: how many
// batches it has drawn, and, to check a restore, the epoch, the cursor and
// a hash of the epoch's permutation.
type BatcherState struct {
	Drawn    int64
	Epoch    int
	Pos      int
	PermHash uint64
}

func (b *Batcher) permHash() uint64 {
	h := fnv.New64a()
	var w [8]byte
	for _, i := range b.perm {
		for k := range w {
			w[k] = byte(uint64(i) >> (8 * k))
		}
		_, _ = h.Write(w[:])
	}
	return h.Sum64()
}

// state is b's position after drawn batches.
func (b *Batcher) state(drawn int64) BatcherState {
	return BatcherState{Drawn: drawn, Epoch: b.epoch, Pos: b.pos, PermHash: b.permHash()}
}

// skip advances b by n batches without copying them: the same shuffles, in
// the same order, as n calls of Next. (The permutation's random source
// cannot be saved, so a restore replays it: one shuffle per epoch.)
func (b *Batcher) skip(n int64) {
	for range n {
		if b.pos+b.size > len(b.perm) {
			b.epoch++
			b.shuffle()
		}
		b.pos += b.size
	}
}

// restore moves a new batcher to s and checks that it got there.
func (b *Batcher) restore(s BatcherState) error {
	b.skip(s.Drawn)
	if got := b.state(s.Drawn); got != s {
		return fmt.Errorf("trainer: the data order does not replay to the checkpoint (epoch %d, cursor %d; checkpoint epoch %d, cursor %d): "+
			"different data, batch size or seed", got.Epoch, got.Pos, s.Epoch, s.Pos)
	}
	return nil
}

// takeCheckpoint copies the run's state after step.
func takeCheckpoint(cfg *Config, b *Batcher, step int64) (*Checkpoint, error) {
	so, ok := cfg.Optimizer.(StatefulOptimizer)
	if !ok {
		return nil, fmt.Errorf("trainer: optimiser %s cannot save its state", cfg.Optimizer.Name())
	}
	ob, err := so.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("trainer: optimiser state: %w", err)
	}
	return &Checkpoint{
		Step: step, Params: append([]float64(nil), cfg.Model.Params()...), Buffers: append([]float64(nil), cfg.Model.Buffers()...),
		Optimizer: ob, Batcher: b.state(step),
	}, nil
}

// restoreCheckpoint puts c's state into the model, optimiser and batcher.
func restoreCheckpoint(cfg *Config, b *Batcher, c *Checkpoint) error {
	if len(c.Params) != cfg.Model.Dim() || len(c.Buffers) != len(cfg.Model.Buffers()) {
		return fmt.Errorf("trainer: checkpoint of %d parameters and %d buffers for a model of %d and %d",
			len(c.Params), len(c.Buffers), cfg.Model.Dim(), len(cfg.Model.Buffers()))
	}
	if c.Step < 0 || c.Batcher.Drawn != c.Step {
		return fmt.Errorf("trainer: checkpoint at step %d has drawn %d batches", c.Step, c.Batcher.Drawn)
	}
	so, ok := cfg.Optimizer.(StatefulOptimizer)
	if !ok {
		return fmt.Errorf("trainer: optimiser %s cannot restore its state", cfg.Optimizer.Name())
	}
	if err := so.UnmarshalBinary(c.Optimizer); err != nil {
		return err
	}
	if err := b.restore(c.Batcher); err != nil {
		return err
	}
	copy(cfg.Model.Params(), c.Params)
	copy(cfg.Model.Buffers(), c.Buffers)
	return nil
}

// checkpointGob is Checkpoint without its methods, so that gob encodes
// its fields rather than calling MarshalBinary again.
type checkpointGob Checkpoint

// MarshalBinary encodes the checkpoint (gob; float64 values bit for bit).
func (c *Checkpoint) MarshalBinary() ([]byte, error) { return gobBytes((*checkpointGob)(c)) }

// UnmarshalBinary decodes a checkpoint written by MarshalBinary.
func (c *Checkpoint) UnmarshalBinary(b []byte) error {
	if err := gob.NewDecoder(bytes.NewReader(b)).Decode((*checkpointGob)(c)); err != nil {
		return fmt.Errorf("trainer: checkpoint: %w", err)
	}
	return nil
}

// Checksum is a hash of the weights and buffers' bits, to compare the
// final state of two runs at a glance.
func Checksum(net *Network) uint64 {
	h := fnv.New64a()
	var w [8]byte
	for _, xs := range [][]float64{net.Params(), net.Buffers()} {
		for _, x := range xs {
			u := math.Float64bits(x)
			for k := range w {
				w[k] = byte(u >> (8 * k))
			}
			_, _ = h.Write(w[:])
		}
	}
	return h.Sum64()
}

// errNoSaver is returned when checkpoints are asked for without a saver.
var errNoSaver = errors.New("trainer: Config.CheckpointEvery without Config.SaveCheckpoint")

// checkpointer takes the checkpoints of one Train call.
type checkpointer struct {
	cfg  *Config
	b    *Batcher
	last int64 // the step of the last checkpoint taken or resumed from
}

// after takes a checkpoint after step when one is due: every
// CheckpointEvery steps and after the last, or always with force (an
// interrupted run).
func (c *checkpointer) after(ctx context.Context, step int64, force bool) error {
	every := c.cfg.CheckpointEvery
	if every <= 0 || step <= c.last {
		return nil
	}
	if !force && step%every != 0 && step != c.cfg.Steps {
		return nil
	}
	cp, err := takeCheckpoint(c.cfg, c.b, step)
	if err == nil {
		err = c.cfg.SaveCheckpoint(context.WithoutCancel(ctx), cp)
	}
	if err != nil {
		return fmt.Errorf("trainer: checkpoint after step %d: %w", step, err)
	}
	c.last = step
	return nil
}
