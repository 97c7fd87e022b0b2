package snapshot

// Source is what the read-only JSON API and the exporter's Replay read from: the live monitor's
// store handle, a store opened read-only by `hessmon serve`, or anything in
// memory. *store.Store satisfies it. Snapshots takes an inclusive step range
// (to < 0: no upper bound) and returns an error wrapping
// ErrUnknownRun for a run it does not know.
type Source interface {
	Runs() ([]RunSummary, error)
	Snapshots(run string, from, to int64) ([]Snapshot, error)
}
