package monitor

// Budget is one probe's allowance of Hessian-vector products, spent
// estimate by estimate. A reservation holds products back for an estimate
// that runs later (the ESD's Lanczos steps), so that an earlier one cannot
// take them; Left is what the next estimate may use.
type Budget struct {
	total, spent, reserved int
}

// NewBudget returns a budget of total products.
func NewBudget(total int) *Budget { return &Budget{total: total} }

// Reserve holds n products back for a later estimate.
func (b *Budget) Reserve(n int) { b.reserved += n }

// Unreserve releases n reserved products (their estimate ran, and Spend
// counts what it took).
func (b *Budget) Unreserve(n int) { b.reserved -= n }

// Spend counts n products as used.
func (b *Budget) Spend(n int) { b.spent += n }

// Left is what is neither spent nor reserved (negative when an estimate
// overran).
func (b *Budget) Left() int { return b.total - b.spent - b.reserved }

// Spent is the products used so far.
func (b *Budget) Spent() int { return b.spent }

// EigenReserve is what the top-k eigen solve leaves of the budget for the
// estimates after it (λ1(P⁻¹H), the block λ1s, the trace's first probes).
const EigenReserve = 10

// ESDCost is the HVPs of cfg's spectral density on an operator of dimension
// dim (0 with NoESD): its Lanczos steps, reserved before anything runs.
func ESDCost(cfg Config, dim int) int {
	cfg = cfg.withDefaults()
	if cfg.NoESD {
		return 0
	}
	return cfg.ESDProbes * min(cfg.ESDSteps, dim)
}

// BudgetFor returns the MaxHVPs under which each estimate of cfg gets its
// own cap rather than a share: EigenMaxHVPs for the eigen solve,
// TraceMaxHVPs for the trace, and the ESD its steps (hessmon analyze's
// budget, where every estimator gets --max-hvps).
func BudgetFor(cfg Config, dim int) int {
	c := cfg.withDefaults()
	n := ESDCost(c, dim) + EigenReserve
	if !c.NoEigen {
		n += c.EigenMaxHVPs
	}
	if !c.NoTrace {
		n += c.TraceMaxHVPs
	}
	return n
}
