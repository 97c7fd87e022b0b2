// Package plot draws hessmon snapshots with gonum/plot: the top eigenvalues
// against the edge-of-stability line, the trace with its standard-error band,
// PyHessian-style log-scale spectral densities, the density over training
// steps as a heat map, and per-layer block traces.
//
// It reads only snapshot values (no store, no CLI), so that examples and
// programs that hold snapshots in memory can draw them too. Several Series
// overlay in one figure, e.g. a run with BatchNorm against one without.
package plot

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	gplot "gonum.org/v1/plot"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/hessmon/hessmon/snapshot"
)

// Series is one run's snapshots, in increasing step order as a store yields
// them, and the name the legend gives it (usually the run id). Failed
// snapshots are skipped when drawing.
type Series struct {
	Label     string
	Snapshots []snapshot.Snapshot
}

// Kind selects what a figure shows.
type Kind string

// The kinds of figure New draws.
const (
	// KindEigen: λ1..k over steps, with the sharpness threshold (2/η for
	// SGD) when the snapshots record one. λ1 and λmin come from every
	// probe, light or full, with the full probes ringed when a run has
	// both; λ2..k from full probes. The other kinds draw full probes only,
	// the snapshots that hold their estimate.
	KindEigen Kind = "eigen"
	// KindTrace: tr(H) over steps with a ±1 standard-error band.
	KindTrace Kind = "trace"
	// KindESD: the Gaussian-smoothed spectral density at a few steps on a
	// log y-axis, as PyHessian's density_plot.py draws it.
	KindESD Kind = "esd"
	// KindESDHeatmap: the density over eigenvalue × step, log colour scale,
	// one panel per series.
	KindESDHeatmap Kind = "esd-heatmap"
	// KindBlocks: per-layer (per-tensor) trace over steps, largest first.
	KindBlocks Kind = "blocks"
	// KindBlocksEigen: λ1 of each layer's diagonal Hessian block over
	// steps (probed with --block-eigen-every), largest first.
	KindBlocksEigen Kind = "blocks-eigen"
)

// Kinds lists every Kind in a stable order, e.g. for a --help text.
func Kinds() []Kind {
	return []Kind{KindEigen, KindTrace, KindESD, KindESDHeatmap, KindBlocks, KindBlocksEigen}
}

// ParseKind returns the Kind named s.
func ParseKind(s string) (Kind, error) {
	for _, k := range Kinds() {
		if string(k) == s {
			return k, nil
		}
	}
	names := make([]string, 0, len(Kinds()))
	for _, k := range Kinds() {
		names = append(names, string(k))
	}
	return "", fmt.Errorf("plot: unknown kind %q, want one of %s", s, strings.Join(names, ", "))
}

// ErrNoData is returned when no snapshot of any series holds what a figure
// needs (e.g. an eigen plot of runs probed without eigenvalues).
var ErrNoData = errors.New("plot: nothing to draw")

// Default figure size in pixels, and the resolution raster output uses.
const (
	DefaultWidth  = 900
	DefaultHeight = 560
	DPI           = 96
)

// Options tune a figure. The zero value draws sensible defaults.
type Options struct {
	// Title replaces the figure's default title.
	Title string
	// Steps are the steps KindESD draws (each series must hold an ESD at
	// each one). Default: the first and the last snapshot with an ESD.
	Steps []int64
	// TopBlocks is how many block traces KindBlocks draws, largest |tr|
	// first. Default 10.
	TopBlocks int
	// Bins is the number of eigenvalue grid points: KindESD default 2000,
	// KindESDHeatmap default 240.
	Bins int
	// Width and Height are the output size in pixels for Save (at DPI
	// dots per inch for raster formats). Default DefaultWidth×DefaultHeight.
	Width, Height int
}

// Figure is a drawable chart: one or more panels stacked vertically, each
// with its legend on the right, and an optional colour bar at the bottom.
type Figure struct {
	panels []panel
	bar    *gplot.Plot
}

type panel struct {
	p      *gplot.Plot
	legend *gplot.Legend
}

// Plots returns the figure's gonum plots, top to bottom, for callers that
// want to restyle axes or add their own plotters before saving.
func (f *Figure) Plots() []*gplot.Plot {
	out := make([]*gplot.Plot, len(f.panels))
	for i, pn := range f.panels {
		out[i] = pn.p
	}
	return out
}

// New builds the figure of kind from series.
func New(kind Kind, series []Series, opt Options) (*Figure, error) {
	if len(series) == 0 {
		return nil, fmt.Errorf("%w: no series", ErrNoData)
	}
	switch kind {
	case KindEigen:
		return eigenFigure(series, opt)
	case KindTrace:
		return traceFigure(series, opt)
	case KindESD:
		return esdFigure(series, opt)
	case KindESDHeatmap:
		return heatmapFigure(series, opt)
	case KindBlocks:
		return blocksFigure(series, opt)
	case KindBlocksEigen:
		return blocksEigenFigure(series, opt)
	}
	_, err := ParseKind(string(kind))
	return nil, err
}

// Save draws the figure of kind from series into path, in the format its
// extension names (png, svg, pdf, jpg, …), at opt.Width×opt.Height pixels.
func Save(path string, kind Kind, series []Series, opt Options) error {
	f, err := New(kind, series, opt)
	if err != nil {
		return err
	}
	return f.Save(path, opt.Width, opt.Height)
}

// SaveESD draws the spectral densities of series (first and last ESD of
// each) into path at width×height pixels: the one-call form of
// Save(path, KindESD, …) for one-shot analyses.
func SaveESD(path string, series []Series, width, height int) error {
	return Save(path, KindESD, series, Options{Width: width, Height: height})
}

// Draw draws the figure onto dc. A panic inside gonum/plot (it panics on
// some degenerate inputs) comes back as an error.
func (f *Figure) Draw(dc draw.Canvas) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("plot: draw: %v", r)
		}
	}()
	pad := vg.Points(6)
	var bc draw.Canvas
	if f.bar != nil {
		h := min(vg.Points(58), (dc.Max.Y-dc.Min.Y)/4)
		bc = dc
		bc.Max.Y = bc.Min.Y + h
		dc.Min.Y += h + pad
	}
	lw := legendWidth(f.panels, dc)
	h := (dc.Max.Y - dc.Min.Y) / vg.Length(len(f.panels))
	for i, pn := range f.panels {
		c := dc
		c.Max.Y = dc.Max.Y - h*vg.Length(i)
		c.Min.Y = c.Max.Y - h
		if lw > 0 {
			c.Max.X -= lw
			if pn.legend != nil {
				lc := c
				lc.Min.X, lc.Max.X = c.Max.X+pad, dc.Max.X
				// Start the legend below the title, level with the data.
				if pn.p.Title.Text != "" {
					lc.Max.Y -= pn.p.Title.TextStyle.Rectangle(pn.p.Title.Text).Size().Y + pn.p.Title.Padding
				}
				pn.legend.Draw(lc)
			}
		}
		pn.p.Draw(c)
		if i == 0 && f.bar != nil {
			// The colour bar spans the data area of the panels above.
			da := pn.p.DataCanvas(c)
			bc.Min.X, bc.Max.X = da.Min.X, da.Max.X
		}
	}
	if f.bar != nil {
		f.bar.Draw(bc)
	}
	return nil
}

// legendWidth is the strip reserved on the right for the widest legend, at
// most 40% of the canvas.
func legendWidth(panels []panel, dc draw.Canvas) vg.Length {
	var w vg.Length
	for _, pn := range panels {
		if pn.legend == nil {
			continue
		}
		r := pn.legend.Rectangle(dc)
		w = max(w, r.Max.X-r.Min.X)
	}
	if w == 0 {
		return 0
	}
	return min(w+vg.Points(12), 0.4*(dc.Max.X-dc.Min.X))
}

// Render writes the figure in format ("png", "svg", "pdf", "jpg", …) at
// width×height pixels (0 means the default size).
func (f *Figure) Render(w io.Writer, format string, width, height int) error {
	if width == 0 {
		width = DefaultWidth
	}
	if height == 0 {
		height = DefaultHeight
	}
	if width < 120 || height < 120 || width > 20000 || height > 20000 {
		return fmt.Errorf("plot: size %d×%d pixels: want 120 to 20000 each way", width, height)
	}
	px := func(n int) vg.Length { return vg.Length(n) * vg.Inch / DPI }
	c, err := draw.NewFormattedCanvas(px(width), px(height), strings.ToLower(format))
	if err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	if err := f.Draw(draw.New(c)); err != nil {
		return err
	}
	if _, err := c.WriteTo(w); err != nil {
		return fmt.Errorf("plot: write %s: %w", format, err)
	}
	return nil
}

// Save renders the figure into path in the format its extension names.
// A failed write leaves no partial file behind.
func (f *Figure) Save(path string, width, height int) (err error) {
	format := strings.TrimPrefix(filepath.Ext(path), ".")
	if format == "" {
		return fmt.Errorf("plot: %s: no file extension to choose the format (e.g. .png, .svg, .pdf)", path)
	}
	if !slices.Contains(draw.Formats(), strings.ToLower(format)) {
		return fmt.Errorf("plot: %s: unsupported format %q, want one of %s", path, format, strings.Join(draw.Formats(), ", "))
	}
	out, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("plot: %w", cerr)
		}
		if err != nil {
			_ = os.Remove(path)
		}
	}()
	return f.Render(out, format, width, height)
}

// good returns the successful snapshots of s.
func good(s Series) []snapshot.Snapshot {
	out := make([]snapshot.Snapshot, 0, len(s.Snapshots))
	for _, sn := range s.Snapshots {
		if !sn.Failed() {
			out = append(out, sn)
		}
	}
	return out
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// steps formats a list of steps for an error message, eliding the middle
// of long lists.
func steps(v []int64) string {
	if len(v) == 0 {
		return "none"
	}
	f := func(v []int64) string {
		s := make([]string, len(v))
		for i, x := range v {
			s[i] = strconv.FormatInt(x, 10)
		}
		return strings.Join(s, ", ")
	}
	if len(v) > 12 {
		return f(v[:6]) + ", …, " + f(v[len(v)-3:])
	}
	return f(v)
}

// title joins a figure's subject with the series labels.
func title(opt Options, subject string, series []Series) string {
	if opt.Title != "" {
		return opt.Title
	}
	labels := make([]string, 0, len(series))
	for _, s := range series {
		if s.Label != "" {
			labels = append(labels, s.Label)
		}
	}
	if len(labels) == 0 {
		return subject
	}
	return subject + ": " + strings.Join(labels, " vs ")
}
