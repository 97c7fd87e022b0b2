package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/internal/testutil"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/store"
)

// rankOutput is what one rank of an in-process distributed run printed.
type rankOutput struct {
	err            error
	stdout, stderr testutil.SyncBuffer
}

// runTrainRanks runs `hessmon train` on size in-process ranks (goroutines
// over hvp.NewInProcGroup), as mpirun would start size processes; args(r)
// are rank r's command line ("train", flags…) and ctxs[r], if set, its context. A run that does
// not end within a few minutes is reported as a deadlock.
func runTrainRanks(t *testing.T, size int, args func(rank int) []string, ctxs []context.Context) []*rankOutput {
	t.Helper()
	comms := hvp.NewInProcGroup(size)
	outs := make([]*rankOutput, size)
	var wg sync.WaitGroup
	for r := range size {
		outs[r] = new(rankOutput)
		ctx := context.Background()
		if ctxs != nil && ctxs[r] != nil {
			ctx = ctxs[r]
		}
		left := 0
		wg.Go(func() {
			o := outs[r]
			o.err = trainCmd(ctx, &env{stdout: &o.stdout, stderr: &o.stderr}, args(r)[1:], func() (hvp.Comm, func() error, error) {
				return comms[r], func() error { left++; return nil }, nil
			})
			if left != 1 {
				o.err = errors.Join(o.err, fmt.Errorf("rank %d left the group %d times, want once", r, left))
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		t.Fatal("the ranks did not finish: deadlocked in a collective call?")
	}
	return outs
}

func readSnapshots(t *testing.T, db, run string) []snapshot.Snapshot {
	t.Helper()
	st, err := store.Open(db, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	snaps, err := st.Snapshots(run, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	return snaps
}

// relDiff is |a−b| / scale, with scale max(|a|, |b|) unless given.
func relDiff(a, b, scale float64) float64 {
	if scale == 0 {
		scale = math.Max(math.Abs(a), math.Abs(b))
	}
	if a == b {
		return 0
	}
	return math.Abs(a-b) / scale
}

// compareSnapshots requires got (rank 0 of a distributed run) to equal want
// (one process) to tol relative: eigenvalues, residuals (relative to |λ1|,
// since they are differences), trace and its stderr and block traces, the
// ESD nodes (relative to ‖H‖: Ritz values near 0 are only defined to ε‖H‖)
// and weights; and the same schedule, HVP counts, warm starts and losses.
func compareSnapshots(t *testing.T, got, want []snapshot.Snapshot, tol float64) (worst float64) {
	t.Helper()
	if len(got) != len(want) || len(want) == 0 {
		t.Fatalf("distributed run stored %d snapshots, single process %d (want equal, > 0)", len(got), len(want))
	}
	check := func(step int64, what string, d float64) {
		t.Helper()
		worst = math.Max(worst, d)
		if !(d <= tol) {
			t.Errorf("step %d %s: relative difference %.3g > %g", step, what, d, tol)
		}
	}
	for i, w := range want {
		g := got[i]
		if g.Step != w.Step || g.Failure != w.Failure || g.Warm != w.Warm || g.HVPs != w.HVPs {
			t.Fatalf("snapshot %d: distributed step %d failure %q warm %v hvps %d; single process step %d failure %q warm %v hvps %d",
				i, g.Step, g.Failure, g.Warm, g.HVPs, w.Step, w.Failure, w.Warm, w.HVPs)
		}
		if w.Failure != "" {
			t.Fatalf("step %d: the single-process probe failed (%s: %s); the comparison needs good probes", w.Step, w.Failure, w.Detail)
		}
		if len(g.Eigenvalues) != len(w.Eigenvalues) || len(w.Eigenvalues) == 0 || w.Trace == nil || g.Trace == nil || w.ESD == nil || g.ESD == nil {
			t.Fatalf("step %d: estimates missing (eigenvalues %d vs %d, trace %v/%v, ESD %v/%v)", w.Step,
				len(g.Eigenvalues), len(w.Eigenvalues), g.Trace != nil, w.Trace != nil, g.ESD != nil, w.ESD != nil)
		}
		norm := 0.0
		for k, l := range w.Eigenvalues {
			norm = math.Max(norm, math.Abs(l))
			check(w.Step, fmt.Sprintf("λ%d", k+1), relDiff(g.Eigenvalues[k], l, 0))
			check(w.Step, fmt.Sprintf("residual %d (÷|λ1|)", k+1), relDiff(g.Residuals[k], w.Residuals[k], math.Abs(w.Eigenvalues[0])))
		}
		check(w.Step, "loss", relDiff(g.Loss, w.Loss, 0))
		check(w.Step, "trace", relDiff(g.Trace.Value, w.Trace.Value, 0))
		check(w.Step, "trace stderr", relDiff(g.Trace.StdErr, w.Trace.StdErr, 0))
		if g.Trace.Probes != w.Trace.Probes || g.Trace.Method != w.Trace.Method || len(g.Trace.Blocks) != len(w.Trace.Blocks) {
			t.Fatalf("step %d: trace probes %d/%d, method %s/%s, blocks %d/%d", w.Step, g.Trace.Probes, w.Trace.Probes,
				g.Trace.Method, w.Trace.Method, len(g.Trace.Blocks), len(w.Trace.Blocks))
		}
		for k, b := range w.Trace.Blocks {
			check(w.Step, "block trace "+b.Name+" (÷|trace|)", relDiff(g.Trace.Blocks[k].Value, b.Value, math.Abs(w.Trace.Value)))
		}
		if len(g.ESD.Nodes) != len(w.ESD.Nodes) || len(w.ESD.Nodes) == 0 {
			t.Fatalf("step %d: ESD with %d nodes, single process %d", w.Step, len(g.ESD.Nodes), len(w.ESD.Nodes))
		}
		for k := range w.ESD.Nodes {
			check(w.Step, fmt.Sprintf("ESD node %d (÷‖H‖)", k), relDiff(g.ESD.Nodes[k], w.ESD.Nodes[k], norm))
			check(w.Step, fmt.Sprintf("ESD weight %d", k), math.Abs(g.ESD.Weights[k]-w.ESD.Weights[k]))
		}
	}
	return worst
}

// The distributed probing path on 2 in-process ranks must store, on rank 0,
// the snapshots of a single process probing synchronously with the same
// flags — also when the run is resumed and starts warm from the stored
// state, which rank 0 must hand to rank 1 — and rank 1 must write nothing:
// no output, no store (rank 0 holds its lock) and no listener (rank 0
// binds the same address).
func TestTrainDistributedMatchesSingleProcess(t *testing.T) {
	dir := t.TempDir()
	base := []string{"train", "--data", "synthetic", "--hidden", "16", "--steps", "30", "--every", "10", "--probe-batch", "50",
		"--top", "3", "--esd-steps", "12", "--max-hvps", "200", "--run", "r", "--seed", "3", "--progress", "off"}
	single, dist := dir+"/single.db", dir+"/dist.db"
	addr := testutil.FreeAddr(t)
	var worst float64
	for phase := range 2 { // phase 1 resumes run r: warm start from the store
		var stdout, stderr testutil.SyncBuffer
		args := append(append([]string{}, base...), "--async=false", "--db", single, "--listen", "off", "--overwrite")
		if code := run(context.Background(), args, &stdout, &stderr); code != 0 {
			t.Fatalf("single process, phase %d: exit %d\n%s", phase, code, stderr.String())
		}
		outs := runTrainRanks(t, 2, func(int) []string {
			return append(append([]string{}, base...), "--distributed", "--db", dist, "--listen", addr, "--overwrite")
		}, nil)
		for r, o := range outs {
			if o.err != nil {
				t.Fatalf("phase %d rank %d: %v\nstderr:\n%s", phase, r, o.err, o.stderr.String())
			}
		}
		if s := outs[1].stdout.String() + outs[1].stderr.String(); s != "" {
			t.Errorf("phase %d: rank 1 printed %q; only rank 0 may print (other ranks: errors only)", phase, s)
		}
		if out := outs[0].stdout.String(); !strings.Contains(out, "run r:") || !strings.Contains(out, "on 2 ranks") {
			t.Errorf("phase %d: rank 0's summary is missing:\n%s", phase, out)
		}
		if phase == 1 && !strings.Contains(outs[0].stderr.String(), "replacing its snapshots") {
			t.Errorf("rank 0 did not resume run r:\n%s", outs[0].stderr.String())
		}
		// Each phase overwrites the same steps; compare after each.
		got, want := readSnapshots(t, dist, "r"), readSnapshots(t, single, "r")
		worst = math.Max(worst, compareSnapshots(t, got, want, 1e-10))
		if phase == 1 && !got[0].Warm {
			t.Errorf("the resumed run's first probe started cold; want warm from the stored state")
		}
	}
	t.Logf("largest relative difference from one process: %.3g", worst)
}

// Replicas that differ must stop every rank with an error, not deadlock or
// record a Hessian of a mixture of models: a different seed is caught in the
// set-up handshake (initial weights), a different learning rate at the first
// probe (weights after training).
func TestTrainDistributedDivergedReplicas(t *testing.T) {
	base := []string{"train", "--data", "synthetic", "--hidden", "8", "--steps", "20", "--every", "10", "--probe-batch", "20",
		"--top", "1", "--esd=false", "--max-hvps", "60", "--listen", "off", "--progress", "off", "--run", "d"}
	for _, tc := range []struct {
		name, flag, v0, v1, want string
	}{
		{"seed", "--seed", "1", "2", "initial weights"},
		{"lr", "--lr", "0.05", "0.06", "replicas diverged: at step 10"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := t.TempDir() + "/d.db"
			outs := runTrainRanks(t, 2, func(r int) []string {
				v := tc.v0
				if r == 1 {
					v = tc.v1
				}
				return append(append([]string{}, base...), "--distributed", "--db", db, tc.flag, v)
			}, nil)
			for r, o := range outs {
				if o.err == nil || !strings.Contains(o.err.Error(), tc.want) {
					t.Errorf("rank %d: err = %v; want an error about %q", r, o.err, tc.want)
				}
			}
			if snaps := readSnapshots(t, db, "d"); len(snaps) != 0 {
				t.Errorf("%d snapshots stored from diverged replicas; want none", len(snaps))
			}
		})
	}
}

// A rank interrupted between probes leaves through a last lockstep round;
// the other rank meets it at its next probe round, and both stop cleanly
// (no error, nothing recorded, the interruption reported on rank 0).
func TestTrainDistributedInterruptedRank(t *testing.T) {
	db := t.TempDir() + "/i.db"
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	outs := runTrainRanks(t, 2, func(int) []string {
		return []string{"train", "--data", "synthetic", "--hidden", "8", "--steps", "40", "--every", "10", "--probe-batch", "20",
			"--top", "1", "--esd=false", "--listen", "off", "--progress", "off", "--run", "i", "--distributed", "--db", db}
	}, []context.Context{nil, cancelled})
	for r, o := range outs {
		if o.err != nil {
			t.Fatalf("rank %d: %v\n%s", r, o.err, o.stderr.String())
		}
	}
	if out := outs[0].stdout.String(); !strings.Contains(out, "interrupted at step 10 of 40") {
		t.Errorf("rank 0 should stop at its first probe round (step 10) and say so:\n%s", out)
	}
	if snaps := readSnapshots(t, db, "i"); len(snaps) != 0 {
		t.Errorf("%d snapshots stored; want none (the run stopped before its first probe)", len(snaps))
	}
}
