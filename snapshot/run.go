package snapshot

import (
	"maps"
	"slices"
)

// Change is one difference between two runs' metadata: Key is "model",
// "optimizer" or a Config key; a value missing on one side is "".
type Change struct {
	Key, Old, New string
}

// Changes lists how next differs from r in model, optimiser and Config,
// keys in order, skipping the Config keys in ignore (e.g. "steps", which a
// resumed run may extend). No changes means next is the same run.
func (r Run) Changes(next Run, ignore ...string) []Change {
	var out []Change
	if r.Model != next.Model {
		out = append(out, Change{Key: "model", Old: r.Model, New: next.Model})
	}
	if r.Optimizer != next.Optimizer {
		out = append(out, Change{Key: "optimizer", Old: string(r.Optimizer), New: string(next.Optimizer)})
	}
	keys := slices.Sorted(maps.Keys(r.Config))
	for k := range next.Config {
		if _, ok := r.Config[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		if slices.Contains(ignore, k) {
			continue
		}
		if o, n := r.Config[k], next.Config[k]; o != n {
			out = append(out, Change{Key: k, Old: o, New: n})
		}
	}
	return out
}
