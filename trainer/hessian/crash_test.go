package hessian

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/store"
	"github.com/hessmon/hessmon/trainer"
)

const crashEnv = "HESSMON_CRASH_CHILD_DB"

// TestCrashChild is the child process of TestCrashKeepsCommittedSnapshots:
// it trains forever with the monitor attached and prints each step whose
// Probe has returned.
func TestCrashChild(t *testing.T) {
	path := os.Getenv(crashEnv)
	if path == "" {
		t.Skip("child process of TestCrashKeepsCommittedSnapshots")
	}
	st, err := store.Open(path, store.Options{})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(3)
	}
	ds := data.Synthetic(512, trainer.Shape{H: 1, W: 1, C: 10}, 4, 1)
	net, _ := trainer.NewMLP(trainer.MLPConfig{Sizes: []int{10, 8, 4}, Activation: trainer.Tanh}, 1)
	committed := monitor.SinkFunc(func(s snapshot.Snapshot) error {
		fmt.Printf("committed %d\n", s.Step)
		return nil
	})
	m, _ := monitor.New("crash", monitor.Config{Every: 3, TopK: 2, ESDSteps: 8, TraceRelTol: 0.2, WarmEvery: 1},
		monitor.WithSink(st), monitor.WithSink(committed), monitor.WithWarmStore(st), monitor.WithLogger(discardLogger()))
	_, _ = trainer.Train(context.Background(), trainer.Config{
		Model: net, Loss: trainer.CrossEntropy{}, Optimizer: &trainer.SGD{LR: 0.05}, Data: ds, BatchSize: 16, Steps: 1 << 40,
		Hooks: []trainer.Hook{Hook(m, HookOptions{Batch: trainer.HeadBatch(ds, 32)})},
		// Checkpoints on, at every step, between and after the snapshots.
		CheckpointEvery: 1, SaveCheckpoint: func(_ context.Context, c *trainer.Checkpoint) error {
			b, err := c.MarshalBinary()
			if err != nil {
				return err
			}
			return st.PutCheckpoint("crash", c.Step, b)
		},
	})
}

// TestCrashKeepsCommittedSnapshots kills a training process with SIGKILL
// after it has committed at least two snapshots, then checks that the
// store opens cleanly and holds every snapshot whose Probe had returned.
func TestCrashKeepsCommittedSnapshots(t *testing.T) {
	if os.Getenv(crashEnv) != "" {
		t.Skip("in the child")
	}
	for round := 0; round < 3; round++ {
		path := fmt.Sprintf("%s/crash%d.db", t.TempDir(), round)
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashEnv+"="+path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var committed []int64
		sc := bufio.NewScanner(out)
		deadline := time.AfterFunc(60*time.Second, func() { _ = cmd.Process.Kill() })
		want := 2 + round*3 // kill at different points
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "error") {
				t.Fatal(line)
			}
			if step, ok := strings.CutPrefix(line, "committed "); ok {
				n, _ := strconv.ParseInt(step, 10, 64)
				committed = append(committed, n)
				if len(committed) >= want {
					_ = cmd.Process.Kill() // SIGKILL
					break
				}
			}
		}
		deadline.Stop()
		_ = cmd.Wait()
		if len(committed) < want {
			t.Fatalf("round %d: child committed only %d snapshots", round, len(committed))
		}
		st, err := store.Open(path, store.Options{ReadOnly: true})
		if err != nil {
			t.Fatalf("round %d: store does not open after SIGKILL: %v", round, err)
		}
		if err := st.Check(); err != nil {
			t.Errorf("round %d: consistency check: %v", round, err)
		}
		for _, step := range committed {
			if _, err := st.Snapshot("crash", step); err != nil {
				t.Errorf("round %d: snapshot at step %d lost: %v", round, step, err)
			}
		}
		// The child printed "committed N" inside step N's hooks, so every
		// step before N had been checkpointed.
		step, state, ok, err := st.Checkpoint("crash")
		var cp trainer.Checkpoint
		if err != nil || !ok || cp.UnmarshalBinary(state) != nil || cp.Step != step || step < committed[len(committed)-1]-1 {
			t.Errorf("round %d: checkpoint after the crash: step %d (last committed snapshot %d), ok %v, %v", round, step, committed[len(committed)-1], ok, err)
		}
		w, err := st.Warm("crash")
		if err != nil || len(w) == 0 {
			t.Errorf("round %d: warm state missing after the crash (%d bytes, %v)", round, len(w), err)
		}
		st.Close()
		t.Logf("round %d: killed after %d committed snapshots (steps %v); all present", round, len(committed), committed)
	}
}
