package hessian

import (
	"fmt"
	"time"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/trainer"
)

// RunOptions are what identifies a training run of a trainer.Network with
// the monitor: a run id may only be continued with the same values (see
// store.StartRun).
type RunOptions struct {
	ID          string
	Net         *trainer.Network
	Optimizer   trainer.Optimizer
	Data        *data.Dataset
	LR          float64
	Momentum    float64
	WeightDecay float64
	Batch       int
	Steps       int64
	Every       int64 // probe interval
	Top         int   // top-k eigenvalues
	ProbeBatch  int
	BNMode      string // "eval" or "train"
	Seed        uint64
}

// RunMeta returns the run's metadata for the store, started now.
func RunMeta(o RunOptions) snapshot.Run {
	r := snapshot.Run{ID: o.ID, Model: o.Net.String(), Optimizer: snapshot.Optimizer(o.Optimizer.Name()), Started: time.Now().UTC(), Config: map[string]string{
		"data": o.Data.Describe(), "params": fmt.Sprint(o.Net.Dim()), "lr": fmt.Sprint(o.LR), "momentum": fmt.Sprint(o.Momentum),
		"batch": fmt.Sprint(o.Batch), "steps": fmt.Sprint(o.Steps), "every": fmt.Sprint(o.Every), "top": fmt.Sprint(o.Top),
		"probe_batch": fmt.Sprint(o.ProbeBatch), "bn_mode": o.BNMode, "seed": fmt.Sprint(o.Seed),
	}}
	if o.WeightDecay != 0 { // only when set, so that runs stored before it was recorded still match
		r.Config["wd"] = fmt.Sprint(o.WeightDecay)
	}
	return r
}
