package store

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/hessmon/hessmon/snapshot"
)

// warmBytes is a warm state of n bytes whose content depends on gen, so
// that a state mixed from two saves shows.
func warmBytes(n int, gen uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(gen, uint64(n)))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestWarmRoundTrip(t *testing.T) {
	s, _ := newStore(t)
	pb := pieceBytes(s.db.Info().PageSize)
	if b, err := s.Warm("r"); b != nil || err != nil {
		t.Fatalf("no state yet: %d bytes, %v", len(b), err)
	}
	// Sizes around the piece and batch boundaries, growing and shrinking.
	sizes := []int{0, 1, pb - 1, pb, pb + 1, 2 * pb, minBatchBytes - 1, minBatchBytes + pb + 3, 3*minBatchBytes + 5, 7, 4_734_961, 100}
	for i, n := range sizes {
		want := warmBytes(n, uint64(i))
		if err := s.PutWarm("r", want); err != nil {
			t.Fatal(err)
		}
		got, err := s.Warm("r")
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if got == nil || !bytes.Equal(got, want) {
			t.Fatalf("%d bytes: got %d bytes back, not the state saved", n, len(got))
		}
		info, ok, err := s.WarmInfo("r")
		if err != nil || !ok || !info.Complete || info.Gen != uint64(i+1) || info.Bytes != int64(n) {
			t.Fatalf("%d bytes: info %+v, ok %v, %v; want generation %d complete", n, info, ok, err, i+1)
		}
	}
	// Shrinking dropped the pieces of the larger states.
	if err := s.db.View(func(tx *bolt.Tx) error {
		pcs := tx.Bucket(bucketRuns).Bucket([]byte("r")).Bucket(bucketWarmState).Bucket(bucketPieces)
		if n := pcs.Stats().KeyN; n != 1 {
			t.Errorf("%d pieces stored for a 100-byte state, want 1", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The state is per run.
	if err := s.PutWarm("other", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Warm("r"); len(got) != 100 {
		t.Errorf("run r's state changed with another run's: %d bytes", len(got))
	}
	if err := s.PutWarm("", nil); err == nil {
		t.Error("PutWarm accepted an empty run id")
	}
}

// TestWarmPagesSingle checks the property the layout rests on: no page of
// the warm state is an overflow run, so every allocation is one page.
func TestWarmPagesSingle(t *testing.T) {
	s, _ := newStore(t)
	for gen := range uint64(3) {
		if err := s.PutWarm("r", warmBytes(2_000_000+int(gen), gen)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.db.View(func(tx *bolt.Tx) error {
		st := tx.Bucket(bucketRuns).Bucket([]byte("r")).Bucket(bucketWarmState).Bucket(bucketPieces).Stats()
		if st.LeafOverflowN != 0 || st.BranchOverflowN != 0 {
			t.Errorf("warm pieces use overflow pages: %+v", st)
		}
		if st.LeafPageN*piecesPerLeaf < st.KeyN || (st.LeafPageN-1)*piecesPerLeaf >= st.KeyN {
			t.Errorf("%d leaves for %d pieces, want %d per leaf", st.LeafPageN, st.KeyN, piecesPerLeaf)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestFileStaysNearLiveSize saves a 4.7 MB warm state and a snapshot at
// each of 1,000 probes (2 MB and 400 under the race detector), as a
// monitor writing its state at every probe would. Stored as one bbolt value, the same sequence leaves a file of
// several times its live size.
func TestFileStaysNearLiveSize(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 4.7 GB through the page cache")
	}
	s, _ := newStore(t)
	state, probes := warmBytes(4_734_961, 1), int64(1000)
	if raceEnabled {
		state, probes = warmBytes(2_000_000, 1), 400
	}
	for step := range probes {
		if err := s.PutSnapshot(fullSnapshot("r", step)); err != nil {
			t.Fatal(err)
		}
		state[step] ^= 0xff
		if err := s.PutWarm("r", state); err != nil {
			t.Fatal(err)
		}
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v: file %.2f× in use", st, float64(st.FileBytes)/float64(st.InUseBytes))
	if st.FileBytes > 2*st.InUseBytes {
		t.Errorf("file of %d bytes for %d in use: more than 2×", st.FileBytes, st.InUseBytes)
	}
	// Spare room is about one save batch plus the growth step.
	if spare := st.FileBytes - st.InUseBytes; spare > 3*minBatchBytes+growBytes {
		t.Errorf("%d spare bytes, want at most a few MiB", spare)
	}
}

// TestWarmTorn cuts a save short after its first batch, as a crash would:
// the run then has no warm state, not a mixed one, until the next save.
func TestWarmTorn(t *testing.T) {
	s, _ := newStore(t)
	old := warmBytes(3*minBatchBytes, 1)
	if err := s.PutWarm("r", old); err != nil {
		t.Fatal(err)
	}
	errCrash := errors.New("crash")
	calls := 0
	s.afterBatch = func() error {
		if calls++; calls == 1 {
			return errCrash
		}
		return nil
	}
	if err := s.PutWarm("r", warmBytes(3*minBatchBytes, 2)); !errors.Is(err, errCrash) {
		t.Fatalf("PutWarm: %v", err)
	}
	s.afterBatch = nil
	if got, err := s.Warm("r"); got != nil || err != nil {
		t.Fatalf("torn save: %d bytes, %v; want nil, nil", len(got), err)
	}
	if info, ok, err := s.WarmInfo("r"); err != nil || !ok || info.Complete || info.Gen != 2 {
		t.Fatalf("torn save: info %+v, %v, %v", info, ok, err)
	}
	want := warmBytes(3*minBatchBytes, 3)
	if err := s.PutWarm("r", want); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Warm("r"); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("after the next save: %d bytes, %v", len(got), err)
	}
}

// TestWarmLegacy reads a state stored by an older hessmon as one value,
// and replaces it with a save.
func TestWarmLegacy(t *testing.T) {
	s, _ := newStore(t)
	if err := s.PutRun(snapshot.Run{ID: "r"}); err != nil {
		t.Fatal(err)
	}
	legacy := []byte("HMW1 old state")
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRuns).Bucket([]byte("r")).Put(keyWarm, legacy)
	}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Warm("r"); err != nil || !bytes.Equal(got, legacy) {
		t.Fatalf("legacy state: %q, %v", got, err)
	}
	if err := s.PutWarm("r", []byte("new")); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Warm("r"); err != nil || string(got) != "new" {
		t.Fatalf("after a save: %q, %v", got, err)
	}
	if err := s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketRuns).Bucket([]byte("r")).Get(keyWarm) != nil {
			t.Error("the legacy value was kept")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestWarmCorrupt(t *testing.T) {
	for name, damage := range map[string]func(wb *bolt.Bucket) error{
		"flipped byte": func(wb *bolt.Bucket) error {
			pcs := wb.Bucket(bucketPieces)
			v := bytes.Clone(pcs.Get(pieceKey(1)))
			v[7] ^= 1
			return pcs.Put(pieceKey(1), v)
		},
		"missing piece": func(wb *bolt.Bucket) error { return wb.Bucket(bucketPieces).Delete(pieceKey(2)) },
		"short piece": func(wb *bolt.Bucket) error {
			pcs := wb.Bucket(bucketPieces)
			return pcs.Put(pieceKey(0), pcs.Get(pieceKey(0))[:10])
		},
		"bad header": func(wb *bolt.Bucket) error { return wb.Put(keyWarmHead, []byte("HMWH junk")) },
		"no pieces":  func(wb *bolt.Bucket) error { return wb.DeleteBucket(bucketPieces) },
	} {
		t.Run(name, func(t *testing.T) {
			s, _ := newStore(t)
			if err := s.PutWarm("r", warmBytes(100_000, 1)); err != nil {
				t.Fatal(err)
			}
			if err := s.db.Update(func(tx *bolt.Tx) error {
				return damage(tx.Bucket(bucketRuns).Bucket([]byte("r")).Bucket(bucketWarmState))
			}); err != nil {
				t.Fatal(err)
			}
			got, err := s.Warm("r")
			if !errors.Is(err, ErrCorrupt) || got != nil {
				t.Fatalf("got %d bytes, %v; want ErrCorrupt", len(got), err)
			}
		})
	}
}

// FuzzWarmHead feeds arbitrary headers and pieces to the decoder: it must
// return a state whose checksum matches, or ErrCorrupt, never panic or
// allocate what the pieces do not hold.
func FuzzWarmHead(f *testing.F) {
	good := warmHead{state: warmComplete, gen: 3, length: 10, pieceBytes: 4, pieces: 3, crc: 0, written: 1}
	f.Add(good.encode(), []byte("0123456789"))
	f.Add(warmHead{state: warmWriting, pieceBytes: 1}.encode(), []byte{})
	f.Add([]byte("HMWH"), []byte("x"))
	f.Fuzz(func(t *testing.T, head, data []byte) {
		h, err := decodeWarmHead(head)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("header error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if !bytes.Equal(h.encode(), head) && binary.BigEndian.Uint16(head[6:]) == 0 {
			t.Fatalf("header does not round-trip")
		}
		out, err := assembleWarm(h, func(i uint32) []byte {
			lo := uint64(i) * uint64(h.pieceBytes)
			if lo >= uint64(len(data)) {
				return nil
			}
			return data[lo:min(uint64(len(data)), lo+uint64(h.pieceBytes))]
		})
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("assemble error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if uint64(len(out)) != h.length || !bytes.Equal(out, data[:len(out)]) {
			t.Fatalf("assembled %d bytes, header says %d", len(out), h.length)
		}
	})
}

// childWarm saves generation after generation of a multi-batch warm state,
// printing each generation once PutWarm has returned, until it is killed.
func childWarm(path string) {
	s, err := Open(path, Options{})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	for gen := uint64(1); ; gen++ {
		if err := s.PutWarm("crash", warmBytes(2*minBatchBytes+12345, gen)); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println(gen)
	}
}

// TestWarmCrash kills a process in the middle of its saves with SIGKILL:
// afterwards the store holds either a complete state of a generation no
// older than the last acknowledged one, or (a save cut short) none.
func TestWarmCrash(t *testing.T) {
	var torn, whole int
	for rep := range 6 {
		path := filepath.Join(t.TempDir(), "hessmon.db")
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "HESSMON_STORE_CHILD=warm", "HESSMON_STORE_PATH="+path)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		var acked uint64
		for sc.Scan() {
			gen, err := strconv.ParseUint(sc.Text(), 10, 64)
			if err != nil {
				_ = cmd.Process.Kill()
				t.Fatalf("child: %s", sc.Text())
			}
			acked = gen
			if gen == 2 {
				// Kill at a varying point of the next saves.
				time.Sleep(time.Duration(rep) * 7 * time.Millisecond)
				_ = cmd.Process.Signal(syscall.SIGKILL)
				break
			}
		}
		_ = cmd.Wait()
		s, err := Open(path, Options{ReadOnly: true})
		if err != nil {
			t.Fatalf("rep %d: open after SIGKILL: %v", rep, err)
		}
		got, err := s.Warm("crash")
		info, _, ierr := s.WarmInfo("crash")
		_ = s.Close()
		if err != nil || ierr != nil {
			t.Fatalf("rep %d: %v, %v", rep, err, ierr)
		}
		if info.Gen < acked {
			t.Fatalf("rep %d: generation %d stored, %d acknowledged", rep, info.Gen, acked)
		}
		if got == nil {
			if info.Complete {
				t.Fatalf("rep %d: complete generation %d but no state", rep, info.Gen)
			}
			torn++
			continue
		}
		whole++
		if !bytes.Equal(got, warmBytes(2*minBatchBytes+12345, info.Gen)) {
			t.Fatalf("rep %d: the state is not generation %d's", rep, info.Gen)
		}
	}
	t.Logf("%d kills left a complete state, %d a save cut short", whole, torn)
}
