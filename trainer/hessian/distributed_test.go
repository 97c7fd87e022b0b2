package hessian

import (
	"context"
	"log/slog"
	"math"
	"sync"
	"testing"

	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/monitor/distributed"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/trainer"
)

// TestTrainDistributedEqualsOneProcess: replicated training over 2
// in-process ranks, each probing the Hessian of its half of the probe
// batch in lockstep, takes the snapshots one process takes with the whole
// batch, and every rank sees them.
func TestTrainDistributedEqualsOneProcess(t *testing.T) {
	cfg := monitor.Config{Every: 4, TopK: 2, NoTrace: true, NoESD: true, EigenTol: 1e-8, Seed: 5}
	lcfg, lopt, err := distributed.MonitorConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	train := func(net *trainer.Network, hooks ...trainer.Hook) trainer.Config {
		_, d := tanhProblem(t, 4)
		return trainer.Config{Model: net, Loss: trainer.CrossEntropy{}, Optimizer: &trainer.SGD{LR: 0.2}, Data: d, BatchSize: 10, Steps: 12, Seed: 2, Hooks: hooks}
	}
	var want []snapshot.Snapshot
	net, d := tanhProblem(t, 4)
	one, err := monitor.New("r", lcfg, monitor.WithSink(monitor.SinkFunc(func(s snapshot.Snapshot) error { want = append(want, s); return nil })))
	if err != nil {
		t.Fatal(err)
	}
	probe := trainer.HeadBatch(d, 0)
	if _, err := trainer.Train(context.Background(), train(net, Hook(one, HookOptions{Batch: probe, Mode: trainer.ModeEval}))); err != nil {
		t.Fatal(err)
	}
	if err := one.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	const ranks = 2
	got := make([][]snapshot.Snapshot, ranks)
	var mu sync.Mutex
	errs := onRanks(ranks, func(c hvp.Comm) error {
		net, _ := tanhProblem(t, 4)
		shard, err := ShardBatch(probe, c)
		if err != nil {
			return err
		}
		if err := HandshakeReplica(c, nil, ReplicaCheck{Net: net, Steps: 12, Every: cfg.Every, ProbeBatch: probe.Len()}); err != nil {
			return err
		}
		ls, err := distributed.NewLockstep(c, lopt)
		if err != nil {
			return err
		}
		mon, err := monitor.New("r", lcfg)
		if err != nil {
			return err
		}
		res, interrupted, err := TrainDistributed(context.Background(), train(net), DistributedOptions{Lockstep: ls, Monitor: mon, Run: "r",
			Shard: shard, Mode: trainer.ModeEval, Blocks: Blocks(net), Logger: slog.New(slog.DiscardHandler),
			OnProbe: func(s snapshot.Snapshot) { mu.Lock(); got[c.Rank()] = append(got[c.Rank()], s); mu.Unlock() }})
		if err == nil && (interrupted || res.Steps != 12) {
			t.Errorf("rank %d: interrupted %v after %d steps, want 12 steps", c.Rank(), interrupted, res.Steps)
		}
		return err
	})
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	if len(want) != 3 {
		t.Fatalf("one process took %d snapshots, want 3 (every 4 of 12 steps)", len(want))
	}
	for r := range ranks {
		if len(got[r]) != len(want) {
			t.Fatalf("rank %d took %d snapshots, one process %d", r, len(got[r]), len(want))
		}
		for i, w := range want {
			g := got[r][i]
			if g.Step != w.Step || len(g.Eigenvalues) != len(w.Eigenvalues) {
				t.Fatalf("rank %d snapshot %d: step %d with %d eigenvalues, want step %d with %d", r, i, g.Step, len(g.Eigenvalues), w.Step, len(w.Eigenvalues))
			}
			for k := range w.Eigenvalues {
				if d := math.Abs(g.Eigenvalues[k] - w.Eigenvalues[k]); d > 1e-8*math.Abs(w.Eigenvalues[0]) {
					t.Errorf("rank %d step %d: λ%d = %v, one process %v", r, g.Step, k+1, g.Eigenvalues[k], w.Eigenvalues[k])
				}
			}
		}
	}
}

// TestHandshakeReplicaFailsOnEveryRank: replicas that disagree on the
// initial weights fail the handshake on every rank.
func TestHandshakeReplicaFailsOnEveryRank(t *testing.T) {
	for r, err := range onRanks(2, func(c hvp.Comm) error {
		net, _ := tanhProblem(t, uint64(4+c.Rank()))
		return HandshakeReplica(c, nil, ReplicaCheck{Net: net, Steps: 12, Every: 4, ProbeBatch: 50})
	}) {
		if err == nil {
			t.Errorf("rank %d: no error for replicas of different seeds", r)
		}
	}
}
