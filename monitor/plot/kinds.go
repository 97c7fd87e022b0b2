package plot

import (
	"cmp"
	"fmt"
	"image/color"
	"math"
	"slices"
	"strconv"

	"gonum.org/v1/gonum/floats"
	gplot "gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/snapshot"
)

// densityFloor is added to the ESD before its log-scale plot, as
// PyHessian's density_plot.py does (density + 1e-7), so that empty parts of
// the spectrum stay on the axis.
const densityFloor = 1e-7

func newPlot(title, x, y string) *gplot.Plot {
	p := gplot.New()
	p.Title.Text = title
	p.X.Label.Text = x
	p.Y.Label.Text = y
	p.Add(plotter.NewGrid())
	return p
}

func newLegend() *gplot.Legend {
	l := gplot.NewLegend()
	l.Left, l.Top = true, true
	l.TextStyle.Font.Size = vg.Points(10)
	l.Padding = vg.Points(1)
	return &l
}

// legendText shortens long names (block tensors can have long paths).
func legendText(s string) string {
	r := []rune(s)
	if len(r) > 36 {
		return string(r[:16]) + "…" + string(r[len(r)-19:])
	}
	return s
}

// label names a curve: with one series the curve name alone, otherwise
// prefixed with the series label.
func label(series []Series, s Series, name string) string {
	if len(series) == 1 || s.Label == "" {
		return name
	}
	if name == "" {
		return s.Label
	}
	return s.Label + " " + name
}

// styled returns a line of pts with a colour and dash pattern.
func styled(pts plotter.XYs, c color.Color, width vg.Length, dashes []vg.Length) (*plotter.Line, error) {
	l, err := plotter.NewLine(pts)
	if err != nil {
		return nil, fmt.Errorf("plot: %w", err)
	}
	l.Color = c
	l.Width = width
	l.Dashes = dashes
	return l, nil
}

// dots marks the snapshots on a trajectory: probes are sparse, so a reader
// should see where the data are.
func dots(pts plotter.XYs, c color.Color) (*plotter.Scatter, error) {
	s, err := plotter.NewScatter(pts)
	if err != nil {
		return nil, fmt.Errorf("plot: %w", err)
	}
	s.GlyphStyle = draw.GlyphStyle{Color: c, Radius: vg.Points(1.8), Shape: draw.CircleGlyph{}}
	return s, nil
}

// eigenFigure draws λ1..k, λmin and λ1(P⁻¹H) over steps with the
// sharpness threshold. λ1 is the dense series: every probe, light or full,
// has it, and the full probes among them are ringed; λ2..k come from full
// probes only.
func eigenFigure(series []Series, opt Options) (*Figure, error) {
	p := newPlot(title(opt, "Top Hessian eigenvalues", series), "training step", "eigenvalue λ")
	f := &eigenFig{p: p, leg: newLegend(), series: series, eigMin: math.Inf(1), eigMax: math.Inf(-1)}
	for si := range series {
		if err := f.addSeries(si); err != nil {
			return nil, err
		}
	}
	if !f.drawn {
		return nil, fmt.Errorf("%w: no snapshot holds eigenvalues", ErrNoData)
	}
	if err := f.addThresholds(); err != nil {
		return nil, err
	}
	return &Figure{panels: []panel{{p: p, legend: f.leg}}}, nil
}

// eigenFig is the eigenvalue figure while it is drawn.
type eigenFig struct {
	p              *gplot.Plot
	leg            *gplot.Legend
	series         []Series
	drawn, ringed  bool
	eigMin, eigMax float64
	thresholds     []threshold
	owners         []int
}

// addSeries draws one series: its ranks, the full-probe rings on λ1, λmin
// and λ1(P⁻¹H), and keeps its threshold for addThresholds.
func (f *eigenFig) addSeries(si int) error {
	s := f.series[si]
	snaps := good(s)
	multi := len(f.series) > 1
	k := 0
	for _, sn := range snaps {
		k = max(k, len(sn.Eigenvalues))
	}
	for r := range k {
		var pts plotter.XYs
		for _, sn := range snaps {
			if r < len(sn.Eigenvalues) && finite(sn.Eigenvalues[r]) {
				l := sn.Eigenvalues[r]
				pts = append(pts, plotter.XY{X: float64(sn.Step), Y: l})
				f.eigMin, f.eigMax = min(f.eigMin, l), max(f.eigMax, l)
			}
		}
		if len(pts) == 0 {
			continue
		}
		// One run: a colour per rank. Several: a colour per run, λ1
		// solid and thick, the lower ranks thin and dashed.
		c, w, dash := colour(r), vg.Points(1.5), []vg.Length(nil)
		if multi {
			c = colour(si)
			if r > 0 {
				w, dash = vg.Points(0.8), []vg.Length{vg.Points(4), vg.Points(2)}
			}
		}
		if r == 0 {
			w = vg.Points(2)
		}
		l, err := styled(pts, c, w, dash)
		if err != nil {
			return err
		}
		d, err := dots(pts, c)
		if err != nil {
			return err
		}
		f.p.Add(l, d)
		switch {
		case !multi:
			f.leg.Add(fmt.Sprintf("λ%d", r+1), l)
		case r == 0:
			f.leg.Add(legendText(label(f.series, s, "λ1")), l)
		case r == k-1:
			f.leg.Add(legendText(label(f.series, s, fmt.Sprintf("λ2..λ%d", k))), l)
		}
		f.drawn = true
	}
	if err := f.addRings(snaps); err != nil {
		return err
	}
	if err := f.addExtras(si, snaps, k); err != nil {
		return err
	}
	if t, ok := thresholdOf(snaps); ok {
		f.thresholds = append(f.thresholds, t)
		f.owners = append(f.owners, si)
	}
	return nil
}

// ringColour is the colour of the rings that mark full probes on the λ1
// series of an eigenvalue figure: near black, apart from every line colour.
func ringColour() color.Color { return color.NRGBA{R: 0x11, G: 0x11, B: 0x11, A: 0xff} }

// addRings rings λ1 at the full probes, when the series also has light
// ones (in a run of full probes only, every dot would be ringed).
func (f *eigenFig) addRings(snaps []snapshot.Snapshot) error {
	pts, light := fullProbePoints(snaps)
	if len(pts) == 0 || light == 0 {
		return nil
	}
	sc, err := plotter.NewScatter(pts)
	if err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	sc.GlyphStyle = draw.GlyphStyle{Color: ringColour(), Radius: vg.Points(3.5), Shape: draw.RingGlyph{}}
	f.p.Add(sc)
	if !f.ringed {
		f.leg.Add("full probe", sc)
		f.ringed = true
	}
	return nil
}

// fullProbePoints returns (step, λ1) of the full probes among snaps and
// the number of light probes with a finite λ1.
func fullProbePoints(snaps []snapshot.Snapshot) (pts plotter.XYs, light int) {
	for _, sn := range snaps {
		l1, ok := sn.Lambda1()
		if !ok || !finite(l1) {
			continue
		}
		if sn.IsLight() {
			light++
			continue
		}
		pts = append(pts, plotter.XY{X: float64(sn.Step), Y: l1})
	}
	return pts, light
}

// addExtras draws the other end of the spectrum and, for Adam, the
// preconditioned sharpness, each as its own dotted line.
func (f *eigenFig) addExtras(si int, snaps []snapshot.Snapshot, k int) error {
	s := f.series[si]
	for ei, extra := range []struct {
		name string
		get  func(*snapshot.Snapshot) *snapshot.Eigenpair
	}{
		{"λmin", func(sn *snapshot.Snapshot) *snapshot.Eigenpair { return sn.LambdaMin }},
		{"λ1(P⁻¹H)", func(sn *snapshot.Snapshot) *snapshot.Eigenpair { return sn.PreconditionedLambda1 }},
	} {
		var pts plotter.XYs
		for i := range snaps {
			if e := extra.get(&snaps[i]); e != nil && finite(e.Value) {
				pts = append(pts, plotter.XY{X: float64(snaps[i].Step), Y: e.Value})
				f.eigMin, f.eigMax = min(f.eigMin, e.Value), max(f.eigMax, e.Value)
			}
		}
		if len(pts) == 0 {
			continue
		}
		c := colour(k + ei)
		if len(f.series) > 1 {
			c = colour(si)
		}
		l, err := styled(pts, c, vg.Points(1.2), []vg.Length{vg.Points(2), vg.Points(2)})
		if err != nil {
			return err
		}
		d, err := dots(pts, c)
		if err != nil {
			return err
		}
		f.p.Add(l, d)
		f.leg.Add(legendText(label(f.series, s, extra.name)), l)
		f.drawn = true
	}
	return nil
}

// addThresholds draws each series' threshold. One far above every
// eigenvalue would squash the trajectories into a flat band at the bottom:
// such a line is left out and its legend entry gives its value (the run is
// far from the edge of stability, which is the answer the line would have
// given).
func (f *eigenFig) addThresholds() error {
	for i, t := range f.thresholds {
		c := color.Color(color.Gray{Y: 90})
		if len(f.series) > 1 {
			c = colour(f.owners[i])
		}
		l, err := styled(t.pts, c, vg.Points(1.2), []vg.Length{vg.Points(8), vg.Points(3), vg.Points(2), vg.Points(3)})
		if err != nil {
			return err
		}
		name := t.name
		if f.eigMax > 0 && t.min > 2.5*f.eigMax {
			name += " (off scale)"
		} else {
			f.p.Add(l)
		}
		f.leg.Add(legendText(label(f.series, f.series[f.owners[i]], name)), l)
	}
	return nil
}

// threshold is the edge-of-stability level one series' snapshots
// recorded: 2/η for SGD (Cohen et al. 2021), (2+2β)/η with momentum,
// (2+2β1)/(η(1−β1)) for Adam. It follows the learning rate when a schedule
// changes it.
type threshold struct {
	pts      plotter.XYs
	name     string
	min, max float64
}

func thresholdOf(snaps []snapshot.Snapshot) (threshold, bool) {
	t := threshold{min: math.Inf(1)}
	for _, sn := range snaps {
		if v := sn.SharpnessThreshold; v > 0 && finite(v) {
			t.pts = append(t.pts, plotter.XY{X: float64(sn.Step), Y: v})
			t.min, t.max = min(t.min, v), max(t.max, v)
			if t.name == "" {
				t.name = thresholdName(sn)
			}
		}
	}
	if t.min == t.max {
		t.name += " = " + strconv.FormatFloat(t.max, 'g', 4, 64)
	}
	return t, len(t.pts) > 0
}

// thresholdName names the formula behind a snapshot's sharpness threshold,
// recognised from its learning rate, optimiser and β1.
func thresholdName(sn snapshot.Snapshot) string {
	t, lr, b := sn.SharpnessThreshold, sn.LearningRate, sn.Beta1
	near := func(want float64) bool { return lr > 0 && math.Abs(t*lr-want) <= 1e-9*want }
	switch {
	case near(2):
		return "2/η"
	case sn.Optimizer == "adam" && b > 0 && b < 1 && near((2+2*b)/(1-b)):
		return "(2+2β1)/(η(1−β1))"
	case near(2 + 2*b):
		return "(2+2β)/η"
	}
	return "sharpness threshold"
}

func traceFigure(series []Series, opt Options) (*Figure, error) {
	p := newPlot(title(opt, "Hessian trace ± stderr", series), "training step", "tr(H)")
	leg := newLegend()
	drawn := false
	for si, s := range series {
		var mid, band plotter.XYs
		var lower plotter.XYs
		for _, sn := range good(s) {
			t := sn.Trace
			if t == nil || !finite(t.Value) {
				continue
			}
			x := float64(sn.Step)
			mid = append(mid, plotter.XY{X: x, Y: t.Value})
			se := t.StdErr
			if !finite(se) || se < 0 {
				se = 0
			}
			band = append(band, plotter.XY{X: x, Y: t.Value + se})
			lower = append(lower, plotter.XY{X: x, Y: t.Value - se})
		}
		if len(mid) == 0 {
			continue
		}
		c := colour(si)
		// A long run has more probes than the figure has pixel columns:
		// drawing each one costs seconds and shows nothing more. Keep each
		// bucket's extremes, so spikes survive.
		full := len(mid)
		mid, band, lower = thin(mid, maxDrawn), thin(band, maxDrawn), thin(lower, maxDrawn)
		slices.Reverse(lower)
		band = append(band, lower...)
		poly, err := plotter.NewPolygon(band)
		if err != nil {
			return nil, fmt.Errorf("plot: %w", err)
		}
		r, g, b, _ := c.RGBA()
		poly.Color = color.NRGBA{R: uint8(r >> 8), G: uint8(g >> 8), B: uint8(b >> 8), A: 0x48}
		poly.LineStyle.Width = 0
		l, err := styled(mid, c, vg.Points(1.8), nil)
		if err != nil {
			return nil, err
		}
		p.Add(poly, l)
		if full <= maxDots {
			d, err := dots(mid, c)
			if err != nil {
				return nil, err
			}
			p.Add(d)
		}
		leg.Add(legendText(label(series, s, "tr(H)")), l)
		leg.Add(legendText(label(series, s, "± 1 stderr")), poly)
		drawn = true
	}
	if !drawn {
		return nil, fmt.Errorf("%w: no snapshot holds a trace", ErrNoData)
	}
	return &Figure{panels: []panel{{p: p, legend: leg}}}, nil
}

// maxDrawn bounds the points of one drawn line (two per bucket of thin;
// about one bucket per two pixel columns of the default 900-px figure, since
// freetype's rasterizer slows down with every crossing segment),
// maxDots the probes that still get a dot each.
const (
	maxDrawn = 800
	maxDots  = 500
)

// thin returns pts (in X order) reduced to at most about limit points: per
// bucket of consecutive points the lowest and the highest, in X order.
func thin(pts plotter.XYs, limit int) plotter.XYs {
	if len(pts) <= limit || limit < 2 {
		return pts
	}
	buckets := limit / 2
	out := make(plotter.XYs, 0, 2*buckets)
	for b := range buckets {
		lo, hi := b*len(pts)/buckets, (b+1)*len(pts)/buckets
		if lo >= hi {
			continue
		}
		iMin, iMax := lo, lo
		for i := lo; i < hi; i++ {
			if pts[i].Y < pts[iMin].Y {
				iMin = i
			}
			if pts[i].Y > pts[iMax].Y {
				iMax = i
			}
		}
		out = append(out, pts[min(iMin, iMax)])
		if iMin != iMax {
			out = append(out, pts[max(iMin, iMax)])
		}
	}
	return out
}

// esdResult rebuilds the estimator's view of a stored ESD, or false when
// the stored one is malformed.
func esdResult(e *snapshot.ESD) (estimators.ESDResult, bool) {
	if e == nil || e.Probes <= 0 || e.Steps <= 0 || len(e.Nodes) != e.Probes*e.Steps || len(e.Weights) != len(e.Nodes) {
		return estimators.ESDResult{}, false
	}
	for i, x := range e.Nodes {
		if !finite(x) || !finite(e.Weights[i]) {
			return estimators.ESDResult{}, false
		}
	}
	return estimators.ESDResult{Nodes: e.Nodes, Weights: e.Weights, Probes: e.Probes, Steps: e.Steps}, true
}

// esdSteps picks the snapshots of s that KindESD draws.
func esdSteps(s Series, want []int64) ([]snapshot.Snapshot, error) {
	var have []snapshot.Snapshot
	for _, sn := range good(s) {
		if _, ok := esdResult(sn.ESD); ok {
			have = append(have, sn)
		}
	}
	if len(want) == 0 {
		switch len(have) {
		case 0:
			return nil, nil
		case 1:
			return have, nil
		}
		return []snapshot.Snapshot{have[0], have[len(have)-1]}, nil
	}
	out := make([]snapshot.Snapshot, 0, len(want))
	for _, step := range want {
		i := slices.IndexFunc(have, func(sn snapshot.Snapshot) bool { return sn.Step == step })
		if i < 0 {
			known := make([]int64, len(have))
			for j, sn := range have {
				known[j] = sn.Step
			}
			return nil, fmt.Errorf("plot: %s: no ESD at step %d (%w); steps with an ESD: %s", s.Label, step, snapshot.ErrUnknownStep, steps(known))
		}
		out = append(out, have[i])
	}
	return out, nil
}

// esdCurves smooths each ESD into a density on one grid shared by all, so
// that curves of different steps and runs compare point by point. Each
// density follows PyHessian's density_generate: a Gaussian kernel of
// variance Sigma2·max(1, λmax−λmin) over the ESD's own node range (mean
// extremes over probes), normalised to unit Riemann sum on the grid. The
// grid spans every node range with a margin of 2% of it or five kernel
// widths (at least PyHessian's 0.01), so the outermost peaks are drawn
// whole rather than cut in half.
func esdCurves(esds []*snapshot.ESD, bins int) (grid []float64, densities [][]float64, err error) {
	if len(esds) == 0 {
		return nil, nil, nil
	}
	lo, hi, sigma := math.Inf(1), math.Inf(-1), 0.0
	results := make([]estimators.ESDResult, len(esds))
	variances := make([]float64, len(esds))
	for i, e := range esds {
		r, ok := esdResult(e)
		if !ok {
			return nil, nil, fmt.Errorf("plot: malformed ESD (%d nodes, %d weights, %d probes × %d steps)", len(e.Nodes), len(e.Weights), e.Probes, e.Steps)
		}
		results[i] = r
		lo, hi = min(lo, slices.Min(r.Nodes)), max(hi, slices.Max(r.Nodes))
		// The variance density_generate uses, from the ESD's own range.
		_, _, variances[i] = r.Density(estimators.DensityOptions{Bins: 2, Sigma2: e.Sigma2})
		sigma = max(sigma, math.Sqrt(variances[i]))
	}
	margin := max(0.01, 0.02*(hi-lo), 5*sigma)
	grid = make([]float64, bins)
	floats.Span(grid, lo-margin, hi+margin)
	dx := grid[1] - grid[0]
	for i, r := range results {
		variance := variances[i]
		d := make([]float64, bins)
		if err := r.KernelDensity(d, grid, variance); err != nil {
			return nil, nil, fmt.Errorf("plot: %w", err)
		}
		if s := floats.Sum(d) * dx; s > 0 {
			floats.Scale(1/s, d)
		}
		densities = append(densities, d)
	}
	return grid, densities, nil
}

// logTicks labels the powers of ten of a log axis compactly (1e-5, 0.01,
// 100) where gonum's LogTicks prints 9.999999999999999e-06.
type logTicks struct{}

func (logTicks) Ticks(lo, hi float64) []gplot.Tick {
	ts := gplot.LogTicks{Prec: -1}.Ticks(lo, hi)
	for i, t := range ts {
		if t.Label == "" || !(t.Value > 0) {
			continue
		}
		e := int(math.Round(math.Log10(t.Value)))
		if e >= -3 && e <= 3 {
			ts[i].Label = strconv.FormatFloat(math.Pow10(e), 'f', -1, 64)
		} else {
			ts[i].Label = "1e" + strconv.Itoa(e)
		}
	}
	return ts
}

func esdFigure(series []Series, opt Options) (*Figure, error) {
	bins := opt.Bins
	if bins <= 0 {
		bins = 2000
	}
	bins = max(bins, 2)
	type curve struct {
		si   int
		step int64
		esd  *snapshot.ESD
	}
	var curves []curve
	var esds []*snapshot.ESD
	for si, s := range series {
		picked, err := esdSteps(s, opt.Steps)
		if err != nil {
			return nil, err
		}
		for _, sn := range picked {
			curves = append(curves, curve{si: si, step: sn.Step, esd: sn.ESD})
			esds = append(esds, sn.ESD)
		}
	}
	if len(curves) == 0 {
		return nil, fmt.Errorf("%w: no snapshot holds a spectral density", ErrNoData)
	}
	grid, dens, err := esdCurves(esds, bins)
	if err != nil {
		return nil, err
	}
	p := newPlot(title(opt, "Hessian eigenvalue spectral density", series), "eigenvalue", "density (log scale)")
	p.Y.Scale = gplot.LogScale{}
	p.Y.Tick.Marker = logTicks{}
	leg := newLegend()
	for ci, c := range curves {
		pts := make(plotter.XYs, len(grid))
		for i := range grid {
			y := dens[ci][i] + densityFloor
			if !finite(y) || y <= 0 {
				y = densityFloor
			}
			pts[i] = plotter.XY{X: grid[i], Y: y}
		}
		var dash []vg.Length
		if c.si > 0 {
			dash = plotutil.Dashes(c.si)
		}
		l, err := styled(pts, colour(ci), vg.Points(1.3), dash)
		if err != nil {
			return nil, err
		}
		p.Add(l)
		leg.Add(legendText(label(series, series[c.si], fmt.Sprintf("step %d", c.step))), l)
	}
	return &Figure{panels: []panel{{p: p, legend: leg}}}, nil
}

func blocksFigure(series []Series, opt Options) (*Figure, error) {
	return blockValuesFigure(series, opt, "Per-layer Hessian trace", "tr(H_block)", "block traces",
		func(sn *snapshot.Snapshot) []snapshot.BlockValue {
			if sn.Trace == nil {
				return nil
			}
			out := make([]snapshot.BlockValue, len(sn.Trace.Blocks))
			for i, b := range sn.Trace.Blocks {
				out[i] = snapshot.BlockValue{Name: b.Name, Value: b.Value}
			}
			return out
		})
}

func blocksEigenFigure(series []Series, opt Options) (*Figure, error) {
	return blockValuesFigure(series, opt, "Layer-wise sharpness λ1(H_block)", "λ1 of the diagonal block", "block eigenvalues",
		func(sn *snapshot.Snapshot) []snapshot.BlockValue { return sn.BlockLambda1 })
}

// blockValuesFigure draws one per-block quantity over steps, the TopBlocks
// blocks of largest |value| over every series and step, so that the same
// layers are drawn for every run.
func blockValuesFigure(series []Series, opt Options, subject, ylabel, what string, get func(*snapshot.Snapshot) []snapshot.BlockValue) (*Figure, error) {
	top := opt.TopBlocks
	if top <= 0 {
		top = 10
	}
	score := map[string]float64{}
	for _, s := range series {
		snaps := good(s)
		for i := range snaps {
			for _, b := range get(&snaps[i]) {
				if finite(b.Value) {
					score[b.Name] = max(score[b.Name], math.Abs(b.Value))
				}
			}
		}
	}
	if len(score) == 0 {
		return nil, fmt.Errorf("%w: no snapshot holds %s", ErrNoData, what)
	}
	names := make([]string, 0, len(score))
	for n := range score {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int {
		return cmp.Or(cmp.Compare(score[b], score[a]), cmp.Compare(a, b))
	})
	if len(names) > top {
		subject = fmt.Sprintf("%s (top %d of %d blocks)", subject, top, len(names))
		names = names[:top]
	}
	p := newPlot(title(opt, subject, series), "training step", ylabel)
	leg := newLegend()
	for bi, name := range names {
		for si, s := range series {
			var pts plotter.XYs
			snaps := good(s)
			for i := range snaps {
				for _, b := range get(&snaps[i]) {
					if b.Name == name && finite(b.Value) {
						pts = append(pts, plotter.XY{X: float64(snaps[i].Step), Y: b.Value})
						break
					}
				}
			}
			if len(pts) == 0 {
				continue
			}
			// Colours cycle after seven blocks; dashes then tell them
			// apart, and tell the runs apart when several overlay.
			dash := plotutil.Dashes(si + bi/len(plotutil.DarkColors))
			c := colour(bi)
			l, err := styled(pts, c, vg.Points(1.4), dash)
			if err != nil {
				return nil, err
			}
			d, err := dots(pts, c)
			if err != nil {
				return nil, err
			}
			p.Add(l, d)
			leg.Add(legendText(label(series, s, name)), l)
		}
	}
	return &Figure{panels: []panel{{p: p, legend: leg}}}, nil
}

// colour is the i-th line colour: gonum's dark palette, which reads better
// than its soft default on white.
func colour(i int) color.Color {
	return plotutil.DarkColors[i%len(plotutil.DarkColors)]
}
