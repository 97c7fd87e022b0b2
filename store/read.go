package store

import (
	"errors"

	bolt "go.etcd.io/bbolt"

	"github.com/hessmon/hessmon/snapshot"
)

// Fields selects the bulky parts of a snapshot that a read decodes. The
// small fields (step, time, loss, learning rate, eigenvalues, residuals,
// HVPs, failure…) are always decoded; the trace, the ESD and above all the
// eigenvectors (Dim floats each) only when asked for, so that a table or a
// plot of 10,000 snapshots reads a few hundred bytes per snapshot.
type Fields uint8

const (
	// WithTrace decodes the trace, block traces included, and the
	// per-block λ1.
	WithTrace Fields = 1 << iota
	// WithESD decodes the spectral density's quadrature.
	WithESD
	// WithVectors decodes the eigenvectors (large; see Config.KeepVectors).
	WithVectors

	// Headers decodes the small fields only.
	Headers Fields = 0
	// AllFields decodes everything.
	AllFields = WithTrace | WithESD | WithVectors
)

// Range calls fn on the snapshots of run with from ≤ step ≤ to, in step
// order, fully decoded; to < 0 means no upper bound. It stops at, and
// returns, fn's first error. fn runs inside a read transaction: keep it
// short, since a long one can delay the writer.
func (s *Store) Range(run string, from, to int64, fn func(snapshot.Snapshot) error) error {
	return s.Scan(run, from, to, AllFields, fn)
}

// Scan is Range decoding only the parts in f.
func (s *Store) Scan(run string, from, to int64, f Fields, fn func(snapshot.Snapshot) error) error {
	var (
		panicked bool
		pv       any
	)
	errPanic := errors.New("panic in Range callback")
	err := s.view(func(tx *bolt.Tx) error {
		rb, err := runBucket(tx, run, false, snapshot.Run{})
		if err != nil {
			return err
		}
		return eachSnapshot(rb, run, from, to, f, func(sn *snapshot.Snapshot) (err error) {
			// A panic in the caller's fn is theirs, not a corrupt file:
			// re-raise it after the transaction is closed.
			defer func() {
				if r := recover(); r != nil {
					panicked, pv, err = true, r, errPanic
				}
			}()
			return fn(*sn)
		})
	})
	if panicked {
		panic(pv)
	}
	return err
}

// errPageFull stops a page read once it holds its limit.
var errPageFull = errors.New("page full")

// SnapshotsPage returns at most limit snapshots of run with from ≤ step ≤
// to (to < 0: no upper bound), in step order, without eigenvectors unless
// vectors is set. It reads only the snapshots it returns, so the HTTP API
// can page through a long run: ask for limit+1 to learn whether more
// follow and where the next page starts. limit ≤ 0 means no limit.
func (s *Store) SnapshotsPage(run string, from, to int64, limit int, vectors bool) ([]snapshot.Snapshot, error) {
	f := WithTrace | WithESD
	if vectors {
		f |= WithVectors
	}
	out := []snapshot.Snapshot{}
	err := s.view(func(tx *bolt.Tx) error {
		rb, err := runBucket(tx, run, false, snapshot.Run{})
		if err != nil {
			return err
		}
		err = eachSnapshot(rb, run, from, to, f, func(sn *snapshot.Snapshot) error {
			out = append(out, *sn)
			if limit > 0 && len(out) >= limit {
				return errPageFull
			}
			return nil
		})
		if errors.Is(err, errPageFull) {
			return nil
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
