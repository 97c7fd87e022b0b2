// Package store keeps hessmon snapshots in a single bbolt file.
//
// One file holds many runs. The layout is
//
//	meta/schema                  uint32 big-endian schema version
//	runs/<run id>/info           JSON snapshot.Run
//	runs/<run id>/snapshots/<step>  encoded snapshot.Snapshot, step as 8-byte big-endian
//	runs/<run id>/warmstate/...  the estimators' serialised warm state (opaque),
//	                             in page-sized pieces rewritten in place (see PutWarm)
//	runs/<run id>/warm           the same, as one value, from hessmon before issue M
//	                             (still read; replaced by the first PutWarm)
//
// so that a cursor walks a run's snapshots in step order. Every PutSnapshot is
// its own fsynced transaction: once it returns, the snapshot survives a
// SIGKILL of the trainer.
//
// The file stays near its live size: the warm state, the one value that is
// rewritten, reuses its own pages (see PutWarm), snapshot pages are packed
// (16 KiB pages), and the file grows 1 MiB at a time rather than bbolt's
// default of doubling up to 16 MiB and then growing 16 MiB at a time.
// Measured with a 118k-parameter MLP's 4.7 MB warm state and a snapshot at
// each of 1,000 probes: the file held 16.8 MB for 6.8 MB in use when the
// state was saved at every probe, 35.8 MB when every 10th, and holds
// 8.2 MB for 6.0 MB now, either way (`hessmon bench store`). Stats reports
// the figures; Compact rewrites a finished store without its free pages.
//
// Reads of long runs decode only what they need: Read takes a Query of a
// step range, a limit and the Fields (trace, ESD, eigenvectors) to decode,
// and All is the same as an iterator.
//
// A run id is a promise: PutSnapshot of a (run, step) already stored fails
// with an error wrapping ErrExists unless the store was opened with
// Options.Overwrite, or the caller replaces that one snapshot explicitly
// with ReplaceSnapshot. LastStep tells a resumed writer where its run's
// history ends, and runs/<run id>/checkpoint holds the trainer's
// checkpoint (PutCheckpoint), written in one fsynced transaction.
//
// bbolt lets one process write a file at a time, and a writer excludes
// readers, so a store being written by a live trainer is inspected through
// the trainer's HTTP API, not by opening the file: Open with
// Options.ReadOnly fails fast with ErrLocked instead of hanging.
package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/hessmon/hessmon/snapshot"
)

// SchemaVersion is the layout version written into new files and required
// of existing ones.
const SchemaVersion = 1

// DefaultLockTimeout bounds the wait for another process's file lock.
const DefaultLockTimeout = time.Second

// Errors returned by the store; test them with errors.Is. The returned
// errors wrap these with the file name and details.
var (
	ErrNotFound = errors.New("store file does not exist")
	ErrLocked   = errors.New("store file is locked by another process, most likely a running trainer; " +
		"query the trainer's live HTTP API instead, e.g. curl http://127.0.0.1:9464/api/runs")
	ErrCorrupt = errors.New("store file is corrupt or not a hessmon store")
	ErrSchema  = errors.New("store schema version mismatch")

	ErrUnknownRun  = snapshot.ErrUnknownRun
	ErrUnknownStep = snapshot.ErrUnknownStep
	// ErrExists is returned by PutSnapshot for a step already stored.
	ErrExists = snapshot.ErrDuplicate
	// ErrReadOnly is returned by writes to a store opened read-only.
	ErrReadOnly = errors.New("store is open read-only")
)

// RunSummary is the store's one-line view of a run.
type RunSummary = snapshot.RunSummary

var (
	bucketMeta      = []byte("meta")
	bucketRuns      = []byte("runs")
	bucketSnapshots = []byte("snapshots")
	keySchema       = []byte("schema")
	keyInfo         = []byte("info")
	keyWarm         = []byte("warm")
)

// Options configure a store.
type Options struct {
	// ReadOnly opens an existing store for inspection, as bbolt's own
	// option: Open never creates the file (ErrNotFound), takes a shared
	// lock and fails within LockTimeout with ErrLocked while a trainer is
	// writing it; writes fail with ErrReadOnly.
	ReadOnly bool
	// Overwrite lets PutSnapshot replace a snapshot already stored at its
	// run and step. Without it that is an error wrapping ErrExists.
	Overwrite bool
	// LockTimeout bounds the wait for the file lock; 0 means
	// DefaultLockTimeout. After it, Open fails with ErrLocked.
	LockTimeout time.Duration
	// NoSync skips the fsync on each commit. Faster, but a crash can lose
	// snapshots whose Put returned: for tests and benchmarks only.
	NoSync bool
}

// growBytes is how much the file grows when bbolt needs room (bbolt's
// AllocSize, 16 MiB by default, which a small store never fills).
const growBytes = 1 << 20

// pageSize is the page size of new files (an existing file keeps its
// own). Steps are appended in order, and bbolt splits a full leaf leaving
// at least two keys on the right, so pages of 4 KiB hold two or three
// snapshots of ~900 bytes (half full); 16 KiB pages are ~86% full.
const pageSize = 16 << 10

// snapshotFill is the fill percent of the snapshots bucket: steps are
// appended in order, so a full left page is never split again.
const snapshotFill = 1.0

// Store is a bbolt file of runs and snapshots. It is safe for concurrent
// use; reads run concurrently with the single writer.
type Store struct {
	db        *bolt.DB
	path      string
	readOnly  bool
	overwrite bool
	// warmMu serialises PutWarm, whose chunks span transactions.
	warmMu sync.Mutex
	// afterBatch, if set, runs after each but the last batch of a
	// PutWarm; an error stops the save there, as a crash would (tests).
	afterBatch func() error
}

// Open opens path for writing, creating the file and its schema if needed,
// or for reading only with Options.ReadOnly. An existing file is checked
// first (lock, integrity of its size, schema), so that a trainer never
// appends to a store it cannot read back.
func Open(path string, opts Options) (*Store, error) {
	timeout := opts.LockTimeout
	if timeout <= 0 {
		timeout = DefaultLockTimeout
	}
	if opts.ReadOnly {
		return openReadOnly(path, timeout, false)
	}
	if fi, err := os.Stat(path); err == nil && fi.Size() > 0 {
		ro, err := openReadOnly(path, timeout, true)
		if err != nil {
			return nil, err
		}
		if err := ro.Close(); err != nil {
			return nil, fmt.Errorf("store: %s: %w", path, err)
		}
	}
	db, err := openBolt(path, &bolt.Options{
		Timeout:  timeout,
		NoSync:   opts.NoSync,
		PageSize: pageSize,
	})
	if err != nil {
		return nil, err
	}
	db.AllocSize = growBytes
	s := &Store{db: db, path: path, overwrite: opts.Overwrite}
	err = s.update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			if k, _ := tx.Cursor().First(); k != nil {
				return fmt.Errorf("%w: bbolt file without hessmon schema", ErrSchema)
			}
			var err error
			if meta, err = tx.CreateBucket(bucketMeta); err != nil {
				return err
			}
			var v [4]byte
			binary.BigEndian.PutUint32(v[:], SchemaVersion)
			if err := meta.Put(keySchema, v[:]); err != nil {
				return err
			}
		}
		if err := checkSchema(meta); err != nil {
			return err
		}
		_, err := tx.CreateBucketIfNotExists(bucketRuns)
		return err
	})
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// openReadOnly opens and validates path. With preWrite set it is Open's
// check of an existing file, which also accepts a bbolt file left empty by a
// crash between its creation and the schema write.
func openReadOnly(path string, timeout time.Duration, preWrite bool) (*Store, error) {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("store: %s: %w", path, ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("store: %w", err)
	case fi.IsDir():
		return nil, fmt.Errorf("store: %s: %w: is a directory", path, ErrCorrupt)
	case fi.Size() == 0:
		return nil, fmt.Errorf("store: %s: %w: empty file", path, ErrCorrupt)
	}
	db, err := openBolt(path, &bolt.Options{ReadOnly: true, Timeout: timeout})
	if err != nil {
		return nil, err
	}
	s := &Store{db: db, path: path, readOnly: true}
	if err := s.view(func(tx *bolt.Tx) error {
		if tx.Size() > fi.Size() {
			return fmt.Errorf("%w: truncated: %d bytes on disk, %d in use", ErrCorrupt, fi.Size(), tx.Size())
		}
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			if k, _ := tx.Cursor().First(); k == nil && preWrite {
				return nil
			}
			return fmt.Errorf("%w: bbolt file without hessmon schema", ErrSchema)
		}
		return checkSchema(meta)
	}); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// openBolt opens the bbolt file and maps its errors onto the store's.
func openBolt(path string, o *bolt.Options) (db *bolt.DB, err error) {
	defer guard(&err)
	db, err = bolt.Open(path, 0o644, o)
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("store: %s: %w", path, ErrLocked)
	case errors.Is(err, fs.ErrNotExist) && o.ReadOnly:
		return nil, fmt.Errorf("store: %s: %w", path, ErrNotFound)
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, fs.ErrPermission):
		// e.g. a missing directory when creating: the OS error says it.
		return nil, fmt.Errorf("store: %w", err)
	default:
		return nil, fmt.Errorf("store: %s: %w: %v", path, ErrCorrupt, err)
	}
}

func checkSchema(meta *bolt.Bucket) error {
	v := meta.Get(keySchema)
	if len(v) != 4 {
		return fmt.Errorf("%w: unreadable schema version (%d bytes)", ErrSchema, len(v))
	}
	if got := binary.BigEndian.Uint32(v); got != SchemaVersion {
		return fmt.Errorf("%w: file has schema version %d, this hessmon reads version %d", ErrSchema, got, SchemaVersion)
	}
	return nil
}

// guard turns a panic inside bbolt (which panics on some corrupt pages, and
// faults on pages past the end of a truncated file) into ErrCorrupt.
func guard(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%w: %v", ErrCorrupt, r)
	}
}

func (s *Store) view(fn func(*bolt.Tx) error) (err error) {
	defer s.named(&err)
	defer guard(&err)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	return s.db.View(fn)
}

func (s *Store) update(fn func(*bolt.Tx) error) (err error) {
	if s.readOnly {
		return fmt.Errorf("store: %s: %w", s.path, ErrReadOnly)
	}
	defer s.named(&err)
	defer guard(&err)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	return s.db.Update(fn)
}

// named prefixes file-level errors (corrupt data, schema) with the file name.
func (s *Store) named(err *error) {
	if *err != nil && (errors.Is(*err, ErrCorrupt) || errors.Is(*err, ErrSchema)) {
		*err = fmt.Errorf("store: %s: %w", s.path, *err)
	}
}

// Path returns the file name.
func (s *Store) Path() string { return s.path }

// Close releases the file and its lock.
func (s *Store) Close() error { return s.db.Close() }

// Check walks every page of the file (bbolt's consistency check): slow on
// big files, for `doctor`-style commands and tests.
func (s *Store) Check() error {
	return s.view(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		if len(errs) > 0 {
			return fmt.Errorf("%w: %w", ErrCorrupt, errors.Join(errs...))
		}
		return nil
	})
}

func validRunID(id string) error {
	if id == "" {
		return errors.New("store: empty run id")
	}
	if len(id) > bolt.MaxKeySize {
		return fmt.Errorf("store: run id of %d bytes is too long", len(id))
	}
	return nil
}

func stepKey(step int64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], uint64(step))
	return k[:]
}

// runBucket returns the bucket of run id, creating it (with info from def)
// when create is set.
func runBucket(tx *bolt.Tx, id string, create bool, def snapshot.Run) (*bolt.Bucket, error) {
	runs := tx.Bucket(bucketRuns)
	if runs == nil {
		return nil, fmt.Errorf("%w: no runs bucket", ErrCorrupt)
	}
	if rb := runs.Bucket([]byte(id)); rb != nil {
		return rb, nil
	}
	if !create {
		return nil, fmt.Errorf("store: %w %q", ErrUnknownRun, id)
	}
	rb, err := runs.CreateBucket([]byte(id))
	if err != nil {
		return nil, err
	}
	if _, err := rb.CreateBucket(bucketSnapshots); err != nil {
		return nil, err
	}
	info, err := json.Marshal(def)
	if err != nil {
		return nil, err
	}
	return rb, rb.Put(keyInfo, info)
}

// PutRun records (or replaces) a run's metadata; its snapshots are kept.
func (s *Store) PutRun(r snapshot.Run) error {
	if err := validRunID(r.ID); err != nil {
		return err
	}
	info, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("store: encode run %q: %w", r.ID, err)
	}
	return s.update(func(tx *bolt.Tx) error {
		rb, err := runBucket(tx, r.ID, true, r)
		if err != nil {
			return err
		}
		return rb.Put(keyInfo, info)
	})
}

// Run returns a run's metadata.
func (s *Store) Run(id string) (snapshot.Run, error) {
	var r snapshot.Run
	err := s.view(func(tx *bolt.Tx) error {
		rb, err := runBucket(tx, id, false, r)
		if err != nil {
			return err
		}
		r, err = runInfo(rb, id)
		return err
	})
	return r, err
}

func runInfo(rb *bolt.Bucket, id string) (snapshot.Run, error) {
	var r snapshot.Run
	if err := json.Unmarshal(rb.Get(keyInfo), &r); err != nil {
		return r, fmt.Errorf("%w: run %q info: %v", ErrCorrupt, id, err)
	}
	return r, nil
}

// Runs summarises every run, oldest start first. It reads each snapshot's
// small fields only, skipping eigenvectors, traces and ESDs.
func (s *Store) Runs() ([]RunSummary, error) {
	var out []RunSummary
	err := s.view(func(tx *bolt.Tx) error {
		runs := tx.Bucket(bucketRuns)
		if runs == nil {
			return fmt.Errorf("%w: no runs bucket", ErrCorrupt)
		}
		return runs.ForEachBucket(func(k []byte) error {
			id := string(k)
			rb := runs.Bucket(k)
			info, err := runInfo(rb, id)
			if err != nil {
				return err
			}
			sum := snapshot.NewRunSummary(info)
			sum.ID = id
			err = eachSnapshot(rb, id, 0, -1, Headers, func(sn *snapshot.Snapshot) error {
				sum.Add(sn)
				return nil
			})
			out = append(out, sum)
			return err
		})
	})
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(out, func(a, b RunSummary) int {
		if c := a.Started.Compare(b.Started); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// PutSnapshot stores sn under its run and step in its own fsynced
// transaction. A step already stored is an error wrapping ErrExists,
// unless the store was opened with Options.Overwrite. A run not yet
// recorded with PutRun is created with minimal metadata, so a snapshot is
// never lost.
func (s *Store) PutSnapshot(sn snapshot.Snapshot) error {
	return s.putSnapshot(sn, s.overwrite)
}

// ReplaceSnapshot is PutSnapshot replacing a snapshot already stored at
// sn's run and step: the explicit, per-call consent to overwrite history.
func (s *Store) ReplaceSnapshot(sn snapshot.Snapshot) error {
	return s.putSnapshot(sn, true)
}

func (s *Store) putSnapshot(sn snapshot.Snapshot, overwrite bool) error {
	if err := validRunID(sn.Run); err != nil {
		return err
	}
	if sn.Step < 0 {
		return fmt.Errorf("store: negative step %d", sn.Step)
	}
	v, err := EncodeSnapshot(sn)
	if err != nil {
		return err
	}
	return s.update(func(tx *bolt.Tx) error {
		rb, err := runBucket(tx, sn.Run, true, snapshot.Run{ID: sn.Run, Optimizer: sn.Optimizer, Started: sn.Time})
		if err != nil {
			return err
		}
		sb := rb.Bucket(bucketSnapshots)
		if sb == nil {
			return fmt.Errorf("%w: run %q has no snapshots bucket", ErrCorrupt, sn.Run)
		}
		k := stepKey(sn.Step)
		if !overwrite && sb.Get(k) != nil {
			return fmt.Errorf("store: run %q step %d: %w (a new run id keeps both; an overwrite must be asked for)", sn.Run, sn.Step, ErrExists)
		}
		sb.FillPercent = snapshotFill
		return sb.Put(k, v)
	})
}

// LastStep returns the highest step stored for run, and false when the
// run has no snapshot or is unknown: where a resumed writer's history
// ends.
func (s *Store) LastStep(run string) (step int64, ok bool, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		runs := tx.Bucket(bucketRuns)
		if runs == nil {
			return fmt.Errorf("%w: no runs bucket", ErrCorrupt)
		}
		rb := runs.Bucket([]byte(run))
		if rb == nil {
			return nil
		}
		sb := rb.Bucket(bucketSnapshots)
		if sb == nil {
			return nil
		}
		k, _ := sb.Cursor().Last()
		if k == nil {
			return nil
		}
		if len(k) != 8 {
			return fmt.Errorf("%w: run %q: snapshot key of %d bytes", ErrCorrupt, run, len(k))
		}
		step, ok = int64(binary.BigEndian.Uint64(k)), true
		return nil
	})
	return step, ok, err
}

// Snapshot returns the snapshot of run at step.
func (s *Store) Snapshot(run string, step int64) (snapshot.Snapshot, error) {
	var sn snapshot.Snapshot
	err := s.view(func(tx *bolt.Tx) error {
		rb, err := runBucket(tx, run, false, snapshot.Run{})
		if err != nil {
			return err
		}
		var v []byte
		if step >= 0 {
			if sb := rb.Bucket(bucketSnapshots); sb != nil {
				v = sb.Get(stepKey(step))
			}
		}
		if v == nil {
			return fmt.Errorf("store: run %q: %w %d", run, ErrUnknownStep, step)
		}
		return decodeChecked(&sn, run, stepKey(step), v, AllFields)
	})
	return sn, err
}

// Latest returns the snapshot of run with the highest step, or an error
// wrapping ErrUnknownStep when the run has none.
func (s *Store) Latest(run string) (snapshot.Snapshot, error) {
	var sn snapshot.Snapshot
	err := s.view(func(tx *bolt.Tx) error {
		rb, err := runBucket(tx, run, false, snapshot.Run{})
		if err != nil {
			return err
		}
		var k, v []byte
		if sb := rb.Bucket(bucketSnapshots); sb != nil {
			k, v = sb.Cursor().Last()
		}
		if k == nil {
			return fmt.Errorf("store: run %q has no snapshots: %w", run, ErrUnknownStep)
		}
		return decodeChecked(&sn, run, k, v, AllFields)
	})
	return sn, err
}

// Snapshots returns the snapshots of run with from ≤ step ≤ to (to < 0: no
// upper bound), in step order.
func (s *Store) Snapshots(run string, from, to int64) ([]snapshot.Snapshot, error) {
	out := []snapshot.Snapshot{}
	err := s.view(func(tx *bolt.Tx) error {
		rb, err := runBucket(tx, run, false, snapshot.Run{})
		if err != nil {
			return err
		}
		return eachSnapshot(rb, run, from, to, AllFields, func(sn *snapshot.Snapshot) error {
			out = append(out, *sn)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func eachSnapshot(rb *bolt.Bucket, run string, from, to int64, f Fields, fn func(*snapshot.Snapshot) error) error {
	sb := rb.Bucket(bucketSnapshots)
	if sb == nil {
		return fmt.Errorf("%w: run %q has no snapshots bucket", ErrCorrupt, run)
	}
	from = max(from, 0)
	if to >= 0 && to < from {
		return nil
	}
	end := stepKey(to)
	c := sb.Cursor()
	for k, v := c.Seek(stepKey(from)); k != nil; k, v = c.Next() {
		if to >= 0 && bytes.Compare(k, end) > 0 {
			break
		}
		var sn snapshot.Snapshot
		if err := decodeChecked(&sn, run, k, v, f); err != nil {
			return err
		}
		if err := fn(&sn); err != nil {
			return err
		}
	}
	return nil
}

// decodeChecked decodes a stored value and checks it against its key.
func decodeChecked(sn *snapshot.Snapshot, run string, k, v []byte, f Fields) error {
	if len(k) != 8 {
		return fmt.Errorf("%w: run %q: snapshot key of %d bytes", ErrCorrupt, run, len(k))
	}
	step := int64(binary.BigEndian.Uint64(k))
	if err := decodeSnapshot(sn, v, f); err != nil {
		return fmt.Errorf("run %q step %d: %w", run, step, err)
	}
	if sn.Step != step || sn.Run != run {
		return fmt.Errorf("%w: run %q step %d holds a snapshot of run %q step %d", ErrCorrupt, run, step, sn.Run, sn.Step)
	}
	return nil
}
