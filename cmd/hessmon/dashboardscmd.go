package main

import (
	"context"
	"fmt"

	"github.com/hessmon/hessmon/dashboards"
)

func runDashboards(_ context.Context, e *env, args []string) error {
	fs := newFlags(e, "dashboards", "write the Grafana dashboards (training curvature, run comparison) as JSON, generated with the "+
		"grafana-foundation-sdk from the exporter's metric names. The committed dashboards/json/ files are this output byte for byte.",
		"hessmon dashboards --out /tmp/d && diff -r /tmp/d dashboards/json")
	out := fs.String("out", "", "directory to write the JSON files into (created if missing)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return usageErr("--out is required")
	}
	if err := dashboards.WriteAll(*out); err != nil {
		return err
	}
	files, err := dashboards.Generate()
	if err != nil {
		return err
	}
	for _, name := range dashboards.Names(files) {
		fmt.Fprintf(e.stdout, "wrote %s/%s\n", *out, name)
	}
	return nil
}
