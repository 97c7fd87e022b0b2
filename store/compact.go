package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// compactTxBytes bounds the bytes copied per transaction of a compaction.
const compactTxBytes = 64 << 20

// Compact writes a copy of the store at src to dst without its free
// pages, leaves packed full (bbolt's Compact). src is opened read-only, so
// it fails with ErrLocked while a trainer writes it; dst must not exist.
// The copy is read back and its runs compared with src's before Compact
// returns; on any error dst is removed.
func Compact(dst, src string) error {
	in, err := openReadOnly(src, DefaultLockTimeout, false)
	if err != nil {
		return err
	}
	defer in.Close()
	return in.compactTo(dst)
}

// CompactInPlace replaces the store at path by a compacted copy: the copy
// is written next to it, checked, synced and renamed over it, so that a
// crash leaves either the old file or the new one. It returns the file's
// size before and after.
func CompactInPlace(path string) (before, after int64, err error) {
	in, err := openReadOnly(path, DefaultLockTimeout, false)
	if err != nil {
		return 0, 0, err
	}
	// Hold the read lock until the rename: a trainer cannot open the old
	// file for writing meanwhile.
	defer in.Close()
	fi, err := os.Stat(path)
	if err != nil {
		return 0, 0, fmt.Errorf("store: %w", err)
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".compact")
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, 0, fmt.Errorf("store: removing a stale %s: %w", tmp, err)
	}
	if err := in.compactTo(tmp); err != nil {
		return 0, 0, err
	}
	out, err := os.Stat(tmp)
	if err == nil {
		err = os.Chmod(tmp, fi.Mode().Perm())
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return 0, 0, fmt.Errorf("store: compact %s: %w", path, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync() // make the rename durable
		_ = d.Close()
	}
	return fi.Size(), out.Size(), nil
}

func (s *Store) compactTo(dst string) (err error) {
	f, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("store: compact: %s already exists; the copy must go to a new file: %w", dst, fs.ErrExist)
	}
	if err != nil {
		return fmt.Errorf("store: compact: %w", err)
	}
	_ = f.Close()
	defer func() {
		if err != nil {
			_ = os.Remove(dst)
		}
	}()
	db, err := openBolt(dst, &bolt.Options{Timeout: DefaultLockTimeout, PageSize: pageSize})
	if err != nil {
		return err
	}
	db.AllocSize = growBytes
	err = func() (err error) {
		defer guard(&err)
		return bolt.Compact(db, s.db, compactTxBytes)
	}()
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("store: compact %s into %s: %w", s.path, dst, err)
	}
	// Read the copy back: same runs, same snapshots, same warm states.
	out, err := openReadOnly(dst, DefaultLockTimeout, false)
	if err != nil {
		return err
	}
	defer out.Close()
	a, err := s.Runs()
	if err != nil {
		return err
	}
	b, err := out.Runs()
	if err != nil {
		return err
	}
	if !slices.EqualFunc(a, b, func(x, y RunSummary) bool {
		return x.ID == y.ID && x.Snapshots == y.Snapshots && x.LastStep == y.LastStep && x.Failures == y.Failures
	}) {
		return fmt.Errorf("store: compact %s: the copy's runs differ from the original's", s.path)
	}
	for _, r := range a {
		wa, err := s.Warm(r.ID)
		if err != nil {
			continue // copied byte for byte; nothing to compare with
		}
		wb, err := out.Warm(r.ID)
		if err != nil {
			return err
		}
		if !slices.Equal(wa, wb) {
			return fmt.Errorf("store: compact %s: run %q's warm state differs in the copy", s.path, r.ID)
		}
	}
	return nil
}
