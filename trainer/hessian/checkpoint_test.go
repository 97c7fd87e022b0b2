package hessian

import (
	"context"
	"testing"

	"github.com/hessmon/hessmon/trainer"
)

// TestCheckpointRoundTrip: the checkpoints CheckpointSaver writes decode
// to their steps, and one filed under another step, or corrupt, is refused.
func TestCheckpointRoundTrip(t *testing.T) {
	net, d := tanhProblem(t, 4)
	saved := map[int64][]byte{}
	put := func(run string, step int64, b []byte) error {
		if run != "r" {
			t.Errorf("saved for run %q, want r", run)
		}
		saved[step] = b
		return nil
	}
	if _, err := trainer.Train(context.Background(), trainer.Config{Model: net, Loss: trainer.CrossEntropy{}, Optimizer: &trainer.SGD{LR: 0.1},
		Data: d, BatchSize: 10, Steps: 6, Seed: 1, CheckpointEvery: 2, SaveCheckpoint: CheckpointSaver(put, "r")}); err != nil {
		t.Fatal(err)
	}
	if len(saved) == 0 {
		t.Fatal("no checkpoints saved")
	}
	for step, b := range saved {
		cp, err := DecodeCheckpoint("r", b, step)
		if err != nil || cp == nil || cp.Step != step {
			t.Errorf("step %d: decoded %+v, %v", step, cp, err)
		}
		if _, err := DecodeCheckpoint("r", b, step+1); err == nil {
			t.Errorf("step %d filed as %d: no error", step, step+1)
		}
		if _, err := DecodeCheckpoint("r", b[:len(b)/2], step); err == nil {
			t.Errorf("step %d truncated: no error", step)
		}
	}
	if cp, err := DecodeCheckpoint("r", nil, 0); cp != nil || err != nil {
		t.Errorf("no bytes: %v, %v; want no checkpoint", cp, err)
	}
}
