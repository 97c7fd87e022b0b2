package plot

import (
	"fmt"
	"math"
	"slices"

	gplot "gonum.org/v1/plot"
	"gonum.org/v1/plot/palette/moreland"
	"gonum.org/v1/plot/plotter"

	"github.com/hessmon/hessmon/estimators"
)

// heatDecades is the colour range of the heat map below its peak, in
// decades of density: Hessian spectra pile most mass in a spike at 0 and
// leave a handful of outliers, which a linear colour scale would hide.
const heatDecades = 6

// densityGrid is a plotter.GridXYZ of log10 density over step (columns)
// and eigenvalue (rows).
type densityGrid struct {
	x, y []float64
	z    [][]float64 // z[c][r]
}

func (g *densityGrid) Dims() (c, r int)   { return len(g.x), len(g.y) }
func (g *densityGrid) Z(c, r int) float64 { return g.z[c][r] }
func (g *densityGrid) X(c int) float64    { return g.x[c] }
func (g *densityGrid) Y(r int) float64    { return g.y[r] }

// uniformColumns resamples a densityGrid onto n evenly spaced columns, each
// showing the snapshot nearest to it, i.e. every snapshot's column reaches
// halfway to its neighbours, as a vector heat map would draw it. gonum's
// rasterized HeatMap needs even spacing, and a raster has no seams between
// cells; probe steps can be uneven (adaptive intervals).
type uniformColumns struct {
	g       *densityGrid
	n       int
	x0, dx  float64
	nearest []int
}

func newUniformColumns(g *densityGrid, n int) *uniformColumns {
	c := len(g.x)
	lo, hi := g.x[0]-0.5, g.x[c-1]+0.5
	if c > 1 {
		lo, hi = g.x[0]-(g.x[1]-g.x[0])/2, g.x[c-1]+(g.x[c-1]-g.x[c-2])/2
	}
	u := &uniformColumns{g: g, n: n, x0: lo, dx: (hi - lo) / float64(n), nearest: make([]int, n)}
	j := 0
	for i := range n {
		x := u.X(i)
		for j+1 < c && x > (g.x[j]+g.x[j+1])/2 {
			j++
		}
		u.nearest[i] = j
	}
	return u
}

func (u *uniformColumns) Dims() (c, r int)   { return u.n, len(u.g.y) }
func (u *uniformColumns) Z(c, r int) float64 { return u.g.z[u.nearest[c]][r] }
func (u *uniformColumns) X(c int) float64    { return u.x0 + (float64(c)+0.5)*u.dx }
func (u *uniformColumns) Y(r int) float64    { return u.g.y[r] }

// CellDensity writes into dst the mean over each cell [edges[i], edges[i+1]]
// of the Gaussian-smoothed density Σ wⱼ·N(x; nodeⱼ, variance), computed
// exactly with the normal CDF. Cell means, unlike point samples, keep every
// node's mass however narrow the kernel is against the cells, so a coarse
// heat-map grid neither drops nor aliases outliers. len(dst) must be
// len(edges)−1.
func CellDensity(dst, edges, nodes, weights []float64, variance float64) error {
	if len(edges) < 2 || len(dst) != len(edges)-1 {
		return fmt.Errorf("plot: CellDensity: len(dst)=%d, len(edges)=%d", len(dst), len(edges))
	}
	if len(nodes) != len(weights) {
		return fmt.Errorf("plot: CellDensity: %d nodes, %d weights", len(nodes), len(weights))
	}
	if !(variance > 0) || math.IsInf(variance, 0) {
		return fmt.Errorf("plot: CellDensity: variance %g, want a positive finite number", variance)
	}
	s := math.Sqrt(2 * variance)
	for i := range dst {
		a, b := edges[i], edges[i+1]
		if !(b > a) {
			return fmt.Errorf("plot: CellDensity: edges must increase, got %g then %g", a, b)
		}
		var m float64
		for j, t := range nodes {
			if w := weights[j]; w != 0 {
				// ∫ₐᵇ N(x; t, σ²) dx = (erf((b−t)/√2σ) − erf((a−t)/√2σ)) / 2
				m += w * 0.5 * (math.Erf((b-t)/s) - math.Erf((a-t)/s))
			}
		}
		dst[i] = m / (b - a)
	}
	return nil
}

// heatColumn is one snapshot's ESD prepared for the heat map.
type heatColumn struct {
	step     int64
	nodes    []float64
	weights  []float64
	variance float64
}

func heatmapFigure(series []Series, opt Options) (*Figure, error) {
	bins := opt.Bins
	if bins <= 0 {
		bins = 240
	}
	cols, lo, hi, err := heatColumns(series)
	if err != nil {
		return nil, err
	}
	edges := make([]float64, bins+1)
	for i := range edges {
		edges[i] = lo + (hi-lo)*float64(i)/float64(bins)
	}
	grids, zmin, zmax, err := heatGrids(cols, edges)
	if err != nil {
		return nil, err
	}
	cm := moreland.ExtendedBlackBody()
	cm.SetMin(zmin)
	cm.SetMax(zmax)
	pal := cm.Palette(256)
	f := &Figure{}
	for si, s := range series {
		g := grids[si]
		if g == nil {
			continue
		}
		subject := "Hessian spectral density over training"
		if len(series) > 1 {
			subject = s.Label
		} else if opt.Title == "" && s.Label != "" {
			subject += ": " + s.Label
		}
		if opt.Title != "" && len(f.panels) == 0 {
			subject = opt.Title
		}
		p := newPlot(subject, "training step", "eigenvalue")
		hm := plotter.NewHeatMap(newUniformColumns(g, 1024), pal)
		hm.Min, hm.Max = zmin, zmax
		hm.Rasterized = true
		p.Add(hm)
		p.Y.Min, p.Y.Max = lo, hi
		f.panels = append(f.panels, panel{p: p})
	}
	bar := gplot.New()
	bar.HideY()
	bar.X.Label.Text = "log10 density"
	bar.Add(&plotter.ColorBar{ColorMap: cm})
	f.bar = bar
	return f, nil
}

// heatColumns prepares each series' ESDs as columns and returns the
// eigenvalue range they cover (three kernel widths past the extreme
// nodes, padded by 2%).
func heatColumns(series []Series) (cols [][]heatColumn, lo, hi float64, err error) {
	cols = make([][]heatColumn, len(series))
	lo, hi = math.Inf(1), math.Inf(-1)
	for si, s := range series {
		for _, sn := range good(s) {
			r, ok := esdResult(sn.ESD)
			if !ok {
				continue
			}
			// The kernel width PyHessian's density_generate would use.
			_, _, variance := r.Density(estimators.DensityOptions{Bins: 2, Sigma2: sn.ESD.Sigma2})
			if !(variance > 0) {
				continue
			}
			col := heatColumn{step: sn.Step, variance: variance}
			for i, x := range r.Nodes {
				if w := r.Weights[i]; w > 0 {
					col.nodes = append(col.nodes, x)
					col.weights = append(col.weights, w)
					lo = min(lo, x-3*math.Sqrt(variance))
					hi = max(hi, x+3*math.Sqrt(variance))
				}
			}
			if len(col.nodes) > 0 {
				cols[si] = append(cols[si], col)
			}
		}
	}
	if math.IsInf(lo, 0) {
		return nil, 0, 0, fmt.Errorf("%w: no snapshot holds a spectral density", ErrNoData)
	}
	if pad := 0.02 * (hi - lo); pad > 0 {
		lo, hi = lo-pad, hi+pad
	} else {
		lo, hi = lo-0.5, hi+0.5
	}
	return cols, lo, hi, nil
}

// heatGrids turns the columns into log10 density grids over the cells
// between edges, clamped heatDecades below the peak, and returns that
// colour range.
func heatGrids(cols [][]heatColumn, edges []float64) (grids []*densityGrid, zmin, zmax float64, err error) {
	bins := len(edges) - 1
	centres := make([]float64, bins)
	for i := range centres {
		centres[i] = (edges[i] + edges[i+1]) / 2
	}
	grids = make([]*densityGrid, len(cols))
	peak := 0.0
	for si := range cols {
		if len(cols[si]) == 0 {
			continue
		}
		g := &densityGrid{y: centres}
		for _, col := range cols[si] {
			d := make([]float64, bins)
			if err := CellDensity(d, edges, col.nodes, col.weights, col.variance); err != nil {
				return nil, 0, 0, err
			}
			peak = max(peak, slices.Max(d))
			g.x = append(g.x, float64(col.step))
			g.z = append(g.z, d)
		}
		grids[si] = g
	}
	if !(peak > 0) || !finite(peak) {
		return nil, 0, 0, fmt.Errorf("%w: the spectral densities are empty", ErrNoData)
	}
	zmax = math.Log10(peak)
	zmin = zmax - heatDecades
	for _, g := range grids {
		if g == nil {
			continue
		}
		for _, col := range g.z {
			for r, d := range col {
				col[r] = math.Max(zmin, math.Log10(d)) // log10(0) = −Inf clamps too
			}
		}
	}
	return grids, zmin, zmax, nil
}

var (
	_ plotter.GridXYZ = (*densityGrid)(nil)
	_ plotter.GridXYZ = (*uniformColumns)(nil)
)
