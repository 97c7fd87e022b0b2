package estimators

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/hessmon/hessmon/hvp"
)

// Group is a set of parameter blocks whose curvature is looked at together,
// such as all attention Q and K projections of a transformer. Its blocks
// need not be adjacent in the parameter vector.
type Group struct {
	Name   string
	Blocks []Block
}

// Ranges returns the group's blocks as hvp ranges, for hvp.NewRestricted.
func (g Group) Ranges() []hvp.Range {
	r := make([]hvp.Range, len(g.Blocks))
	for i, b := range g.Blocks {
		r[i] = hvp.Range{Offset: b.Offset, Len: b.Len}
	}
	return r
}

// Len is the number of coordinates in the group.
func (g Group) Len() int {
	n := 0
	for _, b := range g.Blocks {
		n += b.Len
	}
	return n
}

// GroupRule puts every block whose name matches Pattern into the group
// Name.
type GroupRule struct {
	Name    string
	Pattern *regexp.Regexp
}

// ParseGroupRule parses "name=regexp", the form of a command-line flag,
// e.g. `attn_qk=attn\.(q|k)\.`.
func ParseGroupRule(s string) (GroupRule, error) {
	name, pat, ok := strings.Cut(s, "=")
	if !ok || name == "" || pat == "" {
		return GroupRule{}, fmt.Errorf("estimators: group rule %q: want name=regexp", s)
	}
	re, err := regexp.Compile(pat)
	if err != nil {
		return GroupRule{}, fmt.Errorf("estimators: group rule %q: %w", s, err)
	}
	return GroupRule{Name: name, Pattern: re}, nil
}

// GroupBlocks merges blocks by name: each block joins the group of the
// first rule whose pattern matches its name; a block that matches no rule
// is a group of its own, named as the block. Groups come in the order of
// their first block; a rule that matches nothing makes no group. Without
// rules every block is its own group.
func GroupBlocks(blocks []Block, rules []GroupRule) []Group {
	var out []Group
	at := map[string]int{} // rule name → index in out
	for _, b := range blocks {
		name := ""
		for _, r := range rules {
			if r.Pattern != nil && r.Pattern.MatchString(b.Name) {
				name = r.Name
				break
			}
		}
		if name == "" {
			out = append(out, Group{Name: b.Name, Blocks: []Block{b}})
			continue
		}
		if i, ok := at[name]; ok {
			out[i].Blocks = append(out[i].Blocks, b)
			continue
		}
		at[name] = len(out)
		out = append(out, Group{Name: name, Blocks: []Block{b}})
	}
	return out
}

// BlockEigenResult is λ1 of one diagonal block H_bb (the layer-wise
// sharpness) with its certificate: some eigenvalue of H_bb lies within
// Residual of Value.
type BlockEigenResult struct {
	Name      string
	Dim       int
	Value     float64
	Residual  float64
	HVPs      int // full HVPs of H spent on this block
	Converged bool
}

// BlockEigen computes the top eigenvalue (opt.Order; opt.K is forced to 1)
// of the principal submatrix of op on each group, one TopEigen solve per
// group, each product one full HVP of op. warm maps a group's name to its
// previous state (nil: all cold); the new states come back under the same
// names. A solve that ends at the HVP budget is reported with Converged
// false and its residual; other errors stop the loop.
func BlockEigen(ctx context.Context, op hvp.Operator, groups []Group, opt EigenOptions, warm map[string]*EigenWarm) ([]BlockEigenResult, map[string]*EigenWarm, error) {
	opt.K = 1
	opt.KeepVectors, opt.KeepProducts, opt.KeepBasis = false, false, false
	opt.Start = nil
	out := make([]BlockEigenResult, 0, len(groups))
	next := make(map[string]*EigenWarm, len(groups))
	for _, g := range groups {
		sub, err := hvp.NewRestricted(op, g.Ranges())
		if err != nil {
			return out, next, fmt.Errorf("estimators: block %q: %w", g.Name, err)
		}
		res, w, err := TopEigen(ctx, sub, opt, warm[g.Name])
		if (err != nil && !errors.Is(err, ErrNotConverged)) || len(res.Values) == 0 {
			return out, next, fmt.Errorf("estimators: block %q: %w", g.Name, err)
		}
		next[g.Name] = w
		out = append(out, BlockEigenResult{Name: g.Name, Dim: sub.Dim(), Value: res.Values[0], Residual: res.Residuals[0],
			HVPs: res.HVPs, Converged: err == nil})
	}
	return out, next, nil
}
