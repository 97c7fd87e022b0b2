package distributed

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/monitor"
)

// ShareWarm returns the warm store of every rank's monitor: the state that
// rank 0's store holds for run, broadcast, so that every rank's first probe
// starts from the same vectors. New states are saved to rank 0's store;
// the other ranks drop them (their store argument is ignored and may be
// nil). It is collective: if rank 0 cannot load the state, every rank
// returns an error.
func ShareWarm(comm hvp.Comm, store monitor.WarmStore, run string) (monitor.WarmStore, error) {
	var state []byte
	var loadErr error
	if comm.Rank() == 0 {
		if store == nil {
			loadErr = errors.New("no warm store on rank 0")
		} else {
			state, loadErr = store.Warm(run)
		}
	}
	state, err := broadcastBytes(comm, state, loadErr != nil)
	switch {
	case loadErr != nil:
		return nil, errors.Join(fmt.Errorf("distributed: loading the warm state: %w", loadErr), err)
	case err != nil:
		return nil, fmt.Errorf("distributed: sharing the warm state: %w", err)
	}
	w := sharedWarm{state: state}
	if comm.Rank() == 0 {
		w.save = store
	}
	return w, nil
}

// errRootFailed is what the other ranks learn when rank 0 broadcasts a
// failure instead of bytes.
var errRootFailed = errors.New("rank 0 failed (see its error)")

// broadcastBytes sends rank 0's b to every rank: first its length (or
// rank 0's failure, as length −1), then the bytes. The other ranks' b is
// ignored. Every rank makes the same calls.
func broadcastBytes(comm hvp.Comm, b []byte, failed bool) ([]byte, error) {
	var head [8]byte
	if comm.Rank() == 0 {
		n := int64(len(b))
		if failed {
			n = -1
		}
		binary.LittleEndian.PutUint64(head[:], uint64(n))
	}
	if err := comm.Broadcast(head[:], 0); err != nil {
		return nil, err
	}
	n := int64(binary.LittleEndian.Uint64(head[:]))
	if n < 0 {
		return nil, errRootFailed
	}
	out := make([]byte, n)
	if comm.Rank() == 0 {
		copy(out, b)
	}
	if err := comm.Broadcast(out, 0); err != nil {
		return nil, fmt.Errorf("broadcasting %d bytes: %w", n, err)
	}
	return out, nil
}

// sharedWarm serves the broadcast state and saves to rank 0's store only.
type sharedWarm struct {
	state []byte
	save  monitor.WarmStore // nil except on rank 0
}

func (w sharedWarm) Warm(string) ([]byte, error) { return w.state, nil }

func (w sharedWarm) PutWarm(run string, b []byte) error {
	if w.save == nil {
		return nil
	}
	return w.save.PutWarm(run, b)
}
