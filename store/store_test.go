package store

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"

	"github.com/hessmon/hessmon/snapshot"
)

// The test binary doubles as a child process for the cross-process tests.
func TestMain(m *testing.M) {
	switch os.Getenv("HESSMON_STORE_CHILD") {
	case "hold":
		childHold(os.Getenv("HESSMON_STORE_PATH"))
	case "write":
		childWrite(os.Getenv("HESSMON_STORE_PATH"))
	case "warm":
		childWarm(os.Getenv("HESSMON_STORE_PATH"))
	}
	os.Exit(m.Run())
}

// childHold opens the store for writing, says "ready", and holds the lock
// until its stdin closes.
func childHold(path string) {
	s, err := Open(path, Options{})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	_ = s.Close()
	os.Exit(0)
}

// childWrite writes snapshots forever, printing each step once PutSnapshot
// has returned, until it is killed.
func childWrite(path string) {
	s, err := Open(path, Options{})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	for step := int64(0); ; step++ {
		if err := s.PutSnapshot(fullSnapshot("crash", step)); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println(step)
	}
}

func newStore(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hessmon.db")
	s, err := Open(path, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, path
}

// probe makes a snapshot whose values depend on run and step, so that a
// mixed-up key shows.
func probe(run string, step int64, failed bool) snapshot.Snapshot {
	s := snapshot.Snapshot{
		Run: run, Step: step, Time: time.Unix(1700000000+step, 0).UTC(),
		Loss: 1 / float64(step+1), LearningRate: 0.1,
		Eigenvalues: []float64{float64(step) + float64(len(run)), 1},
		Residuals:   []float64{1e-8, 1e-8},
		Trace:       &snapshot.Trace{Value: float64(3 * step), StdErr: 0.5, Probes: 10},
		HVPs:        20,
	}
	if failed {
		s.Failure, s.Eigenvalues, s.Residuals, s.Trace = "nan", nil, nil, nil
		s.Loss = math.NaN()
	}
	return s
}

func TestRoundTrip(t *testing.T) {
	s, path := newStore(t)
	run := snapshot.Run{ID: "r1", Model: "mlp 784-128-10", Optimizer: "sgd",
		Started: time.Unix(1700000000, 0).UTC(), Config: map[string]string{"every": "50"}}
	if err := s.PutRun(run); err != nil {
		t.Fatal(err)
	}
	want := fullSnapshot("r1", 50)
	if err := s.PutSnapshot(want); err != nil {
		t.Fatal(err)
	}
	if err := s.PutWarm("r1", []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	ro, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	gotRun, err := ro.Run("r1")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(run, gotRun); d != "" {
		t.Errorf("run (-want +got):\n%s", d)
	}
	got, err := ro.Snapshot("r1", 50)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got, sameSnapshot); d != "" {
		t.Errorf("snapshot (-want +got):\n%s", d)
	}
	warm, err := ro.Warm("r1")
	if err != nil || string(warm) != "\x01\x02\x03" {
		t.Errorf("warm = %v, %v", warm, err)
	}
	if err := ro.PutSnapshot(want); err == nil {
		t.Error("PutSnapshot on a read-only store succeeded")
	}
	if err := ro.Check(); err != nil {
		t.Error(err)
	}
}

func TestReadAndRuns(t *testing.T) {
	s, _ := newStore(t)
	runs := []string{"a", "bb", "ccc", "run-with-a-long-name"}
	steps := []int64{0, 1, 5, 50, 255, 256, 1000, 65536, 1 << 33}
	for i, run := range runs {
		if err := s.PutRun(snapshot.Run{ID: run, Model: "m" + run, Started: time.Unix(int64(100-i), 0).UTC()}); err != nil {
			t.Fatal(err)
		}
		// Insert out of order; the store returns step order.
		for j := len(steps) - 1; j >= 0; j-- {
			if err := s.PutSnapshot(probe(run, steps[j], j%3 == 2)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, run := range runs {
		for _, q := range []struct{ from, to int64 }{{0, -1}, {1, 255}, {2, 4}, {-5, 0}, {256, 256}, {300, 299}, {1001, 1 << 40}} {
			got, err := s.Snapshots(run, q.from, q.to)
			if err != nil {
				t.Fatal(err)
			}
			var want []int64
			for _, st := range steps {
				if st >= q.from && (q.to < 0 || st <= q.to) {
					want = append(want, st)
				}
			}
			var gotSteps []int64
			for _, sn := range got {
				gotSteps = append(gotSteps, sn.Step)
				if sn.Run != run || (!sn.Failed() && sn.Eigenvalues[0] != float64(sn.Step)+float64(len(run))) {
					t.Errorf("run %s step %d: wrong snapshot %+v", run, sn.Step, sn)
				}
			}
			if !cmp.Equal(want, gotSteps) {
				t.Errorf("run %s [%d,%d]: steps %v, want %v", run, q.from, q.to, gotSteps, want)
			}
		}
	}

	sums, err := s.Runs()
	if err != nil {
		t.Fatal(err)
	}
	if len(sums) != len(runs) {
		t.Fatalf("%d summaries, want %d", len(sums), len(runs))
	}
	for i, sum := range sums {
		run := runs[len(runs)-1-i] // later index, earlier start
		var failures int
		first, last := math.NaN(), math.NaN()
		for j, st := range steps {
			if j%3 == 2 {
				failures++
				continue
			}
			if math.IsNaN(first) {
				first = float64(st) + float64(len(run))
			}
			last = float64(st) + float64(len(run))
		}
		if sum.ID != run || sum.Model != "m"+run || sum.Snapshots != len(steps) || sum.Failures != failures ||
			sum.FirstStep != steps[0] || sum.LastStep != steps[len(steps)-1] ||
			sum.FirstLambda1 == nil || *sum.FirstLambda1 != first || sum.LastLambda1 == nil || *sum.LastLambda1 != last {
			t.Errorf("summary %d = %+v, want run %s, %d snapshots, %d failures, λ1 %g..%g", i, sum, run, len(steps), failures, first, last)
		}
	}

	latest, err := s.Latest("a")
	if err != nil || latest.Step != 1<<33 {
		t.Errorf("Latest = step %d, %v", latest.Step, err)
	}

	// All stops where the loop breaks.
	n := 0
	for _, err := range s.All("a", Query{Fields: AllFields}) {
		if err != nil {
			t.Fatal(err)
		}
		if n++; n == 3 {
			break
		}
	}
	if n != 3 {
		t.Errorf("All: %d iterations after a break at 3", n)
	}
}

func TestRunCreatedBySnapshot(t *testing.T) {
	s, _ := newStore(t)
	if err := s.PutSnapshot(probe("implicit", 3, false)); err != nil {
		t.Fatal(err)
	}
	sums, err := s.Runs()
	if err != nil || len(sums) != 1 || sums[0].ID != "implicit" || sums[0].Snapshots != 1 {
		t.Fatalf("Runs = %+v, %v", sums, err)
	}
	// Replacing a step keeps one snapshot.
	if err := s.ReplaceSnapshot(probe("implicit", 3, true)); err != nil {
		t.Fatal(err)
	}
	sums, _ = s.Runs()
	if sums[0].Snapshots != 1 || sums[0].Failures != 1 || sums[0].FirstLambda1 != nil {
		t.Errorf("after overwrite: %+v", sums[0])
	}
}

func TestBadArguments(t *testing.T) {
	s, _ := newStore(t)
	if err := s.PutSnapshot(probe("", 1, false)); err == nil {
		t.Error("empty run id accepted")
	}
	if err := s.PutSnapshot(probe("r", -1, false)); err == nil {
		t.Error("negative step accepted")
	}
	if err := s.PutRun(snapshot.Run{}); err == nil {
		t.Error("empty run accepted")
	}
}

func TestUnknownRunAndStep(t *testing.T) {
	s, _ := newStore(t)
	if err := s.PutSnapshot(probe("r", 10, false)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Run("nope"); !errors.Is(err, ErrUnknownRun) {
		t.Errorf("Run: %v", err)
	}
	if _, err := s.Snapshot("nope", 10); !errors.Is(err, ErrUnknownRun) {
		t.Errorf("Snapshot unknown run: %v", err)
	}
	for _, step := range []int64{-1, 0, 11} {
		if _, err := s.Snapshot("r", step); !errors.Is(err, ErrUnknownStep) {
			t.Errorf("Snapshot step %d: %v", step, err)
		}
	}
	if _, err := s.Snapshots("nope", 0, -1); !errors.Is(err, ErrUnknownRun) {
		t.Errorf("Snapshots: %v", err)
	}
	if _, err := s.Latest("nope"); !errors.Is(err, ErrUnknownRun) {
		t.Errorf("Latest: %v", err)
	}
	if w, err := s.Warm("nope"); w != nil || err != nil {
		t.Errorf("Warm of unknown run = %v, %v; want nil, nil", w, err)
	}
	if w, err := s.Warm("r"); w != nil || err != nil {
		t.Errorf("Warm never put = %v, %v; want nil, nil", w, err)
	}
}

func TestNotFound(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing.db")
	_, err := Open(path, Options{ReadOnly: true})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("got %v, want ErrNotFound", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Error("Open(ReadOnly) created the file")
	}
	// A writer creates the file, but not a missing directory.
	_, err = Open(filepath.Join(t.TempDir(), "no", "such", "dir.db"), Options{})
	if err == nil || errors.Is(err, ErrCorrupt) || errors.Is(err, ErrNotFound) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open in a missing directory: %v", err)
	}
}

// openWithin runs open in a goroutine and fails the test if it hangs: the
// point of ErrLocked is to answer instead of waiting for the trainer.
func openWithin(t *testing.T, open func() (*Store, error)) error {
	t.Helper()
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		s, err := open()
		if err == nil {
			_ = s.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Logf("locked open answered after %v: %v", time.Since(start).Round(time.Millisecond), err)
		return err
	case <-time.After(time.Minute):
		t.Fatal("open of a locked store hangs")
		return nil
	}
}

func TestLockedSameProcess(t *testing.T) {
	_, path := newStore(t) // holds the write lock
	err := openWithin(t, func() (*Store, error) { return Open(path, Options{ReadOnly: true}) })
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("read-only open of a written store: %v, want ErrLocked", err)
	}
	if !strings.Contains(err.Error(), "running trainer") || !strings.Contains(err.Error(), "/api/runs") {
		t.Errorf("message does not point to the live API: %v", err)
	}
	if err := openWithin(t, func() (*Store, error) { return Open(path, Options{}) }); !errors.Is(err, ErrLocked) {
		t.Errorf("second writer: %v, want ErrLocked", err)
	}
}

func TestLockedOtherProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hessmon.db")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "HESSMON_STORE_CHILD=hold", "HESSMON_STORE_PATH="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("child: %q, %v", line, err)
	}
	if err := openWithin(t, func() (*Store, error) { return Open(path, Options{ReadOnly: true}) }); !errors.Is(err, ErrLocked) {
		t.Fatalf("got %v, want ErrLocked", err)
	}
	_ = stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("after the writer exited: %v", err)
	}
	_ = s.Close()
}

// TestCrashDurability kills a writing child with SIGKILL and checks that
// every snapshot whose PutSnapshot returned is in the file.
func TestCrashDurability(t *testing.T) {
	for rep := range 3 {
		path := filepath.Join(t.TempDir(), "hessmon.db")
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "HESSMON_STORE_CHILD=write", "HESSMON_STORE_PATH="+path)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		last := int64(-1)
		for sc.Scan() {
			step, err := strconv.ParseInt(sc.Text(), 10, 64)
			if err != nil {
				_ = cmd.Process.Kill()
				t.Fatalf("child: %s", sc.Text())
			}
			last = step
			if step == int64(2+5*rep) {
				_ = cmd.Process.Signal(syscall.SIGKILL)
				break
			}
		}
		_ = cmd.Wait()
		s, err := Open(path, Options{ReadOnly: true})
		if err != nil {
			t.Fatalf("rep %d: open after SIGKILL: %v", rep, err)
		}
		got, err := s.Snapshots("crash", 0, -1)
		_ = s.Close()
		if err != nil {
			t.Fatal(err)
		}
		// Snapshots after `last` may or may not have landed; none before it
		// may be missing.
		if int64(len(got)) < last+1 {
			t.Fatalf("rep %d: %d snapshots survived, child had acknowledged %d", rep, len(got), last+1)
		}
		for i, sn := range got {
			if sn.Step != int64(i) {
				t.Fatalf("rep %d: snapshot %d has step %d", rep, i, sn.Step)
			}
		}
	}
}

func TestCorruptFiles(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	garbage := make([]byte, 64<<10)
	for i := range garbage {
		garbage[i] = byte(rng.Uint32())
	}
	cases := map[string][]byte{
		"random":   garbage,
		"tiny":     []byte("hello"),
		"text":     []byte(strings.Repeat("not a database\n", 1000)),
		"one page": garbage[:4096],
	}
	for name, b := range cases {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(path, Options{ReadOnly: true}); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: Open(ReadOnly): %v, want ErrCorrupt", name, err)
		}
		if _, err := Open(path, Options{}); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: Open: %v, want ErrCorrupt", name, err)
		}
		if got, _ := os.ReadFile(path); string(got) != string(b) {
			t.Errorf("%s: file was modified", name)
		}
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(empty, Options{ReadOnly: true}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("empty: %v, want ErrCorrupt", err)
	}
}

// bigStore writes a store spanning many pages and returns its path and the
// size bbolt has in use.
func bigStore(t *testing.T) (string, int64) {
	t.Helper()
	s, path := newStore(t)
	for step := range int64(300) {
		sn := fullSnapshot("big", step)
		sn.Eigenvectors = [][]float64{make([]float64, 200)}
		if err := s.PutSnapshot(sn); err != nil {
			t.Fatal(err)
		}
	}
	var used int64
	if err := s.db.View(func(tx *bolt.Tx) error { used = tx.Size(); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path, used
}

// readAll opens path read-only and reads everything, returning the first
// error.
func readAll(path string) error {
	s, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		return err
	}
	defer s.Close()
	sums, err := s.Runs()
	if err != nil {
		return err
	}
	for _, sum := range sums {
		if _, err := s.Snapshots(sum.ID, 0, -1); err != nil {
			return err
		}
	}
	return s.Check()
}

func TestTruncated(t *testing.T) {
	path, used := bigStore(t)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := readAll(path); err != nil {
		t.Fatalf("intact store: %v", err)
	}
	for _, size := range []int64{used - 4096, used / 2, 3 * 4096, 4096, 100} {
		cut := filepath.Join(t.TempDir(), "cut.db")
		if err := os.WriteFile(cut, orig[:size], 0o644); err != nil {
			t.Fatal(err)
		}
		if err := readAll(cut); !errors.Is(err, ErrCorrupt) {
			t.Errorf("truncated to %d of %d bytes: %v, want ErrCorrupt", size, used, err)
		}
		if _, err := Open(cut, Options{}); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Open truncated to %d: %v, want ErrCorrupt", size, err)
		}
	}
}

// TestScribbled overwrites data pages with random bytes: reading must
// either succeed or fail with ErrCorrupt, never crash.
func TestScribbled(t *testing.T) {
	path, used := bigStore(t)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	var corrupt int
	for trial := range 40 {
		b := append([]byte(nil), orig...)
		// Keep the two meta pages; hit one data page.
		page := 2 + rng.Int64N(used/4096-2)
		for i := range 4096 {
			if rng.IntN(8) == 0 {
				b[page*4096+int64(i)] = byte(rng.Uint32())
			}
		}
		p := filepath.Join(t.TempDir(), fmt.Sprintf("s%d.db", trial))
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		err := readAll(p)
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Errorf("trial %d (page %d): %v does not wrap ErrCorrupt", trial, page, err)
		}
		if err != nil {
			corrupt++
			if trial < 6 {
				t.Logf("trial %d: %v", trial, err)
			}
		}
	}
	t.Logf("%d of 40 scribbled files reported corrupt", corrupt)
	if corrupt == 0 {
		t.Error("no scribbled file was detected")
	}
}

func TestSchemaMismatch(t *testing.T) {
	s, path := newStore(t)
	if err := s.db.Update(func(tx *bolt.Tx) error {
		var v [4]byte
		binary.BigEndian.PutUint32(v[:], 99)
		return tx.Bucket(bucketMeta).Put(keySchema, v[:])
	}); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	for name, open := range map[string]func() (*Store, error){
		"read-only": func() (*Store, error) { return Open(path, Options{ReadOnly: true}) },
		"write":     func() (*Store, error) { return Open(path, Options{}) },
	} {
		_, err := open()
		if !errors.Is(err, ErrSchema) {
			t.Fatalf("%s: %v, want ErrSchema", name, err)
		}
		if !strings.Contains(err.Error(), "99") || !strings.Contains(err.Error(), strconv.Itoa(SchemaVersion)) {
			t.Errorf("%s: message lacks the versions: %v", name, err)
		}
	}

	// A bbolt file of another program is not a hessmon store.
	other := filepath.Join(t.TempDir(), "other.db")
	db, err := bolt.Open(other, 0o644, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("x")); return err }); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	if _, err := Open(other, Options{ReadOnly: true}); !errors.Is(err, ErrSchema) {
		t.Errorf("foreign bbolt file: %v, want ErrSchema", err)
	}
	if _, err := Open(other, Options{}); !errors.Is(err, ErrSchema) {
		t.Errorf("foreign bbolt file, write: %v, want ErrSchema", err)
	}
}

func TestReopenForWriting(t *testing.T) {
	s, path := newStore(t)
	if err := s.PutSnapshot(probe("r", 1, false)); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	s2, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if err := s2.PutSnapshot(probe("r", 2, false)); err != nil {
		t.Fatal(err)
	}
	got, err := s2.Snapshots("r", 0, -1)
	if err != nil || len(got) != 2 {
		t.Fatalf("%d snapshots, %v", len(got), err)
	}
}

// TestAllPanicPropagates: a panic in the caller's callback is not
// reported as a corrupt store.
func TestAllPanicPropagates(t *testing.T) {
	s, _ := newStore(t)
	if err := s.PutSnapshot(probe("r", 1, false)); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if r := recover(); r != "boom" {
			t.Errorf("recovered %v, want boom", r)
		}
		// The store is still usable.
		if _, err := s.Snapshot("r", 1); err != nil {
			t.Error(err)
		}
	}()
	for range s.All("r", Query{}) {
		panic("boom")
	}
	t.Error("All swallowed the panic")
}
