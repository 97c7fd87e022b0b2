//go:build !mpi

package main

import "testing"

// In the pure-Go build `train --distributed` must stop with the advice to
// rebuild, before it touches the store.
func TestTrainDistributedNeedsMPIBuild(t *testing.T) {
	runRefused(t, 1, []string{"--distributed", "--data", "synthetic", "--steps", "10"}, errNoMPI.Error())
}
