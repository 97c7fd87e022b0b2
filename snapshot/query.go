package snapshot

import "errors"

// Fields selects the bulky parts of a snapshot that a read decodes. The
// small fields (step, time, loss, learning rate, eigenvalues, residuals,
// HVPs, failure…) are always decoded; the trace, the ESD and above all the
// eigenvectors (Dim floats each) only when asked for, so that a table or a
// plot of 10,000 snapshots reads a few hundred bytes per snapshot.
type Fields uint8

const (
	// WithTrace selects the trace, block traces included, and the
	// per-block λ1.
	WithTrace Fields = 1 << iota
	// WithESD selects the spectral density's quadrature.
	WithESD
	// WithVectors selects the eigenvectors (large; see Config.KeepVectors).
	WithVectors

	// Headers selects the small fields only.
	Headers Fields = 0
	// AllFields selects everything.
	AllFields = WithTrace | WithESD | WithVectors
)

// Query selects snapshots of one run: the steps From ≤ step ≤ To, in step
// order, at most Limit of them, with the parts in Fields. The zero Query
// reads the headers of every snapshot.
type Query struct {
	// From is the first step read.
	From int64
	// To is the last step read, inclusive; 0 or negative reads to the
	// end of the run. (The monitor's steps start at 1; read step 0 alone
	// with Limit 1.)
	To int64
	// Limit bounds the number of snapshots returned; 0 means no limit.
	// Ask for one more than a page to learn whether another follows and
	// where it starts.
	Limit int
	// Fields selects the bulky parts decoded (Headers: none of them).
	Fields Fields
}

// Bounded reports whether q has an upper step bound.
func (q Query) Bounded() bool { return q.To > 0 }

// Reader reads snapshots by query, decoding only the selected parts and
// reading only the page asked for. *store.Store implements it; the JSON
// API pages through a Source that also is a Reader at the cost of the
// page.
type Reader interface {
	Read(run string, q Query) ([]Snapshot, error)
}

// ErrDuplicate is returned (wrapped) when a snapshot is written at a run
// and step that already hold one and no overwrite was asked for: a run id
// is a promise that its history is not replaced silently.
var ErrDuplicate = errors.New("snapshot already stored")
