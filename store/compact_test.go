package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// churned writes a store the way a long run does: snapshots and a warm
// state saved at each probe, here with the state shrinking at the end so
// that the file has free pages to drop.
func churned(t *testing.T) (path string, warm []byte) {
	t.Helper()
	s, path := newStore(t)
	for step := range int64(20) {
		if err := s.PutSnapshot(fullSnapshot("a", step)); err != nil {
			t.Fatal(err)
		}
		if err := s.PutWarm("a", warmBytes(1_500_000, uint64(step))); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutSnapshot(fullSnapshot("b", 7)); err != nil {
		t.Fatal(err)
	}
	warm = warmBytes(200_000, 99)
	if err := s.PutWarm("a", warm); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path, warm
}

func contents(t *testing.T, path string) (map[string][]any, Stats) {
	t.Helper()
	s, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	out := map[string][]any{}
	for _, id := range []string{"a", "b"} {
		snaps, err := s.Snapshots(id, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		w, err := s.Warm(id)
		if err != nil {
			t.Fatal(err)
		}
		out[id] = []any{snaps, w}
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return out, st
}

func TestCompact(t *testing.T) {
	path, warm := churned(t)
	want, before := contents(t, path)
	if !bytes.Equal(want["a"][1].([]byte), warm) {
		t.Fatal("warm state not stored")
	}
	dst := filepath.Join(t.TempDir(), "compact.db")
	if err := Compact(dst, path); err != nil {
		t.Fatal(err)
	}
	got, after := contents(t, dst)
	if diff := cmp.Diff(want, got, cmpopts.EquateNaNs()); diff != "" {
		t.Fatalf("compacted store differs (-want +got):\n%s", diff)
	}
	t.Logf("before %+v\nafter  %+v", before, after)
	if after.FileBytes >= before.FileBytes || after.FileBytes > after.InUseBytes+growBytes {
		t.Errorf("compacted file %d bytes (%d in use), original %d", after.FileBytes, after.InUseBytes, before.FileBytes)
	}
	// The copy is a store like any other: it can be written again.
	s, err := Open(dst, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutSnapshot(fullSnapshot("a", 1000)); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()

	// In place: same contents, smaller file, no temporary left.
	b, a, err := CompactInPlace(path)
	if err != nil {
		t.Fatal(err)
	}
	if b != before.FileBytes || a >= b {
		t.Errorf("in place: %d → %d bytes, original %d", b, a, before.FileBytes)
	}
	got, _ = contents(t, path)
	if diff := cmp.Diff(want, got, cmpopts.EquateNaNs()); diff != "" {
		t.Fatalf("compacted in place differs (-want +got):\n%s", diff)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*compact*")); len(left) > 0 {
		t.Errorf("left behind %v", left)
	}
}

func TestCompactErrors(t *testing.T) {
	path, _ := churned(t)
	dir := t.TempDir()
	if err := Compact(filepath.Join(dir, "x.db"), filepath.Join(dir, "missing.db")); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing source: %v, want ErrNotFound", err)
	}
	if _, _, err := CompactInPlace(filepath.Join(dir, "missing.db")); !errors.Is(err, ErrNotFound) {
		t.Errorf("in place, missing: %v, want ErrNotFound", err)
	}
	exists := filepath.Join(dir, "exists.db")
	if err := os.WriteFile(exists, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Compact(exists, path); err == nil || !errors.Is(err, os.ErrExist) {
		t.Errorf("existing destination: %v, want ErrExist", err)
	}
	if b, _ := os.ReadFile(exists); string(b) != "keep me" {
		t.Error("existing destination was overwritten")
	}
	notStore := filepath.Join(dir, "text")
	if err := os.WriteFile(notStore, bytes.Repeat([]byte("text\n"), 5000), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Compact(filepath.Join(dir, "y.db"), notStore); !errors.Is(err, ErrCorrupt) {
		t.Errorf("not a store: %v, want ErrCorrupt", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "y.db")); !errors.Is(err, os.ErrNotExist) {
		t.Error("a failed compaction left its destination")
	}

	// A store held by a writer (a running trainer) is refused.
	w, err := Open(path, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := Compact(filepath.Join(dir, "z.db"), path); !errors.Is(err, ErrLocked) {
		t.Errorf("locked source: %v, want ErrLocked", err)
	}
	if _, _, err := CompactInPlace(path); !errors.Is(err, ErrLocked) {
		t.Errorf("in place, locked: %v, want ErrLocked", err)
	}
}
