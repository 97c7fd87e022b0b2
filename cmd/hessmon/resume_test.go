package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/store"
)

// resumeArgs are the small, synthetic runs of the resume tests: probes
// every 10 steps, checkpoints every 20.
func resumeArgs(db, run string, steps int, extra ...string) []string {
	return append([]string{"train", "--data", "synthetic", "--hidden", "16", "--steps", fmt.Sprint(steps), "--async=false", "--listen", "off",
		"--progress", "off", "--db", db, "--run", run, "--every", "10", "--checkpoint-every", "20", "--probe-batch", "64"}, extra...)
}

func runOK(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if code := run(context.Background(), args, &out, &errb); code != 0 {
		t.Fatalf("hessmon %s: exit %d\n%s", strings.Join(args, " "), code, errb.String())
	}
	return out.String()
}

var checksumRe = regexp.MustCompile(`weights after step (\d+): checksum ([0-9a-f]{16})`)

func checksum(t *testing.T, out string) string {
	t.Helper()
	m := checksumRe.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no checksum in\n%s", out)
	}
	return m[1] + ":" + m[2]
}

// rawSnapshots is every stored value of run, as bytes.
func rawSnapshots(t *testing.T, db, run string) map[string]string {
	t.Helper()
	bdb, err := bolt.Open(db, 0o644, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	out := map[string]string{}
	err = bdb.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("runs")).Bucket([]byte(run)).Bucket([]byte("snapshots")).ForEach(func(k, v []byte) error {
			out[string(k)] = string(v)
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestReusedIDIsRefused: the two commands. The second fails
// before training, naming --lr and --momentum, and the first run's
// stored values are unchanged byte for byte; the same configuration
// without --resume is refused too.
func TestReusedIDIsRefused(t *testing.T) {
	db := t.TempDir() + "/r.db"
	runOK(t, resumeArgs(db, "r", 30)...)
	before := rawSnapshots(t, db, "r")
	var out, errb bytes.Buffer
	code := run(context.Background(), resumeArgs(db, "r", 30, "--lr", "0.4", "--momentum", "0"), &out, &errb)
	if code != 2 || !strings.Contains(errb.String(), "--lr 0.05 → 0.4, --momentum 0.9 → 0") {
		t.Errorf("changed configuration: exit %d, %s", code, errb.String())
	}
	errb.Reset()
	if code := run(context.Background(), resumeArgs(db, "r", 30), &out, &errb); code != 2 || !strings.Contains(errb.String(), "--resume") {
		t.Errorf("same id without --resume: exit %d, %s", code, errb.String())
	}
	after := rawSnapshots(t, db, "r")
	if len(before) != 3 || len(after) != len(before) {
		t.Fatalf("%d snapshots before, %d after", len(before), len(after))
	}
	for k, v := range before {
		if after[k] != v {
			t.Errorf("step %x changed", k)
		}
	}
}

const resumeChildEnv = "HESSMON_RESUME_CHILD"

// killAt is stderr for the child: it SIGKILLs its own process when the
// log line of a probe at step is written (from the training goroutine,
// at the step after that probe), which is as abrupt as a kill from
// outside, at a known point.
type killAt struct{ pattern string }

func (k killAt) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte(k.pattern)) {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	return len(p), nil
}

// TestResumeKillChild is the child process of TestResumeContinues.
func TestResumeKillChild(t *testing.T) {
	var args []string
	if err := json.Unmarshal([]byte(os.Getenv(resumeChildEnv)), &args); err != nil || len(args) == 0 {
		t.Skip("child process of TestResumeContinues")
	}
	run(context.Background(), args, os.Stdout, killAt{"msg=probe step=30 "})
	os.Exit(3) // not killed
}

// TestResumeContinues: 120 steps in one go (run a), 60 then a resume to
// 120 (run b), and 60 killed with SIGKILL after step 30 then a resume to
// 120 (run c) end with bitwise the same weights; every snapshot's loss is
// the same, and the curvature agrees to its certificates (the resumed
// probes start from a float32 warm state).
func TestResumeContinues(t *testing.T) {
	if os.Getenv(resumeChildEnv) != "" {
		t.Skip("in the child")
	}
	db := t.TempDir() + "/r.db"
	sumA := checksum(t, runOK(t, resumeArgs(db, "a", 120)...))
	runOK(t, resumeArgs(db, "b", 60)...)
	sumB := checksum(t, runOK(t, resumeArgs(db, "b", 120, "--resume")...))

	args, _ := json.Marshal(resumeArgs(db, "c", 60))
	cmd := exec.Command(os.Args[0], "-test.run=^TestResumeKillChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), resumeChildEnv+"="+string(args))
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child: %v, want killed by SIGKILL", err)
	}
	st, err := store.Open(db, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	ck, _, _, _ := st.Checkpoint("c")
	last, _, _ := st.LastStep("c")
	st.Close()
	if ck != 20 || last != 30 {
		t.Fatalf("killed run: checkpoint after step %d, last snapshot %d; want 20 and 30", ck, last)
	}
	sumC := checksum(t, runOK(t, resumeArgs(db, "c", 120, "--resume")...))
	if !strings.HasPrefix(sumA, "120:") || sumB != sumA || sumC != sumA {
		t.Errorf("final weights: a %s, b %s, c %s", sumA, sumB, sumC)
	}

	st, err = store.Open(db, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	read := func(run string) []snapshot.Snapshot {
		s, err := st.Read(run, store.Query{Fields: store.WithTrace})
		if err != nil || len(s) != 12 {
			t.Fatalf("run %s: %d snapshots, %v", run, len(s), err)
		}
		return s
	}
	a := read("a")
	for _, run := range []string{"b", "c"} {
		for i, s := range read(run) {
			compareResumed(t, run, a[i], s)
		}
	}
	sums, _ := st.Runs()
	for _, r := range sums {
		if want := map[string]int64{"b": 60, "c": 20}[r.ID]; want != 0 && (len(r.Resumes) != 1 || r.Resumes[0].AtStep != want) {
			t.Errorf("run %s lineage %+v, want one resumption after step %d", r.ID, r.Resumes, want)
		}
	}
}

// compareResumed checks a resumed run's snapshot against the uninterrupted
// one's: the same step and loss bit for bit, eigenvalues within the sum of
// their residuals (|λ−θ| ≤ ‖Hv−θv‖ for a symmetric H), the trace within
// four combined standard errors.
func compareResumed(t *testing.T, run string, a, b snapshot.Snapshot) {
	t.Helper()
	if a.Step != b.Step || math.Float64bits(a.Loss) != math.Float64bits(b.Loss) {
		t.Errorf("run %s step %d loss %v; uninterrupted step %d loss %v", run, b.Step, b.Loss, a.Step, a.Loss)
	}
	if len(a.Eigenvalues) != len(b.Eigenvalues) || len(a.Eigenvalues) == 0 {
		t.Fatalf("run %s step %d: %d eigenvalues, uninterrupted %d", run, b.Step, len(b.Eigenvalues), len(a.Eigenvalues))
	}
	for i := range a.Eigenvalues {
		if d := math.Abs(a.Eigenvalues[i] - b.Eigenvalues[i]); d > a.Residuals[i]+b.Residuals[i]+1e-12 {
			t.Errorf("run %s step %d: λ%d %v, uninterrupted %v (residuals %.2g, %.2g)", run, b.Step, i+1, b.Eigenvalues[i], a.Eigenvalues[i],
				b.Residuals[i], a.Residuals[i])
		}
	}
	if a.Trace != nil && b.Trace != nil {
		if d := math.Abs(a.Trace.Value - b.Trace.Value); d > 4*math.Hypot(a.Trace.StdErr, b.Trace.StdErr) {
			t.Errorf("run %s step %d: trace %v ± %v, uninterrupted %v ± %v", run, b.Step, b.Trace.Value, b.Trace.StdErr, a.Trace.Value, a.Trace.StdErr)
		}
	}
}
