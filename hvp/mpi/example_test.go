//go:build mpi

package mpi_test

import (
	"context"
	"fmt"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/hvp/mpi"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

// Run under mpirun: every rank analyses its shard, and the all-reduced
// operator makes every rank compute the Hessian of the whole data set.
// (Not run by go test: MPI is initialised once per process, by TestMain.)
func ExampleInit() {
	comm, err := mpi.Init()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer comm.Close() // MPI_Finalize: every rank must get here

	net, err := trainer.NewMLP(trainer.MLPConfig{Sizes: []int{8, 16, 4}, Activation: trainer.Tanh}, 1)
	if err != nil {
		fmt.Println(err)
		return
	}
	ds := data.Synthetic(1000, net.InShape(), 4, 2) // the same on every rank
	shard, err := hessian.ShardDataset(ds, comm)
	if err != nil {
		fmt.Println(err)
		return
	}
	local, err := hessian.NewExact(net, trainer.HeadBatch(shard, 0), trainer.CrossEntropy{}, trainer.ModeEval)
	if err != nil {
		fmt.Println(err)
		return
	}
	op, err := hvp.NewAllReduce(comm, local, shard.Len())
	if err != nil {
		fmt.Println(err)
		return
	}
	res, _, err := estimators.TopEigen(context.Background(), op, estimators.EigenOptions{K: 3, Seed: 7}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	if comm.Rank() == 0 {
		fmt.Printf("%d ranks, loss %.4f, top eigenvalues %.6g\n", comm.Size(), op.Loss(), res.Values)
	}
}
