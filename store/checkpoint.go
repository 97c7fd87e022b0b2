package store

import (
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/hessmon/hessmon/snapshot"
)

// keyCheckpoint holds a run's checkpoint: the 8-byte big-endian step it
// was taken after, then the trainer's opaque state.
var keyCheckpoint = []byte("checkpoint")

// PutCheckpoint records the trainer state of run after step, replacing the
// previous checkpoint, in one fsynced transaction: a crash leaves either
// the old checkpoint or the new one, never a mix. The state is opaque to
// the store (see trainer.Checkpoint).
func (s *Store) PutCheckpoint(run string, step int64, state []byte) error {
	if err := validRunID(run); err != nil {
		return err
	}
	if step < 0 {
		return fmt.Errorf("store: checkpoint at negative step %d", step)
	}
	v := make([]byte, 8, 8+len(state))
	binary.BigEndian.PutUint64(v, uint64(step))
	v = append(v, state...)
	return s.update(func(tx *bolt.Tx) error {
		rb, err := runBucket(tx, run, true, snapshot.Run{ID: run})
		if err != nil {
			return err
		}
		return rb.Put(keyCheckpoint, v)
	})
}

// Checkpoint returns run's last checkpoint and the step it was taken after;
// ok is false when the run has none.
func (s *Store) Checkpoint(run string) (step int64, state []byte, ok bool, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		rb, err := runBucket(tx, run, false, snapshot.Run{})
		if err != nil {
			return err
		}
		v := rb.Get(keyCheckpoint)
		if v == nil {
			return nil
		}
		if len(v) < 8 {
			return fmt.Errorf("%w: run %q: checkpoint of %d bytes", ErrCorrupt, run, len(v))
		}
		step, state, ok = int64(binary.BigEndian.Uint64(v)), append([]byte(nil), v[8:]...), true
		return nil
	})
	return step, state, ok, err
}
