package testutil

import (
	"path/filepath"
	"testing"

	"github.com/hessmon/hessmon/store"
)

// NewStore opens a fresh store in t's temporary directory, without fsync,
// and closes it when the test ends.
func NewStore(t testing.TB) *store.Store {
	t.Helper()
	s, err := store.Open(filepath.Join(t.TempDir(), "hessmon.db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}
