package main

import (
	"context"
	"errors"

	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/trainer"
)

// distributedOperator shards d over the ranks of the process group and
// returns the all-reduced operator, this process's rank and the group size.
func distributedOperator(ctx context.Context, net *trainer.Network, d *trainer.Dataset, mode trainer.Mode, chunk int) (hvp.Operator, int, int, func(), error) {
	return nil, 0, 0, nil, errors.New("--distributed is not available yet")
}
