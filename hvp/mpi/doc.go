// Package mpi runs hessmon's distributed Hessian-vector products over MPI:
// Comm implements hvp.Comm on MPI_COMM_WORLD through a thin cgo binding of
// Open MPI (MPI_Init_thread, MPI_Comm_rank/size, MPI_Allreduce, MPI_Bcast, MPI_Barrier,
// MPI_Abort, MPI_Finalize).
//
// The binding is behind the build tag "mpi", so the default build stays pure
// Go and needs no MPI library:
//
//	go build -tags mpi ./cmd/hessmon          # needs libopenmpi-dev (pkg-config ompi)
//	mpirun -np 2 ./hessmon analyze --distributed ...
//
// Without the tag this package is empty. All MPI calls are made from one
// goroutine locked to one OS thread (MPI_THREAD_FUNNELED), which serves the
// other goroutines' requests over a channel, so Go's scheduler can never
// move an MPI call to another thread. See docs/distributed.md.
package mpi
