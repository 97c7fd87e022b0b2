package distributed_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"gonum.org/v1/gonum/mat"

	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/monitor/distributed"
	"github.com/hessmon/hessmon/snapshot"
)

// shardReplica is one rank's model: here the Hessian of its shard is a
// fixed diagonal matrix, and the parameters never change.
type shardReplica struct {
	params []float64
	diag   []float64
}

func (r shardReplica) Checksum() distributed.Checksum { return distributed.Sum(r.params) }

func (r shardReplica) Operator() (hvp.Operator, int, error) {
	return hvp.NewDense(mat.NewSymDense(len(r.diag), diagonal(r.diag))), 1, nil
}

func diagonal(d []float64) []float64 {
	m := make([]float64, len(d)*len(d))
	for i, x := range d {
		m[i*len(d)+i] = x
	}
	return m
}

// Two ranks (goroutines over an in-process Comm here; MPI processes with
// hvp/mpi) probe the Hessian of the mean over their shards in lockstep.
// The mean of diag(4, 1, 0) and diag(2, 1, 0) has λ1 = 3.
func Example() {
	comms := hvp.NewInProcGroup(2)
	diags := [][]float64{{4, 1, 0}, {2, 1, 0}}
	var wg sync.WaitGroup
	for r, comm := range comms {
		wg.Go(func() {
			rep := shardReplica{params: []float64{0.1, 0.2, 0.3}, diag: diags[r]}
			// The first collective call: every rank agrees on what it runs.
			if err := distributed.Handshake(comm, nil, rep.Checksum().Fields("initial weights")...); err != nil {
				fmt.Println(err)
				return
			}
			cfg, opt, err := distributed.MonitorConfig(monitor.Config{Every: 5, TopK: 1, NoTrace: true, NoESD: true})
			if err != nil {
				fmt.Println(err)
				return
			}
			opts := []monitor.Option{monitor.WithLogger(slog.New(slog.DiscardHandler))}
			if r == 0 { // rank 0 alone records
				opts = append(opts, monitor.WithSink(monitor.SinkFunc(func(s snapshot.Snapshot) error {
					fmt.Printf("step %d: λ1 = %.4f\n", s.Step, s.Eigenvalues[0])
					return nil
				})))
			}
			mon, err := monitor.New("example", cfg, opts...)
			if err != nil {
				fmt.Println(err)
				return
			}
			ls, err := distributed.NewLockstep(comm, opt)
			if err != nil {
				fmt.Println(err)
				return
			}
			ctx := context.Background()
			var runErr error
			step := int64(1)
			for ; step <= 10 && runErr == nil; step++ {
				// ... this rank's training step ...
				_, _, runErr = ls.Step(ctx, mon, monitor.StepInfo{Step: step}, rep)
			}
			if _, err := ls.Finish(step-1, rep.Checksum(), runErr); err != nil {
				fmt.Println(err)
			}
		})
	}
	wg.Wait()
	// Output:
	// step 5: λ1 = 3.0000
	// step 10: λ1 = 3.0000
}
