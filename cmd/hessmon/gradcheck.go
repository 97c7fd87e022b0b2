package main

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/hessmon/hessmon/trainer"
)

// Tolerances of issue A: the exact HVP must agree with finite differences to
// 1e-6 relative, and be symmetric to 1e-10.
const (
	tolHVP  = 1e-6
	tolGrad = 1e-6
	tolSym  = 1e-10
)

type gradcheckRow struct {
	trainer.CheckResult
	Name string `json:"name"`
	OK   bool   `json:"ok"`
}

func runGradcheck(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "gradcheck", "compare exact gradients and Hessian-vector products (R-operator) of every built-in model family "+
		"(MLP ±BN in eval and train mode, CNN ±BN, ResNet ±BN ±skip) against central differences, and check Hessian symmetry uᵀ(Hv) = vᵀ(Hu). "+
		"Exits 1 when a tolerance is broken.", "hessmon gradcheck --json")
	asJSON := fs.Bool("json", false, "print one JSON object per model")
	trials := fs.Int("trials", 3, "random directions per model")
	seed := fs.Uint64("seed", 1, "seed for models, data and directions")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *trials < 1 {
		return usageErr("--trials must be at least 1")
	}
	cases, err := trainer.StandardChecks(*seed)
	if err != nil {
		return err
	}
	var rows []gradcheckRow
	failed := 0
	for _, c := range cases {
		if err := ctx.Err(); err != nil {
			return err
		}
		r, err := trainer.CheckDerivatives(c.Net, c.Batch, trainer.CrossEntropy{}, c.Mode, *trials, *seed)
		if err != nil {
			return fmt.Errorf("%s: %w", c.Name, err)
		}
		ok := r.HVPRelErr <= tolHVP && r.GradRelErr <= tolGrad && r.SymmetryRelErr <= tolSym
		if !ok {
			failed++
		}
		rows = append(rows, gradcheckRow{CheckResult: r, Name: c.Name, OK: ok})
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		for _, r := range rows {
			if err := enc.Encode(map[string]any{
				"model": r.Name, "description": r.Model, "bn_mode": r.Mode, "params": r.Params,
				"hvp_rel_err": r.HVPRelErr, "grad_rel_err": r.GradRelErr, "symmetry_rel_err": r.SymmetryRelErr, "ok": r.OK,
			}); err != nil {
				return err
			}
		}
	} else {
		tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "MODEL\tPARAMS\tBN MODE\tHVP REL ERR\tGRAD REL ERR\tSYMMETRY\tOK")
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%.2e\t%.2e\t%.2e\t%v\n", r.Name, r.Params, r.Mode, r.HVPRelErr, r.GradRelErr, r.SymmetryRelErr, r.OK)
		}
		tw.Flush()
		fmt.Fprintf(e.stdout, "tolerances: hvp ≤ %.0e, grad ≤ %.0e, symmetry ≤ %.0e\n", tolHVP, tolGrad, tolSym)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d models broke a tolerance", failed, len(rows))
	}
	return nil
}
