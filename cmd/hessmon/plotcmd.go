package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/hessmon/hessmon/monitor/plot"
	"github.com/hessmon/hessmon/store"
)

func runPlot(ctx context.Context, e *env, args []string) error {
	kinds := make([]string, 0, len(plot.Kinds()))
	for _, k := range plot.Kinds() {
		kinds = append(kinds, string(k))
	}
	fs := newFlags(e, "plot", "draw a run's snapshots with gonum/plot into a PNG (or .svg/.pdf by extension):\n"+
		"  eigen        λ1..k over steps, with the edge-of-stability threshold (2/η for SGD) when recorded;\n"+
		"               λ1 and λmin from every probe, light and full (full ones ringed), λ2..k from full probes\n"+
		"  trace        tr(H) over steps with a ±1 stderr band (full probes; so are esd and blocks)\n"+
		"  esd          the spectral density at --steps (default: first and last) on a log y-axis, as PyHessian\n"+
		"  esd-heatmap  the density over eigenvalue × step, log colour scale, one panel per run\n"+
		"  blocks       the per-layer trace over steps, the --top largest blocks\n"+
		"Several comma-separated --run ids overlay (e.g. BN against no-BN).",
		"hessmon plot --db hessmon.db --run mnist-sgd --kind esd --steps 50,300 --out esd.png")
	var sf storeFlags
	sf.register(fs, true)
	kind := fs.String("kind", "eigen", "what to draw: "+strings.Join(kinds, ", "))
	out := fs.String("out", "", "output image, format by extension: .png, .svg, .pdf, .jpg (required)")
	stepsFlag := fs.String("steps", "", "esd: comma-separated steps to draw (default: first and last snapshot with an ESD)")
	width := fs.Int("width", plot.DefaultWidth, "image width in pixels")
	height := fs.Int("height", plot.DefaultHeight, "image height in pixels")
	top := fs.Int("top", 10, "blocks: how many block traces to draw, largest |tr| first")
	bins := fs.Int("bins", 0, "esd/esd-heatmap: eigenvalue grid points (default 2000 / 240)")
	title := fs.String("title", "", "figure title (default: what is drawn and the run ids)")
	from := fs.Int64("from", 0, "first step to draw")
	to := fs.Int64("to", -1, "last step to draw (-1: the end)")
	if err := parse(fs, args); err != nil {
		return err
	}
	k, err := plot.ParseKind(*kind)
	if err != nil {
		return usageErr("--kind %q: want one of %s", *kind, strings.Join(kinds, ", "))
	}
	if *out == "" {
		return usageErr("--out is required, e.g. --out %s.png", k)
	}
	if *width < 120 || *height < 120 || *width > 20000 || *height > 20000 {
		return usageErr("--width and --height: want 120 to 20000 pixels, got %d×%d", *width, *height)
	}
	if *top <= 0 || *bins < 0 {
		return usageErr("--top must be positive and --bins non-negative")
	}
	if err := stepRange(*from, *to); err != nil {
		return err
	}
	steps, err := plotSteps(k, *stepsFlag)
	if err != nil {
		return err
	}
	ids, err := plotRunIDs(sf.run)
	if err != nil {
		return err
	}
	series, err := loadSeries(sf.db, ids, k, *from, *to)
	if err != nil {
		return err
	}
	err = plot.Save(*out, k, series, plot.Options{
		Title: *title, Steps: steps, TopBlocks: *top, Bins: *bins, Width: *width, Height: *height,
	})
	switch {
	case errors.Is(err, plot.ErrNoData):
		return fmt.Errorf("%v: the probes of %s recorded no %s data (see the monitor flags of 'hessmon train')", err, strings.Join(runLabels(series), ", "), k)
	case err != nil:
		return err
	}
	n := 0
	for _, s := range series {
		n += len(s.Snapshots)
	}
	fmt.Fprintf(e.stdout, "wrote %s (%s, %d×%d px) from %d snapshots of %s\n", *out, k, *width, *height, n, strings.Join(runLabels(series), ", "))
	return nil
}

func runLabels(series []plot.Series) []string {
	out := make([]string, len(series))
	for i, s := range series {
		out[i] = s.Label
	}
	return out
}

// plotSteps parses --steps, which only --kind esd takes.
func plotSteps(k plot.Kind, flag string) ([]int64, error) {
	if flag == "" {
		return nil, nil
	}
	if k != plot.KindESD {
		return nil, usageErr("--steps applies to --kind esd only")
	}
	var steps []int64
	for _, f := range strings.Split(flag, ",") {
		s, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64)
		if err != nil || s < 0 {
			return nil, usageErr("--steps %q: want comma-separated steps ≥ 0", flag)
		}
		steps = append(steps, s)
	}
	return steps, nil
}

// plotRunIDs splits --run into the runs to overlay; none means the
// store's only run.
func plotRunIDs(run string) ([]string, error) {
	if run == "" {
		return []string{""}, nil
	}
	var ids []string
	for _, id := range strings.Split(run, ",") {
		if id = strings.TrimSpace(id); id != "" {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil, usageErr("--run %q names no run", run)
	}
	return ids, nil
}

// loadSeries reads each run's snapshots from..to, decoding only what kind
// k draws: a long run's spectral densities are most of its bytes.
func loadSeries(db string, ids []string, k plot.Kind, from, to int64) ([]plot.Series, error) {
	st, err := openStore(db)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	fields := store.WithTrace
	if k == plot.KindESD || k == plot.KindESDHeatmap {
		fields |= store.WithESD
	}
	series := make([]plot.Series, 0, len(ids))
	for _, id := range ids {
		sum, err := resolveRun(st, id)
		if err != nil {
			return nil, err
		}
		snaps, err := loadSnapshots(st, sum.ID, from, to, fields)
		if err != nil {
			return nil, err
		}
		series = append(series, plot.Series{Label: sum.ID, Snapshots: snaps})
	}
	return series, nil
}
