package distributed

import (
	"errors"
	"fmt"
	"math"

	"github.com/hessmon/hessmon/hvp"
)

// Sentinel errors, returned wrapped on every rank alike.
var (
	// ErrPeerFailed: another rank failed, in its set-up or while training
	// (its own error is on its side).
	ErrPeerFailed = errors.New("distributed: a rank failed")
	// ErrMismatch: the ranks disagree on what to run.
	ErrMismatch = errors.New("distributed: the ranks disagree")
	// ErrDiverged: the replicas' parameters differ at the same step.
	ErrDiverged = errors.New("distributed: the replicas diverged")
	// ErrStopped: some rank stopped (finished, interrupted or failed), so
	// every rank leaves the lockstep.
	ErrStopped = errors.New("distributed: stopped on every rank because one rank stopped")
)

// Field is one value of what a rank is about to run, on which every rank
// must agree bit for bit (a size, a step count, a checksum).
type Field struct {
	Name  string
	Value float64
}

// Handshake is the first collective call of a run. Every rank posts
// whether its local set-up failed (setupErr) and its fields. If any rank
// failed, every rank returns an error: the failed rank its own setupErr,
// the others one wrapping ErrPeerFailed that names the failed ranks. If the
// ranks post different numbers of fields or a field differs from rank 0's,
// every rank returns an error wrapping ErrMismatch that names the field.
func Handshake(comm hvp.Comm, setupErr error, fields ...Field) error {
	if comm == nil {
		return errors.Join(setupErr, errors.New("distributed: Handshake: nil Comm"))
	}
	rank, size := comm.Rank(), comm.Size()
	// First round: failed flag and field count, one row per rank. Each
	// entry has one non-zero term, so the sum is every rank's record.
	status := make([]float64, 2*size)
	status[2*rank+1] = float64(len(fields))
	if setupErr != nil {
		status[2*rank] = 1
	}
	if err := comm.AllreduceSum(status); err != nil {
		return errors.Join(setupErr, fmt.Errorf("distributed: set-up handshake: %w", err))
	}
	if setupErr != nil {
		return setupErr
	}
	var failed []int
	for q := range size {
		if status[2*q] != 0 {
			failed = append(failed, q)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%w: set-up failed on rank(s) %v (see their errors)", ErrPeerFailed, failed)
	}
	for q := 1; q < size; q++ {
		if status[2*q+1] != status[1] {
			return fmt.Errorf("%w: rank %d posts %g handshake fields, rank 0 %g: every rank must run the same binary",
				ErrMismatch, q, status[2*q+1], status[1])
		}
	}
	// Second round: the fields.
	n := len(fields)
	table := make([]float64, n*size)
	for i, f := range fields {
		table[rank*n+i] = f.Value
	}
	if err := comm.AllreduceSum(table); err != nil {
		return fmt.Errorf("distributed: set-up handshake: %w", err)
	}
	for q := 1; q < size; q++ {
		for i, f := range fields {
			a, b := table[i], table[q*n+i]
			if math.Float64bits(a) != math.Float64bits(b) {
				return fmt.Errorf("%w: rank %d's %s (%.17g) differs from rank 0's (%.17g): every rank must run the same binary with the same flags and data",
					ErrMismatch, q, f.Name, b, a)
			}
		}
	}
	return nil
}

// Checksum is a cheap fingerprint of a replica's parameters: their sum,
// sum of squares and a position-weighted sum, which a permutation changes.
// It costs one pass over the vectors, little next to a training step, and
// catches replicas that drifted apart (different seeds, data, learning
// rates, non-deterministic arithmetic).
type Checksum struct {
	Sum, SumSq, Weighted float64
}

// Sum fingerprints the concatenated vectors (e.g. the parameters and
// buffers such as BatchNorm's running statistics). Positions restart in
// each vector.
func Sum(vectors ...[]float64) Checksum {
	var c Checksum
	for _, v := range vectors {
		for i, x := range v {
			c.Sum += x
			c.SumSq += x * x
			c.Weighted += float64(i%1021+1) * x
		}
	}
	return c
}

// Fields are c's three numbers as handshake fields named name.
func (c Checksum) Fields(name string) []Field {
	return []Field{{name + " (Σw)", c.Sum}, {name + " (Σw²)", c.SumSq}, {name + " (Σiw)", c.Weighted}}
}

func (c Checksum) equal(d Checksum) bool {
	return math.Float64bits(c.Sum) == math.Float64bits(d.Sum) &&
		math.Float64bits(c.SumSq) == math.Float64bits(d.SumSq) &&
		math.Float64bits(c.Weighted) == math.Float64bits(d.Weighted)
}
