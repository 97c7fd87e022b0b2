package monitor

import (
	"errors"
	"fmt"
	"time"

	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/internal/probeknobs"
)

// Config says what a probe computes and when. The zero value is usable:
// every zero number means its documented default, and estimates are
// switched off by the No* fields, never by a sentinel number. Negative
// numbers are rejected by New.
type Config struct {
	// Every is the probe interval in steps (default 50). A probe is due at
	// every multiple of Every, step 0 excluded.
	Every int64

	// NoEigen switches the top-k eigen solve off.
	NoEigen bool
	// TopK eigenvalues per probe (default 5), in Order.
	TopK  int
	Order estimators.Order
	// EigenTol is the eigen residual tolerance relative to ‖H‖ (default 1e-4).
	EigenTol float64
	// EigenMaxHVPs caps the eigen solve's products (default: what MaxHVPs
	// leaves after the ESD's reserve).
	EigenMaxHVPs int
	// EigenWarmMaxHVPs, when > 0, caps a warm eigen start: one that needs
	// more has lost track and the solve restarts cold (the top-1 tracking
	// mode uses 10).
	EigenWarmMaxHVPs int
	// Power uses PyHessian's power iteration instead of Krylov–Schur, for
	// comparisons; it neither warm-starts nor certifies to EigenTol.
	Power bool
	// ColdEvery forces a cold eigen solve every so many probes (default
	// 10), so that an eigenvalue that rises into the top k along a
	// direction the warm start does not see is not missed. NoColdRestarts
	// turns that off.
	ColdEvery      int
	NoColdRestarts bool
	// LambdaMinTol, when > 0, refines λmin (reported at every probe from
	// the eigen solve's Krylov space, with its residual) to this residual
	// relative to ‖H‖, at the cost of extra HVPs; 0 reports it as found.
	LambdaMinTol float64
	// separateESD and warmKrylovSchur are round 1's estimator
	// configuration, for hessmon bench probe only (see WithKnobs).
	separateESD, warmKrylovSchur bool
	probeNice                    int

	// BlockEigenEvery, when > 0, adds λ1 of each diagonal Hessian block
	// (layer-wise sharpness) every so many probes; each costs a small
	// eigen solve of full HVPs. BlockGroups merge blocks by name first
	// (e.g. all attention projections), unmatched blocks stay alone.
	BlockEigenEvery int
	BlockGroups     []estimators.GroupRule

	// NoTrace switches the trace (and the per-block traces) off.
	NoTrace bool
	// TraceRelTol is the target relative standard error (default 0.05).
	TraceRelTol float64
	// TraceMaxHVPs caps the trace's products in one probe (default 40).
	// Late in training the trace shrinks while its per-probe variance, set
	// by the spectrum's bulk, does not, and 5% would take 100+ products; a
	// capped trace reports its larger standard error instead, and the
	// monitor's cost stays flat. TraceUncapped lets only MaxHVPs cap it.
	TraceMaxHVPs  int
	TraceUncapped bool

	// NoESD switches the spectral density off.
	NoESD bool
	// ESDProbes × ESDSteps Lanczos steps for the spectral density
	// (defaults 1 × 30).
	ESDProbes, ESDSteps int

	// MaxHVPs caps the Hessian-vector products of one probe (default 400);
	// a probe that needs more is recorded as failure "budget" with the
	// estimates it reached.
	MaxHVPs int
	// MaxProbeBytes caps a probe's predicted peak memory in n-vectors
	// (8·n bytes each; see the memory model in analyze.go; the operator's
	// own memory, a float32 model copy, is not counted): a full probe of
	//	warm + ESD basis (when shared) + eigen + max(trace, …)
	// n-vectors over it first runs its ESD apart from the eigen solve,
	// then with fewer Lanczos steps (down to 10), then as a light probe,
	// and says so in the snapshot's Detail and once in the log, rather
	// than die of OOM. Default: the Go memory limit (GOMEMLIMIT) when
	// set, else half the machine's memory.
	MaxProbeBytes int64
	// MaxDuration caps one probe's wall time (default 2 minutes); past it
	// the probe is cancelled and recorded as failure "timeout".
	MaxDuration time.Duration

	// Async probes the frozen operator in a goroutine while training
	// continues. At most one light and one full probe are in flight; a due
	// step whose slot is busy gets the other kind, or is skipped
	// (Stats.Skipped). The probe goroutine runs at normal priority: the
	// budget, not the nice value, keeps its cost to training.
	Async bool

	// Budget is the share of training time the probes may cost training
	// (default 0.05). The scheduler measures what each kind of probe
	// costs: a synchronous probe its time, an asynchronous one the time it
	// takes from the training loop (building its operator, and the steps'
	// slowdown against probe-free steps while it runs). At each due step of
	// an asynchronous run it takes a full probe when the measured cost of
	// one fits, else a light probe when that fits, else none. Synchronous
	// runs keep a fixed schedule; the budget only reports there.
	Budget float64
	// FullEvery, when > 0, is a fixed schedule: a full probe at every
	// FullEvery-th due step (the first included), light probes at the
	// others, whatever the budget. Synchronous runs default to 1: every
	// due step full, as before light probes existed.
	FullEvery int
	// LightOnly takes light probes only (no triggers).
	LightOnly bool
	// NoTriggers stops light probes from bringing full probes forward
	// (see trigger.go for the rules: sharpness threshold, a 25% jump of
	// λ1, negative curvature, a failure).
	NoTriggers bool
	// LightTol is the light probe's residual tolerance relative to λ1
	// (default 1e-3).
	LightTol float64

	// WarmEvery and WarmInterval bound how often the warm state goes to the
	// WarmStore: after at least WarmEvery probes (default 10) or
	// WarmInterval of wall time (default 1 minute), whichever comes first,
	// after the first good probe, and always at Close. The warm state holds
	// k+ eigenvectors and trace probes, several times the model's size, so
	// writing it at every probe would dominate the store; a resumed run
	// starts from the last written state and pays at most one colder probe.
	WarmEvery    int
	WarmInterval time.Duration

	// KeepVectors stores the eigenvectors in each snapshot (large).
	KeepVectors bool
	// Seed seeds every random probe vector.
	Seed uint64
}

// withDefaults fills the zero numbers with their defaults.
func (c Config) withDefaults() Config {
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	if c.Every == 0 {
		c.Every = 50
	}
	def(&c.TopK, 5)
	if c.EigenTol == 0 {
		c.EigenTol = 1e-4
	}
	def(&c.ColdEvery, 10)
	if c.TraceRelTol == 0 {
		c.TraceRelTol = 0.05
	}
	def(&c.TraceMaxHVPs, 40)
	def(&c.ESDProbes, 1)
	def(&c.ESDSteps, 30)
	def(&c.MaxHVPs, 400)
	if c.MaxDuration == 0 {
		c.MaxDuration = 2 * time.Minute
	}
	def(&c.WarmEvery, 10)
	if c.Budget == 0 {
		c.Budget = 0.05
	}
	if c.LightTol == 0 {
		c.LightTol = defaultLightTol
	}
	if c.WarmInterval == 0 {
		c.WarmInterval = time.Minute
	}
	return c
}

// validate rejects what no default can mean.
func (c Config) validate() error {
	var errs []error
	neg := func(name string, bad bool) {
		if bad {
			errs = append(errs, fmt.Errorf("%s must not be negative", name))
		}
	}
	neg("Every", c.Every < 0)
	neg("TopK", c.TopK < 0)
	neg("EigenTol", c.EigenTol < 0)
	neg("EigenMaxHVPs", c.EigenMaxHVPs < 0)
	neg("EigenWarmMaxHVPs", c.EigenWarmMaxHVPs < 0)
	neg("ColdEvery", c.ColdEvery < 0)
	neg("LambdaMinTol", c.LambdaMinTol < 0)
	neg("BlockEigenEvery", c.BlockEigenEvery < 0)
	neg("TraceRelTol", c.TraceRelTol < 0)
	neg("TraceMaxHVPs", c.TraceMaxHVPs < 0)
	neg("ESDProbes", c.ESDProbes < 0)
	neg("ESDSteps", c.ESDSteps < 0)
	neg("MaxHVPs", c.MaxHVPs < 0)
	neg("MaxDuration", c.MaxDuration < 0)
	neg("MaxProbeBytes", c.MaxProbeBytes < 0)
	neg("WarmEvery", c.WarmEvery < 0)
	neg("WarmInterval", c.WarmInterval < 0)
	neg("FullEvery", c.FullEvery < 0)
	neg("LightTol", c.LightTol < 0)
	if c.Budget < 0 || c.Budget >= 1 {
		errs = append(errs, fmt.Errorf("Budget %g must be in [0, 1)", c.Budget))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("monitor: bad Config: %w", err)
	}
	return nil
}

// Tracking returns c as the top-1 tracking preset for frequent probes: λ1
// alone to a relative residual of 1e-3, warm from the previous probe in a
// few HVPs, restarting cold when the warm start needs more than 10; no
// trace, no ESD. It is `hessmon train --track`.
func (c Config) Tracking() Config {
	c.NoEigen, c.TopK, c.EigenTol, c.EigenWarmMaxHVPs = false, 1, 1e-3, 10
	c.NoTrace, c.NoESD = true, true
	return c
}

// WithKnobs returns c with hessmon's benchmark-only estimator knobs set;
// the knobs' package is internal, so only hessmon's own benchmarks can.
func (c Config) WithKnobs(k probeknobs.Knobs) Config {
	c.separateESD, c.warmKrylovSchur, c.probeNice = k.SeparateESD, k.WarmKrylovSchur, k.ProbeNice
	return c
}
