package main

import (
	"errors"

	"github.com/hessmon/hessmon/monitor/snapshot"
)

func saveESDPlot(path string, s snapshot.Snapshot) error {
	return errors.New("plotting is not available yet")
}
