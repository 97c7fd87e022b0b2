package export

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestWriteFiles: a CSV export to a file writes exactly the side files the
// snapshots have data for, each with what its own writer produces; to a
// writer it writes the wide CSV alone; an unknown format is an error.
func TestWriteFiles(t *testing.T) {
	snaps := testSnapshots()
	dir := t.TempDir()
	out := filepath.Join(dir, "run.csv")
	files, err := WriteFiles(nil, "csv", out, snaps)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{out, filepath.Join(dir, "run.esd.csv"), filepath.Join(dir, "run.blocks.csv")}
	if !slices.Equal(files, want) {
		t.Fatalf("files %v, want %v", files, want)
	}
	for i, w := range []func(*bytes.Buffer) error{
		func(b *bytes.Buffer) error { return WriteCSV(b, snaps) },
		func(b *bytes.Buffer) error { return WriteESDCSV(b, snaps) },
		func(b *bytes.Buffer) error { return WriteBlocksCSV(b, snaps) },
	} {
		var b bytes.Buffer
		if err := w(&b); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(want[i])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, b.Bytes()) {
			t.Errorf("%s differs from its writer's output", want[i])
		}
	}
	var stdout, jl bytes.Buffer
	files, err = WriteFiles(&stdout, "jsonl", "", snaps)
	if err != nil || len(files) != 0 {
		t.Fatalf("jsonl to a writer: files %v, err %v", files, err)
	}
	if err := WriteJSONL(&jl, snaps); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(stdout.Bytes(), jl.Bytes()) {
		t.Error("jsonl to a writer differs from WriteJSONL")
	}
	if _, err := WriteFiles(&stdout, "xml", "", snaps); err == nil {
		t.Error("format xml: no error")
	}
	if _, err := WriteFiles(nil, "json", filepath.Join(dir, "missing", "x.json"), snaps); err == nil {
		t.Error("unwritable path: no error")
	}
}
