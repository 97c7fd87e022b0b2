package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/hessmon/hessmon/internal/bench"
)

func TestBenchStore(t *testing.T) {
	dir := t.TempDir()
	code, out, errs := runCmd("bench", "store", "--json", "--nosync", "--snapshots", "300", "--params", "20000", "--warm-every", "1", "--dir", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var r bench.StoreResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if r.Snapshots != 300 || r.WarmWrites != 300 || r.WarmBytes < 5*8*20000 {
		t.Errorf("run: %+v", r.Result)
	}
	fi, err := os.Stat(filepath.Join(dir, "bench.db"))
	if err != nil || fi.Size() != r.FileBytes {
		t.Errorf("file_bytes %d, the file has %v (%v)", r.FileBytes, fi.Size(), err)
	}
	if r.InUseBytes <= 0 || float64(r.FileBytes) > 2.5*float64(r.InUseBytes)+2<<20 {
		t.Errorf("file %d bytes for %d in use", r.FileBytes, r.InUseBytes)
	}
	for _, c := range storeReads("", "", 0) {
		if _, ok := r.ReadSeconds[c.name]; !ok {
			t.Errorf("no read time for %s", c.name)
		}
	}
	if len(r.Float32) != 2 || r.Float32[0].Warm32HVPs == 0 {
		t.Errorf("float32 figures: %+v", r.Float32)
	}
	if code, _, errs := runCmd("bench", "store", "--snapshots", "0"); code != 2 {
		t.Errorf("--snapshots 0: exit %d %s", code, errs)
	}
	if code, _, errs := runCmd("bench", "store", "--dir", dir); code != 1 {
		t.Errorf("existing store in --dir: exit %d %s", code, errs)
	}
}
