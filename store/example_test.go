package store_test

import (
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/store"
)

// A trainer writes snapshots; once it has closed the file, anyone can
// inspect it read-only.
func Example() {
	dir, err := os.MkdirTemp("", "hessmon")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "hessmon.db")

	w, err := store.Open(path, store.Options{})
	if err != nil {
		log.Fatal(err)
	}
	start := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := w.PutRun(snapshot.Run{ID: "mlp-sgd", Model: "mlp 784-128-128-10", Optimizer: "sgd", Started: start}); err != nil {
		log.Fatal(err)
	}
	for step := int64(0); step <= 200; step += 50 {
		s := snapshot.Snapshot{
			Run: "mlp-sgd", Step: step, Time: start.Add(time.Duration(step) * time.Second),
			LearningRate: 0.1, Eigenvalues: []float64{2 + float64(step)/10}, Residuals: []float64{1e-9},
		}
		if err := w.PutSnapshot(s); err != nil { // fsynced when it returns
			log.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		log.Fatal(err)
	}

	r, err := store.Open(path, store.Options{ReadOnly: true})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	runs, err := r.Runs()
	if err != nil {
		log.Fatal(err)
	}
	for _, s := range runs {
		fmt.Printf("%s: steps %d..%d, %d snapshots, λ1 %g → %g\n",
			s.ID, s.FirstStep, s.LastStep, s.Snapshots, *s.FirstLambda1, *s.LastLambda1)
	}
	snaps, err := r.Snapshots("mlp-sgd", 50, 150)
	if err != nil {
		log.Fatal(err)
	}
	for _, s := range snaps {
		fmt.Println(s.Step, s.Eigenvalues[0])
	}
	// Output:
	// mlp-sgd: steps 0..200, 5 snapshots, λ1 2 → 22
	// 50 7
	// 100 12
	// 150 17
}

// Inspection tools tell the user what went wrong in one line.
func ExampleOpen_readOnly() {
	_, err := store.Open(filepath.Join(os.TempDir(), "no-such-hessmon.db"), store.Options{ReadOnly: true})
	switch {
	case errors.Is(err, store.ErrNotFound):
		fmt.Println("no such store")
	case errors.Is(err, store.ErrLocked):
		fmt.Println("a trainer is writing it: use its HTTP API")
	case errors.Is(err, store.ErrCorrupt), errors.Is(err, store.ErrSchema):
		fmt.Println("unreadable:", err)
	}
	// Output: no such store
}

// A long run is read in pieces: a Query selects the parts to decode (here
// no ESD and no eigenvectors), a step range and a page size.
func ExampleStore_Read() {
	dir, err := os.MkdirTemp("", "hessmon")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	st, err := store.Open(filepath.Join(dir, "hessmon.db"), store.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	for step := int64(100); step <= 500; step += 100 {
		if err := st.PutSnapshot(snapshot.Snapshot{
			Run: "r", Step: step, Eigenvalues: []float64{float64(step) / 100},
			Trace:        &snapshot.Trace{Value: 20, StdErr: 1},
			ESD:          &snapshot.ESD{Nodes: make([]float64, 30), Weights: make([]float64, 30), Probes: 1, Steps: 30},
			Eigenvectors: [][]float64{make([]float64, 1000)},
		}); err != nil {
			log.Fatal(err)
		}
	}
	for s, err := range st.All("r", store.Query{Fields: store.WithTrace}) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(s.Step, s.Eigenvalues[0], s.Trace.Value, s.ESD == nil, s.Eigenvectors == nil)
	}
	page, err := st.Read("r", store.Query{From: 250, Limit: 2})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("page:", page[0].Step, page[1].Step)
	// Output:
	// 100 1 20 true true
	// 200 2 20 true true
	// 300 3 20 true true
	// 400 4 20 true true
	// 500 5 20 true true
	// page: 300 400
}

// A finished store shrinks to its live size; the warm state survives.
func ExampleCompactInPlace() {
	dir, err := os.MkdirTemp("", "hessmon")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "hessmon.db")
	st, err := store.Open(path, store.Options{NoSync: true})
	if err != nil {
		log.Fatal(err)
	}
	for i := range 20 {
		if err := st.PutWarm("r", make([]byte, (20-i)<<20)); err != nil { // 20 MB, 19 MB, … 1 MB
			log.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		log.Fatal(err)
	}
	before, after, err := store.CompactInPlace(path)
	if err != nil {
		log.Fatal(err)
	}
	r, err := store.Open(path, store.Options{ReadOnly: true})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	w, err := r.Warm("r")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(after < before/4, len(w))
	// Output: true 1048576
}
