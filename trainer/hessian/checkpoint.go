package hessian

import (
	"context"
	"fmt"

	"github.com/hessmon/hessmon/trainer"
)

// DecodeCheckpoint decodes the trainer checkpoint stored for run as step
// (store.RunStart's Checkpoint and CheckpointStep), refusing one whose own
// step differs; nil bytes are no checkpoint (nil, nil).
func DecodeCheckpoint(run string, b []byte, step int64) (*trainer.Checkpoint, error) {
	if b == nil {
		return nil, nil
	}
	cp := new(trainer.Checkpoint)
	if err := cp.UnmarshalBinary(b); err != nil {
		return nil, fmt.Errorf("run %q: %w", run, err)
	}
	if cp.Step != step {
		return nil, fmt.Errorf("run %q: checkpoint of step %d stored as step %d", run, cp.Step, step)
	}
	return cp, nil
}

// CheckpointSaver writes the trainer's checkpoints of run through put
// (store.Store.PutCheckpoint).
func CheckpointSaver(put func(run string, step int64, state []byte) error, run string) trainer.CheckpointSaver {
	return func(_ context.Context, c *trainer.Checkpoint) error {
		b, err := c.MarshalBinary()
		if err != nil {
			return err
		}
		return put(run, c.Step, b)
	}
}
