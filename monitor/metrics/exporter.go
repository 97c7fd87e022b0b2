package metrics

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hessmon/hessmon/snapshot"
)

// ESDEdges returns the fixed eigenvalue bin edges of hessian_esd_cumulative
// (without +Inf): 0 and ±10^(k/4) for k = −16…12, i.e. four log-spaced edges
// per decade from 1e-4 to 1e3 on both sides. Hessian spectra hold a spike at
// 0, a few large outliers and some negative mass; symmetric log bins resolve
// all three, and fixed edges keep snapshots comparable for Grafana heatmaps
// and histogram_quantile.
func ESDEdges() []float64 {
	var pos []float64
	for k := -16; k <= 12; k++ {
		if k%4 == 0 {
			pos = append(pos, math.Pow10(k/4))
		} else {
			pos = append(pos, math.Pow(10, float64(k)/4))
		}
	}
	edges := make([]float64, 0, 2*len(pos)+1)
	for i := len(pos) - 1; i >= 0; i-- {
		edges = append(edges, -pos[i])
	}
	edges = append(edges, 0)
	return append(edges, pos...)
}

// DurationBuckets are the probe-duration histogram's upper bounds, seconds.
func DurationBuckets() []float64 {
	return []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}
}

// Exporter turns snapshots into Prometheus metrics. It is a
// prometheus.Collector: register it on the Registerer of your choice
// (prometheus.DefaultRegisterer, or your own registry next to your other
// metrics). It is also a monitor sink (PutSnapshot) and training observer
// (ObserveTraining), so monitor.WithSink(exp) is all the wiring it needs.
//
// Gauges describe each run's latest successful snapshot, light or full,
// except the full-only estimates (top-2..k, trace, ESD, blocks), which keep
// the latest full probe's values and say its step in hessian_full_probe_step.
// They are produced
// at scrape time from a copy kept under a lock, so a scrape never sees half
// of an update and series of ranks or blocks that a newer snapshot no longer
// has disappear by themselves. Counters and the duration histogram count
// every probe, failed ones included. An Exporter is safe for concurrent use.
type Exporter struct {
	gauges *gauges

	mu   sync.RWMutex
	runs map[string]*runState

	edges    []float64
	leLabels []string // edges formatted, then "+Inf"

	duration *prometheus.HistogramVec
	hvps     *prometheus.CounterVec
	probes   *prometheus.CounterVec
	byKind   *prometheus.CounterVec
	failures *prometheus.CounterVec
}

// runState is what the gauges of one run show. has* flags say which
// estimates have been seen: a snapshot without a trace leaves the last trace
// in place, since the estimators configured for a run rarely change, and a
// light probe (which has none) must not blank the full probe's.
type runState struct {
	hasProbe  bool
	step      int64
	probeHVPs float64
	hasFull   bool
	fullStep  int64

	eig, res []float64

	hasTrace         bool
	trace, traceErr  float64
	blocks           []snapshot.BlockTrace
	hasESD           bool
	esdCum           []float64 // per edge, then +Inf
	hasSharpness     bool
	ratio, threshold float64

	hasMin                bool
	lmin, lminRes, negRat float64
	hasNegMass            bool
	negMass               float64
	hasPrecond            bool
	precond               float64
	mass, blockEig        []snapshot.BlockValue
	trainStep             int64
	loss, lr              float64
	hasLoss, hasLR        bool
}

// NewExporter returns an exporter with no runs yet.
func NewExporter() *Exporter {
	e := &Exporter{
		runs:  make(map[string]*runState),
		edges: ESDEdges(),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    ProbeDuration,
			Help:    "Wall time of one Hessian probe in seconds, failed probes included.",
			Buckets: DurationBuckets(),
		}, []string{LabelRun}),
		hvps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: HVPTotal,
			Help: "Hessian-vector products spent by all probes of the run.",
		}, []string{LabelRun}),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: ProbesTotal,
			Help: "Hessian probes run, light and full, failed ones included.",
		}, []string{LabelRun}),
		byKind: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: ProbesByKind,
			Help: "Hessian probes run, failed ones included, by kind (light, full) and by the reason they were taken " +
				"(scheduled, budget, or the trigger that brought a full probe forward).",
		}, []string{LabelRun, LabelKind, LabelReason}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: ProbeFailures,
			Help: "Hessian probes that failed, by reason (nan, panic, timeout, budget, error).",
		}, []string{LabelRun, LabelReason}),
	}
	for _, x := range e.edges {
		e.leLabels = append(e.leLabels, strconv.FormatFloat(x, 'g', -1, 64))
	}
	e.leLabels = append(e.leLabels, "+Inf")
	e.gauges = newGauges(e)
	return e
}

// Describe implements prometheus.Collector.
func (e *Exporter) Describe(ch chan<- *prometheus.Desc) {
	e.duration.Describe(ch)
	e.hvps.Describe(ch)
	e.probes.Describe(ch)
	e.byKind.Describe(ch)
	e.failures.Describe(ch)
	e.gauges.Describe(ch)
}

// Collect implements prometheus.Collector.
func (e *Exporter) Collect(ch chan<- prometheus.Metric) {
	e.duration.Collect(ch)
	e.hvps.Collect(ch)
	e.probes.Collect(ch)
	e.byKind.Collect(ch)
	e.failures.Collect(ch)
	e.gauges.Collect(ch)
}

// PutSnapshot observes s; it makes the exporter a monitor sink.
func (e *Exporter) PutSnapshot(s snapshot.Snapshot) error {
	e.Observe(s)
	return nil
}

// label makes s a valid label value: Prometheus requires UTF-8.
func label(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// state returns run's state, creating it and its zero-valued counters.
// e.mu must be held for writing.
func (e *Exporter) state(run string) *runState {
	st, ok := e.runs[run]
	if !ok {
		st = &runState{trainStep: math.MinInt64, step: math.MinInt64, fullStep: math.MinInt64}
		e.runs[run] = st
		e.hvps.WithLabelValues(run)
		e.probes.WithLabelValues(run)
		for _, k := range []string{KindLight, KindFull} {
			for _, r := range snapshot.Reasons() {
				e.byKind.WithLabelValues(run, k, string(r))
			}
		}
		for _, r := range snapshot.Failures() {
			e.failures.WithLabelValues(run, string(r))
		}
	}
	return st
}

// kindReason returns the kind and reason labels of s.
func kindReason(s *snapshot.Snapshot) (kind, reason string) {
	kind, reason = KindFull, string(s.Reason)
	if s.IsLight() {
		kind = KindLight
	}
	if reason == "" {
		reason = string(snapshot.ReasonScheduled)
	}
	return kind, label(reason)
}

// Observe records a probe's snapshot. A failed snapshot counts as a probe, a
// failure and its HVPs and duration, and leaves every gauge (training loss
// included) showing the last good values. Any probe newer than the newest
// one observed updates λ1, λmin and the sharpness gauges; a full probe newer
// than the newest full one also updates the full-only gauges. An older
// snapshot updates the counters only.
func (e *Exporter) Observe(s snapshot.Snapshot) {
	run := label(s.Run)
	e.mu.Lock()
	defer e.mu.Unlock()
	st := e.state(run)

	e.probes.WithLabelValues(run).Inc()
	kind, reason := kindReason(&s)
	e.byKind.WithLabelValues(run, kind, reason).Inc()
	if s.HVPs > 0 {
		e.hvps.WithLabelValues(run).Add(float64(s.HVPs))
	}
	if s.Seconds >= 0 && finite(s.Seconds) {
		e.duration.WithLabelValues(run).Observe(s.Seconds)
	}
	if s.Failed() {
		e.failures.WithLabelValues(run, label(string(s.Failure))).Inc()
		return
	}
	if s.Step >= st.trainStep {
		if finite(s.Loss) {
			st.trainStep, st.loss, st.hasLoss = s.Step, s.Loss, true
		}
		if finite(s.LearningRate) && s.LearningRate > 0 {
			st.trainStep, st.lr, st.hasLR = s.Step, s.LearningRate, true
		}
	}
	newer := s.Step >= st.step
	newerFull := !s.IsLight() && s.Step >= st.fullStep
	if newerFull {
		e.observeFull(st, &s, newer)
	}
	if newer {
		observeEvery(st, &s)
	}
}

// observeEvery updates the gauges that every probe, light or full, measures.
func observeEvery(st *runState, s *snapshot.Snapshot) {
	st.hasProbe, st.step, st.probeHVPs = true, s.Step, float64(s.HVPs)
	if len(s.Eigenvalues) > 0 {
		if len(st.eig) == 0 {
			st.eig = make([]float64, 1)
		}
		st.eig[0] = s.Eigenvalues[0]
		if len(s.Residuals) > 0 {
			if len(st.res) == 0 {
				st.res = make([]float64, 1)
			}
			st.res[0] = s.Residuals[0]
		}
	}
	if s.SharpnessThreshold > 0 {
		st.hasSharpness, st.ratio, st.threshold = true, s.SharpnessRatio, s.SharpnessThreshold
	}
	if p := s.LambdaMin; p != nil {
		st.hasMin, st.lmin, st.lminRes = true, p.Value, p.Residual
		st.negRat, _ = s.NegativeCurvatureRatio()
	}
	if p := s.PreconditionedLambda1; p != nil {
		st.hasPrecond, st.precond = true, p.Value
	}
}

// observeFull updates the full-only gauges from a full probe. When a newer
// light probe has been seen (newer is false) its λ1 stays in rank 1.
func (e *Exporter) observeFull(st *runState, s *snapshot.Snapshot, newer bool) {
	st.hasFull, st.fullStep = true, s.Step
	if len(s.Eigenvalues) > 0 {
		eig, res := slices.Clone(s.Eigenvalues), slices.Clone(s.Residuals)
		if !newer && len(st.eig) > 0 {
			eig[0] = st.eig[0]
			if len(res) > 0 && len(st.res) > 0 {
				res[0] = st.res[0]
			}
		}
		st.eig, st.res = eig, res
	}
	if t := s.Trace; t != nil {
		st.hasTrace, st.trace, st.traceErr = true, t.Value, t.StdErr
		st.blocks = st.blocks[:0]
		seen := make(map[string]bool, len(t.Blocks))
		for _, b := range t.Blocks {
			name := label(b.Name)
			if seen[name] { // a duplicate series would fail the whole scrape
				continue
			}
			seen[name] = true
			st.blocks = append(st.blocks, snapshot.BlockTrace{Name: name, Value: b.Value})
		}
	}
	if s.ESD != nil {
		if cum, ok := e.cumulative(s.ESD); ok {
			st.hasESD, st.esdCum = true, cum
		}
		if m := s.ESD.NegativeMass(1e-3); finite(m) {
			st.hasNegMass, st.negMass = true, m
		}
	}
	if len(s.BlockMass) > 0 {
		st.mass = dedupBlocks(s.BlockMass)
	}
	if len(s.BlockLambda1) > 0 {
		st.blockEig = dedupBlocks(s.BlockLambda1)
	}
}

// dedupBlocks sanitises block names and drops duplicates, which would fail
// the whole scrape.
func dedupBlocks(bs []snapshot.BlockValue) []snapshot.BlockValue {
	seen := make(map[string]bool, len(bs))
	out := make([]snapshot.BlockValue, 0, len(bs))
	for _, b := range bs {
		name := label(b.Name)
		if seen[name] {
			continue
		}
		seen[name] = true
		out = append(out, snapshot.BlockValue{Name: name, Value: b.Value, Residual: b.Residual})
	}
	return out
}

// cumulative returns the ESD quadrature's distribution function at every
// edge and at +Inf (= 1): the weight of nodes ≤ edge over the total weight.
// It reports false for a quadrature without positive finite total weight.
func (e *Exporter) cumulative(esd *snapshot.ESD) ([]float64, bool) {
	n := min(len(esd.Nodes), len(esd.Weights))
	bins := make([]float64, len(e.edges)+1) // bins[i]: edges[i-1] < x ≤ edges[i]
	var total float64
	for i := range n {
		w := esd.Weights[i]
		if !finite(w) || w < 0 {
			return nil, false
		}
		total += w
		x := esd.Nodes[i]
		if math.IsNaN(x) {
			bins[len(e.edges)] += w // counted only in +Inf
			continue
		}
		bins[sort.SearchFloat64s(e.edges, x)] += w
	}
	if !(total > 0) {
		return nil, false
	}
	cum := make([]float64, len(bins))
	var acc float64
	for i, w := range bins {
		acc += w
		cum[i] = min(acc/total, 1)
	}
	cum[len(cum)-1] = 1
	return cum, true
}

// ObserveTraining records the training loss and learning rate of a step;
// call it every step so that loss and η are not sampled only at probes.
func (e *Exporter) ObserveTraining(run string, step int64, loss, lr float64) {
	run = label(run)
	e.mu.Lock()
	defer e.mu.Unlock()
	st := e.state(run)
	if step < st.trainStep {
		return
	}
	st.trainStep = step
	st.loss, st.lr, st.hasLoss, st.hasLR = loss, lr, true, true
}

// Forget drops every series of run, e.g. when a server stops showing it.
func (e *Exporter) Forget(run string) {
	run = label(run)
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.runs, run)
	l := prometheus.Labels{LabelRun: run}
	e.duration.DeletePartialMatch(l)
	e.hvps.DeletePartialMatch(l)
	e.probes.DeletePartialMatch(l)
	e.byKind.DeletePartialMatch(l)
	e.failures.DeletePartialMatch(l)
}

// Replay observes every snapshot of every run of src in step order, so that
// a finished store serves the same metrics a live run did.
func (e *Exporter) Replay(src snapshot.Source) error {
	runs, err := src.Runs()
	if err != nil {
		return err
	}
	for _, r := range runs {
		snaps, err := src.Snapshots(r.ID, 0, -1)
		if err != nil {
			return err
		}
		for _, s := range snaps {
			s.Eigenvectors = nil
			e.Observe(s)
		}
	}
	return nil
}

// gauges is the collector that emits the per-run gauges from runState at
// scrape time.
type gauges struct {
	e *Exporter

	topEig, residual, trace, traceErr, block, esd,
	ratio, threshold, step, fullStep, hvps, loss, lr,
	lmin, lminRes, negRat, negMass, precond, mass, blockEig *prometheus.Desc
}

func newGauges(e *Exporter) *gauges {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, append([]string{LabelRun}, labels...), nil)
	}
	return &gauges{
		e: e,
		topEig: d(TopEigenvalue,
			"Hessian eigenvalue of the given rank (rank 1 first, in the order the monitor requested): rank 1 from the latest probe, light or full; "+
				"ranks 2..k from the latest full probe (hessian_full_probe_step).", LabelRank),
		residual: d(EigenvalueResidual,
			"Residual norm ‖Hv−λv‖ (‖v‖=1) certifying the eigenvalue of the same rank; same units as the eigenvalue.", LabelRank),
		trace: d(Trace,
			"Stochastic estimate of the Hessian trace at the latest full probe (hessian_full_probe_step)."),
		traceErr: d(TraceStdErr,
			"Standard error of hessian_trace; ±2 of these is a ~95% confidence band."),
		block: d(BlockTrace,
			"Trace of the Hessian's diagonal block of one parameter tensor (layer), from the same probes as hessian_trace.", LabelBlock),
		esd: d(ESDCumulative,
			"Fraction of the Hessian's eigenvalue spectral density (stochastic Lanczos quadrature) at eigenvalues ≤ le, "+
				"over fixed symmetric log-spaced edges; le=\"+Inf\" is 1. Untyped: a cumulative distribution, not a counting histogram.", LabelLE),
		ratio: d(SharpnessRatio,
			"λ1 over the edge-of-stability threshold (2/η for SGD, (2+2β1)/(η(1−β1)) for Adam); about 1 at the edge of stability."),
		threshold: d(SharpnessThreshold,
			"Edge-of-stability level for λ1 given the learning rate and optimiser, in the eigenvalues' units."),
		step: d(Step,
			"Training step of the latest successful Hessian probe, light or full."),
		fullStep: d(FullProbeStep,
			"Training step of the latest successful full Hessian probe: the step at which the full-only gauges "+
				"(eigenvalue ranks 2..k, trace, block trace, ESD, block mass, block λ1) were taken."),
		hvps: d(ProbeHVPs,
			"Hessian-vector products spent by the latest successful probe."),
		loss: d(TrainingLoss,
			"Training loss at the latest observed step."),
		lr: d(TrainingLR,
			"Learning rate η at the latest observed step."),
		lmin: d(MinEigenvalue,
			"Smallest Hessian eigenvalue λmin at the latest probe, light or full."),
		lminRes: d(MinEigenvalueResidual,
			"Residual norm ‖Hv−λv‖ certifying hessian_min_eigenvalue: some eigenvalue lies within it."),
		negRat: d(NegativeCurvature,
			"|λmin|/λ1 when λmin < 0, else 0: above 1 the loss curves down more steeply than up (e.g. a diverging run)."),
		negMass: d(ESDNegativeMass,
			"Share of the eigenvalue spectral density below zero (nodes below −0.1% of the largest |node|)."),
		precond: d(PreconditionedTopEigenvalue,
			"Top eigenvalue of P⁻¹H for an adaptive optimiser with diagonal preconditioner P (Adam): the sharpness "+
				"its edge-of-stability threshold (2+2β1)/(η(1−β1)) refers to (Cohen et al. 2022)."),
		mass: d(EigenvectorBlockMass,
			"Mass ‖v1[block]‖² of the top Hessian eigenvector on one parameter tensor at the latest full probe; sums to 1 over the blocks.", LabelBlock),
		blockEig: d(BlockTopEigenvalue,
			"Top eigenvalue of the Hessian's diagonal block of one parameter tensor (layer-wise sharpness), when probed.", LabelBlock),
	}
}

func (g *gauges) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{g.topEig, g.residual, g.trace, g.traceErr, g.block,
		g.esd, g.ratio, g.threshold, g.step, g.fullStep, g.hvps, g.loss, g.lr,
		g.lmin, g.lminRes, g.negRat, g.negMass, g.precond, g.mass, g.blockEig} {
		ch <- d
	}
}

func (g *gauges) Collect(ch chan<- prometheus.Metric) {
	e := g.e
	e.mu.RLock()
	defer e.mu.RUnlock()
	emit := func(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
		m, err := prometheus.NewConstMetric(d, t, v, labels...)
		if err != nil {
			m = prometheus.NewInvalidMetric(d, err)
		}
		ch <- m
	}
	gauge := prometheus.GaugeValue
	for run, st := range e.runs {
		if st.hasLoss {
			emit(g.loss, gauge, st.loss, run)
		}
		if st.hasLR {
			emit(g.lr, gauge, st.lr, run)
		}
		if !st.hasProbe {
			continue
		}
		emit(g.step, gauge, float64(st.step), run)
		if st.hasFull {
			emit(g.fullStep, gauge, float64(st.fullStep), run)
		}
		emit(g.hvps, gauge, st.probeHVPs, run)
		for i, v := range st.eig {
			rank := strconv.Itoa(i + 1)
			emit(g.topEig, gauge, v, run, rank)
			if i < len(st.res) {
				emit(g.residual, gauge, st.res[i], run, rank)
			}
		}
		if st.hasTrace {
			emit(g.trace, gauge, st.trace, run)
			emit(g.traceErr, gauge, st.traceErr, run)
			for _, b := range st.blocks {
				emit(g.block, gauge, b.Value, run, b.Name)
			}
		}
		if st.hasESD {
			for i, c := range st.esdCum {
				emit(g.esd, prometheus.UntypedValue, c, run, e.leLabels[i])
			}
		}
		if st.hasSharpness {
			emit(g.ratio, gauge, st.ratio, run)
			emit(g.threshold, gauge, st.threshold, run)
		}
		if st.hasMin {
			emit(g.lmin, gauge, st.lmin, run)
			emit(g.lminRes, gauge, st.lminRes, run)
			emit(g.negRat, gauge, st.negRat, run)
		}
		if st.hasNegMass {
			emit(g.negMass, gauge, st.negMass, run)
		}
		if st.hasPrecond {
			emit(g.precond, gauge, st.precond, run)
		}
		for _, b := range st.mass {
			emit(g.mass, gauge, b.Value, run, b.Name)
		}
		for _, b := range st.blockEig {
			emit(g.blockEig, gauge, b.Value, run, b.Name)
		}
	}
}

// NewRegistry returns a registry holding only the given collectors
// (typically one Exporter), for NewServer.
func NewRegistry(cs ...prometheus.Collector) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: registering a collector: %w", err)
		}
	}
	return reg, nil
}
