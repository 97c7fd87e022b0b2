// Package distributed keeps the ranks of a data-parallel job in lockstep
// while they probe the Hessian together: each rank applies the Hessian of
// its shard of the probe batch, hvp.AllReduce sums the products, and every
// rank runs the same monitor.Monitor.Probe on the same global operator, so
// every rank reaches the same snapshot. Rank 0 records it; the others only
// keep their warm state in step.
//
// Ranks must make the same collective calls in the same order, or one
// waits forever in a collective that another never enters. The protocol
// therefore has four parts, each a collective call that fails on every rank
// together:
//
//   - Handshake: the first call. Every rank posts whether its local set-up
//     failed and what it is about to run (sizes, schedule, a Checksum of
//     the initial parameters); a failure or disagreement on any rank stops
//     every rank.
//   - ShareWarm: rank 0's stored warm state is broadcast, so every rank's
//     first probe starts from the same vectors.
//   - Lockstep rounds: before every due probe, and once more when a rank
//     stops between probes, the ranks exchange their step, a Status and a
//     Checksum of the parameters. The first round in which any rank says
//     stop is the last one for every rank, and replicas whose parameters
//     differ at the same step stop every rank with ErrDiverged.
//   - Collective stops inside a probe: before every Hessian-vector product
//     the ranks all-reduce whether any was interrupted or is over the
//     probe's wall-time budget, and all stop at the same product: an
//     interruption ends the run with nothing half-recorded, a timeout only
//     the probe (recorded as failure "timeout").
//
// Probes are synchronous and the interval fixed (MonitorConfig), so every
// rank probes at the same steps. The package knows nothing of the model:
// parameters are []float64 vectors and the Hessian is an hvp.Operator.
package distributed
