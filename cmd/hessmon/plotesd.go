package main

import (
	"github.com/hessmon/hessmon/monitor/plot"
	"github.com/hessmon/hessmon/snapshot"
)

// saveESDPlot draws one snapshot's spectral density as PyHessian's
// density_plot does (log density), at the default size.
func saveESDPlot(path string, s snapshot.Snapshot) error {
	return plot.SaveESD(path, []plot.Series{{Label: s.Run, Snapshots: []snapshot.Snapshot{s}}}, 0, 0)
}
