package export

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/hessmon/hessmon/snapshot"
)

// WriteFiles writes snaps in format (csv, json or jsonl) to the file out,
// or to w if out is empty, and returns the files it wrote. A CSV export to
// a file also writes the long-format CSVs the snapshots have data for next
// to it (F.esd.csv, F.blocks.csv, F.mass.csv, F.block-lambda1.csv for
// F.csv); to w it writes the wide CSV alone. A file that fails to be
// written is removed.
func WriteFiles(w io.Writer, format, out string, snaps []snapshot.Snapshot) ([]string, error) {
	files := []string{}
	write := func(path string, fn func(io.Writer) error) error {
		if path == "" {
			return fn(w)
		}
		if err := writeFile(path, fn); err != nil {
			return err
		}
		files = append(files, path)
		return nil
	}
	var err error
	switch format {
	case "csv":
		if err := write(out, func(w io.Writer) error { return WriteCSV(w, snaps) }); err != nil {
			return files, err
		}
		if out != "" {
			err = writeCSVSides(write, strings.TrimSuffix(out, ".csv"), snaps)
		}
	case "json":
		err = write(out, func(w io.Writer) error { return WriteJSON(w, snaps) })
	case "jsonl":
		err = write(out, func(w io.Writer) error { return WriteJSONL(w, snaps) })
	default:
		err = fmt.Errorf("export: format %q: want csv, json or jsonl", format)
	}
	return files, err
}

// writeCSVSides writes the long-format CSVs that snaps have data for next
// to base.csv: the ESD, the block traces, the block mass and block λ1.
func writeCSVSides(write func(string, func(io.Writer) error) error, base string, snaps []snapshot.Snapshot) error {
	if HasESD(snaps) {
		if err := write(base+".esd.csv", func(w io.Writer) error { return WriteESDCSV(w, snaps) }); err != nil {
			return err
		}
	}
	if HasBlocks(snaps) {
		if err := write(base+".blocks.csv", func(w io.Writer) error { return WriteBlocksCSV(w, snaps) }); err != nil {
			return err
		}
	}
	for _, side := range []struct {
		suffix string
		get    func(*snapshot.Snapshot) []snapshot.BlockValue
	}{
		{".mass.csv", func(s *snapshot.Snapshot) []snapshot.BlockValue { return s.BlockMass }},
		{".block-lambda1.csv", func(s *snapshot.Snapshot) []snapshot.BlockValue { return s.BlockLambda1 }},
	} {
		if !slices.ContainsFunc(snaps, func(s snapshot.Snapshot) bool { return len(side.get(&s)) > 0 }) {
			continue
		}
		if err := write(base+side.suffix, func(w io.Writer) error { return WriteBlockValuesCSV(w, snaps, side.get) }); err != nil {
			return err
		}
	}
	return nil
}

// writeFile writes path through fn and removes it again if anything fails.
func writeFile(path string, fn func(io.Writer) error) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			_ = os.Remove(path)
		}
	}()
	return fn(f)
}
