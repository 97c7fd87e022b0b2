package hessian

import (
	"errors"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/monitor/distributed"
	"github.com/hessmon/hessmon/trainer"
)

// Replica is one rank's copy of a trainer network in replicated training,
// as the lockstep protocol of monitor/distributed sees it: a checksum that
// the ranks compare, and the exact Hessian of this rank's shard of the
// probe batch, which the protocol all-reduces.
type Replica struct {
	Net   *trainer.Network
	Shard trainer.Batch // this rank's contiguous part of the probe batch (ShardBatch)
	Loss  trainer.Loss  // nil: cross-entropy
	Mode  trainer.Mode
}

var _ distributed.Replica = Replica{}

// Checksum covers the weights and the buffers (BatchNorm's running
// statistics), which must stay identical on every rank too.
func (p Replica) Checksum() distributed.Checksum {
	return distributed.Sum(p.Net.Params(), p.Net.Buffers())
}

// Operator is the exact Hessian of this rank's shard and the shard's size.
func (p Replica) Operator() (hvp.Operator, int, error) {
	op, err := NewExact(p.Net, p.Shard, lossOrDefault(p.Loss), p.Mode)
	if err != nil {
		return nil, 0, err
	}
	return op, p.Shard.Len(), nil
}

// ShardBatch returns a copy of comm's rank's contiguous part of b (see
// hvp.Shard). The split depends only on b.Len() and the group size, so it
// fails on every rank or on none.
func ShardBatch(b trainer.Batch, comm hvp.Comm) (trainer.Batch, error) {
	from, to, err := hvp.Shard(b.Len(), comm.Rank(), comm.Size())
	if err != nil {
		return trainer.Batch{}, err
	}
	return slice(b, from, to), nil
}

// ShardOptions say how each rank builds its part of a sharded Hessian.
type ShardOptions struct {
	Loss trainer.Loss // nil: cross-entropy
	Mode trainer.Mode
	// Chunk caps the samples of one exact operator (see NewChunked); the
	// chunks of a rank's shard run concurrently.
	Chunk int
}

// NewSharded returns the Hessian of the mean loss over all of d as every
// rank of comm applies it: this rank's contiguous shard of d, exact in
// chunks, all-reduced over comm. It is collective, and each step that can
// fail does so on all ranks together (the split depends only on d.Len() and
// the group size; a rank whose own operator fails hands NewAllReduce a nil
// one, which fails it on every rank), so no rank is left waiting in a
// collective call for one that gave up.
func NewSharded(comm hvp.Comm, net *trainer.Network, d *data.Dataset, opt ShardOptions) (*hvp.AllReduce, error) {
	shard, err := ShardDataset(d, comm)
	if err != nil {
		return nil, err
	}
	local, localErr := NewChunked(net, trainer.HeadBatch(shard, 0), lossOrDefault(opt.Loss), opt.Mode, opt.Chunk)
	op, err := hvp.NewAllReduce(comm, local, shard.Len())
	if err != nil {
		return nil, errors.Join(localErr, err)
	}
	return op, nil
}

// lossOrDefault is loss, or cross-entropy when it is nil.
func lossOrDefault(loss trainer.Loss) trainer.Loss {
	if loss == nil {
		return trainer.CrossEntropy{}
	}
	return loss
}
