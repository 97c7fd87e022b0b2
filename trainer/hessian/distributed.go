package hessian

import (
	"context"
	"log/slog"

	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/monitor/distributed"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/trainer"
)

// ReplicaCheck is what every rank of a replicated run must agree on
// before the first collective probe.
type ReplicaCheck struct {
	Net        *trainer.Network
	Steps      int64
	Every      int64 // probe interval
	ProbeBatch int   // size of the whole probe batch
}

// HandshakeReplica shares this rank's set-up outcome with the group and,
// when set-up succeeded, compares c's sizes and the initial weights'
// checksum, so that every rank fails together or none does.
func HandshakeReplica(comm hvp.Comm, setupErr error, c ReplicaCheck) error {
	var fields []distributed.Field
	if setupErr == nil {
		fields = append([]distributed.Field{
			{Name: "parameter count", Value: float64(c.Net.Dim())}, {Name: "steps", Value: float64(c.Steps)},
			{Name: "--every", Value: float64(c.Every)}, {Name: "probe batch size", Value: float64(c.ProbeBatch)},
		}, Replica{Net: c.Net}.Checksum().Fields("initial weights")...)
	}
	return distributed.Handshake(comm, setupErr, fields...)
}

// DistributedOptions configure TrainDistributed.
type DistributedOptions struct {
	Lockstep *distributed.Lockstep
	Monitor  *monitor.Monitor // created alike on every rank
	Run      string           // the run id, for log lines
	Shard    trainer.Batch    // this rank's part of the probe batch (ShardBatch)
	Mode     trainer.Mode
	Blocks   []estimators.Block
	Logger   *slog.Logger
	// OnProbe sees each snapshot this rank's monitor made (optional).
	OnProbe func(snapshot.Snapshot)
	// AfterTrain runs when training returns, before the monitor's Close
	// (optional: e.g. finish a progress bar); BeforeFinish after the Close,
	// before the collective finish (optional: e.g. stop a server).
	AfterTrain, BeforeFinish func()
}

// TrainDistributed trains cfg with a lockstep probe at every due step
// after cfg's own hooks, closes the monitor and finishes the lockstep with
// the final weights' checksum. interrupted reports a collective stop
// before the last step; err is a failure of this rank or of another one.
func TrainDistributed(ctx context.Context, cfg trainer.Config, o DistributedOptions) (res trainer.Result, interrupted bool, err error) {
	cfg.Hooks = append(cfg.Hooks, lockstepHook(o))
	res, trainErr := trainer.Train(ctx, cfg)
	if o.AfterTrain != nil {
		o.AfterTrain()
	}
	// Probes are synchronous, so nothing is in flight: Close only writes
	// the newest warm state (rank 0; the others drop it). It is local, not
	// collective.
	if err := o.Monitor.Close(context.WithoutCancel(ctx)); err != nil {
		o.Logger.Error("closing the monitor", "err", err)
	}
	if o.BeforeFinish != nil {
		o.BeforeFinish()
	}
	interrupted, err = o.Lockstep.Finish(res.Steps, Replica{Net: cfg.Model}.Checksum(), trainErr)
	return res, interrupted, err
}

// lockstepHook probes a due step on every rank in lockstep. A failed
// probe is logged and training goes on, unless the group stopped.
func lockstepHook(o DistributedOptions) trainer.Hook {
	return func(ctx context.Context, info trainer.StepInfo) error {
		meta := StepInfo(info)
		meta.Blocks = o.Blocks
		s, probed, err := o.Lockstep.Step(ctx, o.Monitor, meta, Replica{Net: info.Model, Shard: o.Shard, Loss: info.LossFn, Mode: o.Mode})
		if err != nil {
			if o.Lockstep.Left() {
				return err // every rank stops here
			}
			o.Logger.Error("recording probe", "run", o.Run, "step", info.Step, "err", err)
		}
		if probed && o.OnProbe != nil {
			o.OnProbe(s)
		}
		return nil
	}
}
