// Package dashboards generates hessmon's Grafana dashboards as code.
//
// The dashboards are built with the Grafana Foundation SDK from the metric
// and label names that the exporter (package monitor/metrics) owns, so a
// renamed metric breaks the build or a test rather than a panel. The
// generated JSON is committed under dashboards/json and provisioned by
// docker-compose.yml; a test keeps the committed files byte-identical to
// what Generate produces.
package dashboards

//go:generate go run ./gen -out json

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// DatasourceUID is the uid of the Prometheus datasource that
// deploy/grafana/provisioning creates and that the dashboards select by
// default.
const DatasourceUID = "hessmon-prometheus"

// File names of the generated dashboards, as written by WriteAll.
const (
	CurvatureFile  = "training-curvature.json"
	ComparisonFile = "run-comparison.json"
)

// Generate builds every dashboard and returns file name → indented JSON.
// The bytes are deterministic: the same code yields the same files.
func Generate() (map[string][]byte, error) {
	builders := map[string]func() (dashboard.Dashboard, error){
		CurvatureFile:  curvatureDashboard,
		ComparisonFile: comparisonDashboard,
	}
	out := make(map[string][]byte, len(builders))
	for name, build := range builders {
		d, err := build()
		if err != nil {
			return nil, fmt.Errorf("dashboards: build %s: %w", name, err)
		}
		b, err := json.MarshalIndent(d, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("dashboards: encode %s: %w", name, err)
		}
		out[name] = append(b, '\n')
	}
	return out, nil
}

// WriteAll writes every generated dashboard into dir, creating it if needed.
// This is what `hessmon dashboards --out DIR` and `go generate` run.
func WriteAll(dir string) error {
	files, err := Generate()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("dashboards: %w", err)
	}
	for _, name := range Names(files) {
		if err := os.WriteFile(filepath.Join(dir, name), files[name], 0o644); err != nil {
			return fmt.Errorf("dashboards: %w", err)
		}
	}
	return nil
}

// Names returns the keys of files in sorted order, for deterministic loops.
func Names(files map[string][]byte) []string {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
