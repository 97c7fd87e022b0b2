package plot_test

import (
	"bytes"
	"fmt"
	"image/png"
	"log"
	"os"
	"path/filepath"

	"github.com/hessmon/hessmon/monitor/plot"
	"github.com/hessmon/hessmon/snapshot"
)

// probes fakes a few snapshots of a run whose sharpness climbs to the edge
// of stability 2/η = 20 (learning rate 0.1).
func probes(run string) []snapshot.Snapshot {
	var out []snapshot.Snapshot
	for i, l1 := range []float64{4, 9, 15, 19.5, 20.1} {
		out = append(out, snapshot.Snapshot{
			Run: run, Step: int64(100 * i), LearningRate: 0.1, Optimizer: "sgd",
			SharpnessThreshold: 20, SharpnessRatio: l1 / 20,
			Eigenvalues: []float64{l1, l1 / 2, l1 / 4},
			Trace:       &snapshot.Trace{Value: 5 * l1, StdErr: 0.1 * l1, Probes: 20, Method: "hutchinson"},
			ESD: &snapshot.ESD{ // the exact spectrum of a 4×4 Hessian
				Nodes: []float64{-0.1, 0, l1 / 4, l1}, Weights: []float64{0.25, 0.25, 0.25, 0.25},
				Probes: 1, Steps: 4, Sigma2: 1e-5,
			},
		})
	}
	return out
}

// New builds a figure from snapshots held in memory; Render writes it.
func ExampleNew() {
	series := []plot.Series{{Label: "run-a", Snapshots: probes("run-a")}}
	f, err := plot.New(plot.KindEigen, series, plot.Options{Title: "sharpness reaches 2/η"})
	if err != nil {
		log.Fatal(err)
	}
	var buf bytes.Buffer
	if err := f.Render(&buf, "png", 800, 450); err != nil {
		log.Fatal(err)
	}
	cfg, err := png.DecodeConfig(&buf)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d×%d PNG\n", cfg.Width, cfg.Height)
	// Output: 800×450 PNG
}

// Save overlays several runs; KindESD draws the first and last density of
// each unless Options.Steps names others.
func ExampleSave() {
	dir, err := os.MkdirTemp("", "hessmon-plot")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	series := []plot.Series{
		{Label: "bn", Snapshots: probes("bn")},
		{Label: "no-bn", Snapshots: probes("no-bn")},
	}
	path := filepath.Join(dir, "esd.png")
	if err := plot.Save(path, plot.KindESD, series, plot.Options{Steps: []int64{0, 400}}); err != nil {
		log.Fatal(err)
	}
	fmt.Println("wrote", filepath.Base(path))
	// Output: wrote esd.png
}

// CellDensity is the heat map's per-cell mean of the smoothed spectral
// density: cells that cover the spectrum hold all of its mass, however
// narrow the kernel.
func ExampleCellDensity() {
	nodes, weights := []float64{0, 0, 3}, []float64{0.25, 0.25, 0.5}
	edges := []float64{-1, 1, 2, 4}
	dst := make([]float64, len(edges)-1)
	if err := plot.CellDensity(dst, edges, nodes, weights, 1e-4); err != nil {
		log.Fatal(err)
	}
	for i, d := range dst {
		fmt.Printf("[%g, %g]: mass %.3f\n", edges[i], edges[i+1], d*(edges[i+1]-edges[i]))
	}
	// Output:
	// [-1, 1]: mass 0.500
	// [1, 2]: mass 0.000
	// [2, 4]: mass 0.500
}
