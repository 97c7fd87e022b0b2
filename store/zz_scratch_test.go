package store

import (
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/hessmon/hessmon/monitor/snapshot"
)

func synthSnap(step int64, r *rand.Rand) snapshot.Snapshot {
	s := snapshot.Snapshot{Run: "r", Step: step, Time: time.Unix(1700000000+step, 0), Loss: r.Float64(), LearningRate: 0.1, Optimizer: "sgd",
		Eigenvalues: make([]float64, 5), Residuals: make([]float64, 5), HVPs: 100, Seconds: 0.5, Warm: true}
	s.Trace = &snapshot.Trace{Value: 10, StdErr: 1, Probes: 10, Method: "hutch++"}
	for i := range 6 {
		s.Trace.Blocks = append(s.Trace.Blocks, snapshot.BlockTrace{Name: fmt.Sprintf("layer%d.w", i), Value: r.Float64(), StdErr: 0.1})
	}
	s.ESD = &snapshot.ESD{Nodes: make([]float64, 30), Weights: make([]float64, 30), Probes: 1, Steps: 30, Sigma2: 1e-3}
	for i := range 30 {
		s.ESD.Nodes[i], s.ESD.Weights[i] = r.Float64(), r.Float64()
	}
	return s
}

func liveBytes(db *bolt.DB) (hw, inuse, file int64) {
	_ = db.View(func(tx *bolt.Tx) error {
		ps := int64(db.Info().PageSize)
		hw = tx.Size()
		st := db.Stats()
		inuse = hw - int64(st.FreePageN+st.PendingPageN)*ps
		return nil
	})
	fi, _ := os.Stat(db.Path())
	file = fi.Size()
	return
}

func TestScratchGrowth(t *testing.T) {
	n := 100
	if s := os.Getenv("N"); s != "" {
		fmt.Sscan(s, &n)
	}
	path := t.TempDir() + "/x.db"
	st, err := Open(path, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	warm := make([]byte, 5*118000*8+2000)
	for i := range n {
		sn := synthSnap(int64(20*(i+1)), r)
		if err := st.PutSnapshot(sn); err != nil {
			t.Fatal(err)
		}
		warm[i%len(warm)]++
		if err := st.PutWarm("r", warm); err != nil {
			t.Fatal(err)
		}
		if (i+1)%(n/10) == 0 {
			hw, in, f := liveBytes(st.db)
			ss, _ := st.Stats()
			t.Logf("probes %d file %.1fMB hw %.1fMB inuse %.1fMB stats %+v ratio %.2f", i+1, float64(f)/1e6, float64(hw)/1e6, float64(in)/1e6, ss, float64(ss.FileBytes)/float64(ss.InUseBytes))
		}
	}
	st.db.View(func(tx *bolt.Tx) error {
		rb := tx.Bucket(bucketRuns).Bucket([]byte("r"))
		t.Logf("snap stats %+v", rb.Bucket(bucketSnapshots).Stats())
		t.Logf("warm stats %+v", rb.Bucket(bucketWarmState).Stats())
		return nil
	})
	st.Close()
}

func TestScratchInspect(t *testing.T) {
	p := os.Getenv("DB")
	if p == "" {
		t.Skip()
	}
	db, err := bolt.Open(p, 0o644, &bolt.Options{ReadOnly: true, PreLoadFreelist: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	hw, in, f := liveBytes(db)
	st := db.Stats()
	t.Logf("file %d hw %d inuse %d free %d pending %d freelistinuse %d", f, hw, in, st.FreePageN, st.PendingPageN, st.FreelistInuse)
	db.View(func(tx *bolt.Tx) error {
		rb := tx.Bucket([]byte("runs"))
		return rb.ForEachBucket(func(k []byte) error {
			b := rb.Bucket(k)
			s := b.Stats()
			t.Logf("run %s: %+v warm len %d", k, s, len(b.Get([]byte("warm"))))
			return nil
		})
	})
}

func freeRuns(db *bolt.DB) string {
	var out []string
	db.View(func(tx *bolt.Tx) error {
		n := int(tx.Size() / 4096)
		start, ln := -1, 0
		for id := 2; id < n; {
			pi, err := tx.Page(id)
			if err != nil || pi == nil {
				id++
				continue
			}
			if pi.Type == "free" {
				if start < 0 {
					start, ln = id, 0
				}
				ln++
				id++
				continue
			}
			if start >= 0 {
				out = append(out, fmt.Sprintf("%d+%d", start, ln))
				start = -1
			}
			id += 1 + pi.OverflowCount
		}
		if start >= 0 {
			out = append(out, fmt.Sprintf("%d+%d", start, ln))
		}
		out = append(out, fmt.Sprintf("| hw %d", n))
		return nil
	})
	return fmt.Sprint(out)
}

func TestScratchTrace(t *testing.T) {
	path := t.TempDir() + "/x.db"
	st, err := Open(path, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	warm := make([]byte, 5*118000*8+2000)
	for i := range 12 {
		sn := synthSnap(int64(20*(i+1)), r)
		st.PutSnapshot(sn)
		t.Logf("S%d: %s", i, freeRuns(st.db))
		st.PutWarm("r", warm)
		t.Logf("W%d: %s", i, freeRuns(st.db))
	}
}

func TestScratchSize(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	b, _ := EncodeSnapshot(synthSnap(20, r))
	t.Logf("encoded %d", len(b))
	p := os.Getenv("DB")
	if p == "" {
		return
	}
	st, err := OpenReadOnly(p)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	runs, _ := st.Runs()
	for _, ru := range runs {
		st.db.View(func(tx *bolt.Tx) error {
			sb := tx.Bucket(bucketRuns).Bucket([]byte(ru.ID)).Bucket(bucketSnapshots)
			tot := 0
			sb.ForEach(func(k, v []byte) error { tot += len(v); return nil })
			t.Logf("run %s: %d snapshots, %d bytes avg %d; stats %+v", ru.ID, ru.Snapshots, tot, tot/max(1, ru.Snapshots), sb.Stats())
			return nil
		})
	}
	ss, _ := st.Stats()
	t.Logf("%+v", ss)
}

func TestScratchLeaves(t *testing.T) {
	s, _ := newStore(t)
	for gen := range uint64(3) {
		if err := s.PutWarm("r", warmBytes(2_000_000+int(gen), gen)); err != nil {
			t.Fatal(err)
		}
		s.db.View(func(tx *bolt.Tx) error {
			n := int(tx.Size() / 16384)
			var out []string
			for id := 2; id < n; id++ {
				pi, _ := tx.Page(id)
				if pi != nil && pi.Type == "leaf" && (pi.Count != 2 || pi.OverflowCount > 0) {
					out = append(out, fmt.Sprintf("%d:%d/%d", id, pi.Count, pi.OverflowCount))
				}
			}
			t.Log(gen, out)
			return nil
		})
	}
}
