package store

import (
	"errors"
	"iter"

	bolt "go.etcd.io/bbolt"

	"github.com/hessmon/hessmon/snapshot"
)

// Fields selects the bulky parts of a snapshot that a read decodes (see
// snapshot.Fields).
type Fields = snapshot.Fields

// The field selectors of a Query.
const (
	WithTrace   = snapshot.WithTrace
	WithESD     = snapshot.WithESD
	WithVectors = snapshot.WithVectors
	Headers     = snapshot.Headers
	AllFields   = snapshot.AllFields
)

// Query selects the snapshots of a read (see snapshot.Query): a step
// range, a limit and the parts to decode.
type Query = snapshot.Query

// errPageFull stops a read once it holds its limit.
var errPageFull = errors.New("page full")

// Read returns the snapshots of run that q selects, in step order,
// decoding only the parts in q.Fields and reading only the snapshots it
// returns, so that the HTTP API pages through a long run at the cost of the
// page. An unknown run is an error wrapping ErrUnknownRun.
func (s *Store) Read(run string, q Query) ([]snapshot.Snapshot, error) {
	out := []snapshot.Snapshot{}
	for sn, err := range s.All(run, q) {
		if err != nil {
			return nil, err
		}
		out = append(out, sn)
	}
	return out, nil
}

// All is Read as an iterator, for reads too long to hold in memory. The
// loop body runs inside a read transaction: keep it short, since a long
// one can delay the writer. The iterator yields a non-nil error at most
// once, last.
func (s *Store) All(run string, q Query) iter.Seq2[snapshot.Snapshot, error] {
	return func(yield func(snapshot.Snapshot, error) bool) {
		var (
			panicked, stopped bool
			pv                any
			n                 int
		)
		errPanic := errors.New("panic in the loop over Store.All")
		to := q.To
		if !q.Bounded() {
			to = -1
		}
		err := s.view(func(tx *bolt.Tx) error {
			rb, err := runBucket(tx, run, false, snapshot.Run{})
			if err != nil {
				return err
			}
			return eachSnapshot(rb, run, q.From, to, q.Fields, func(sn *snapshot.Snapshot) (err error) {
				// A panic in the caller's loop is theirs, not a corrupt
				// file: re-raise it after the transaction is closed.
				defer func() {
					if r := recover(); r != nil {
						panicked, pv, err = true, r, errPanic
					}
				}()
				if !yield(*sn, nil) {
					stopped = true
					return errPageFull
				}
				if n++; q.Limit > 0 && n >= q.Limit {
					return errPageFull
				}
				return nil
			})
		})
		switch {
		case panicked:
			panic(pv)
		case errors.Is(err, errPageFull), err == nil, stopped:
		default:
			yield(snapshot.Snapshot{}, err)
		}
	}
}
