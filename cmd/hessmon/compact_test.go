package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/store"
)

// churnedStore writes a store with free pages: a warm state rewritten at
// every probe, then shrunk.
func churnedStore(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hessmon.db")
	st, err := store.Open(path, store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for step := int64(10); step <= 300; step += 10 {
		if err := st.PutSnapshot(snapshot.Snapshot{Run: "r", Step: step, Eigenvalues: []float64{float64(step)}}); err != nil {
			t.Fatal(err)
		}
		if err := st.PutWarm("r", bytes.Repeat([]byte{byte(step)}, 2<<20)); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.PutWarm("r", []byte("small")); err != nil {
		t.Fatal(err)
	}
	return path
}

func runCmd(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(context.Background(), args, &o, &e)
	return code, o.String(), e.String()
}

func TestCompactCommand(t *testing.T) {
	path := churnedStore(t)
	before, _ := os.Stat(path)
	code, out, errs := runCmd("compact", "--db", path)
	if code != 0 || !strings.Contains(out, "compacted "+path) {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	after, _ := os.Stat(path)
	if after.Size() >= before.Size() {
		t.Errorf("file %d bytes after compaction, %d before", after.Size(), before.Size())
	}
	code, out, errs = runCmd("show", "--db", path)
	if code != 0 || !strings.Contains(out, "30 snapshots") {
		t.Errorf("show after compaction: exit %d\n%s%s", code, out, errs)
	}

	dst := filepath.Join(t.TempDir(), "copy.db")
	if code, out, errs := runCmd("compact", "--db", path, "--out", dst); code != 0 || !strings.Contains(out, "wrote "+dst) {
		t.Fatalf("--out: exit %d\n%s%s", code, out, errs)
	}
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--db", filepath.Join(t.TempDir(), "missing.db")}, 1, "does not exist"},
		{[]string{"--db", path, "--out", dst}, 1, "already exists"},
		{[]string{"--db", ""}, 2, "--db must name"},
		{[]string{"--bogus"}, 2, "flag provided but not defined"},
		{[]string{"--help"}, 0, "bbolt's Compact"},
	} {
		code, _, errs := runCmd(append([]string{"compact"}, c.args...)...)
		if code != c.code || !strings.Contains(errs, c.msg) {
			t.Errorf("compact %v: exit %d, want %d with %q:\n%s", c.args, code, c.code, c.msg, errs)
		}
	}

	// A store that a trainer holds is refused, and left alone.
	w, err := store.Open(path, store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	code, _, errs = runCmd("compact", "--db", path)
	if code != 1 || !strings.Contains(errs, "running trainer") || !strings.Contains(errs, "after training has finished") {
		t.Errorf("locked: exit %d\n%s", code, errs)
	}
}
