package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hessmon/hessmon/monitor/export"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/store"
)

// This file holds the offline inspection commands (runs, show, export) and
// the helpers plot and serve share with them: every one opens the store
// read-only, so it fails fast with the store's "locked" error (naming the
// live HTTP API) while a trainer writes the file.

// storeFlags are the flags naming a store and, optionally, a run in it.
type storeFlags struct {
	db  string
	run string
}

func (f *storeFlags) register(fs *flag.FlagSet, withRun bool) {
	fs.StringVar(&f.db, "db", "hessmon.db", "bbolt store written by 'hessmon train' (opened read-only)")
	if withRun {
		fs.StringVar(&f.run, "run", "", "run id (default: the store's only run); 'hessmon runs' lists them")
	}
}

// openStore opens path read-only. The store's errors already say what is
// wrong in one line: missing, locked by a trainer (with the live API to use
// instead), corrupt, or of another schema version.
func openStore(path string) (*store.Store, error) {
	if path == "" {
		return nil, usageErr("--db must name a store file")
	}
	return store.Open(path, store.Options{ReadOnly: true})
}

// resolveRun returns the summary of run id, or of the only run when id is
// empty (several runs: a usage error naming them).
func resolveRun(st *store.Store, id string) (snapshot.RunSummary, error) {
	sum, err := st.ResolveRun(id)
	if amb := (*store.AmbiguousRunError)(nil); errors.As(err, &amb) {
		return sum, usageErr("%s holds %d runs, pick one with --run: %s", amb.Path, len(amb.IDs), strings.Join(amb.IDs, ", "))
	}
	return sum, err
}

// loadSnapshots reads run's snapshots with from ≤ step ≤ to (to < 0: no
// bound), decoding only the parts in f.
func loadSnapshots(st *store.Store, run string, from, to int64, f store.Fields) ([]snapshot.Snapshot, error) {
	return st.Read(run, store.Query{From: from, To: to, Fields: f})
}

// stepRange validates --from/--to.
func stepRange(from, to int64) error {
	if from < 0 {
		return usageErr("--from %d: want a step ≥ 0", from)
	}
	if to >= 0 && to < from {
		return usageErr("--to %d is before --from %d", to, from)
	}
	return nil
}

// num formats a float for tables: 6 significant digits, "-" when missing.
func num(x float64) string {
	if math.IsNaN(x) {
		return "NaN"
	}
	return strconv.FormatFloat(x, 'g', 6, 64)
}

func optNum(p *float64) string {
	if p == nil {
		return "-"
	}
	return num(*p)
}

// short formats a certificate (residual, stderr): 2 significant digits,
// "n/a" when there is none (e.g. the stderr of a single probe).
func short(x float64) string {
	if math.IsNaN(x) {
		return "n/a"
	}
	return strconv.FormatFloat(x, 'g', 2, 64)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// ---- hessmon runs ----

func runRuns(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "runs", "list the runs of a store, one line each: id, model, optimiser, steps covered, snapshots "+
		"(light and full probes), failed probes, first and last λ1, start time. The store is opened read-only; while a trainer writes it, "+
		"use the trainer's live API instead (curl http://127.0.0.1:9464/api/runs).",
		"hessmon runs --db hessmon.db")
	var sf storeFlags
	sf.register(fs, false)
	asJSON := fs.Bool("json", false, "print a JSON array (the same objects as GET /api/runs)")
	if err := parse(fs, args); err != nil {
		return err
	}
	st, err := openStore(sf.db)
	if err != nil {
		return err
	}
	defer st.Close()
	runs, err := st.Runs()
	if err != nil {
		return err
	}
	if *asJSON {
		if runs == nil {
			runs = []snapshot.RunSummary{}
		}
		return writeJSON(e.stdout, runs)
	}
	if len(runs) == 0 {
		fmt.Fprintf(e.stdout, "%s holds no runs\n", st.Path())
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN\tMODEL\tOPT\tSTEPS\tSNAPSHOTS\tLIGHT\tFULL\tFAILED\tλ1 FIRST\tλ1 LAST\tSTARTED")
	for _, r := range runs {
		steps := "-"
		if r.Snapshots > 0 {
			steps = fmt.Sprintf("%d..%d", r.FirstStep, r.LastStep)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", r.ID, cmp.Or(r.Model, "-"), cmp.Or(string(r.Optimizer), "-"),
			steps, r.Snapshots, r.Light, r.Snapshots-r.Light, r.Failures, optNum(r.FirstLambda1), optNum(r.LastLambda1), fmtTime(r.Started))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range runs {
		if len(r.Resumes) > 0 {
			fmt.Fprintf(e.stdout, "%s %s\n", r.ID, lineage(r.Resumes))
		}
	}
	return nil
}

// lineage says how often a run was resumed, and where.
func lineage(rs []snapshot.Resume) string {
	at := make([]string, len(rs))
	for i, r := range rs {
		at[i] = fmt.Sprintf("after step %d (%s)", r.AtStep, fmtTime(r.Time))
	}
	times := "times"
	if len(rs) == 1 {
		times = "time"
	}
	return fmt.Sprintf("resumed %d %s: %s", len(rs), times, strings.Join(at, ", "))
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// ---- hessmon show ----

func runShow(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "show", "show a run's snapshots as a table (step, probe kind light or full and the reason it was taken, loss, "+
		"λ1..k with residuals ‖Hv−λv‖, λmin, trace ± stderr; a light probe has λ1 and λmin only, '-' for the rest; "+
		"sharpness ratio λ1/threshold, HVPs, seconds, warm or cold start, failure), or with --step one snapshot in full: "+
		"eigenpairs, block traces and an ESD summary (probes, Lanczos steps, kernel σ², spectral moments, quantiles).",
		"hessmon show --db hessmon.db --run mnist-sgd --step 300")
	var sf storeFlags
	sf.register(fs, true)
	step := fs.Int64("step", -1, "show this step in full")
	asJSON := fs.Bool("json", false, "print JSON (NaN as null) instead of text")
	from := fs.Int64("from", 0, "first step of the table")
	to := fs.Int64("to", -1, "last step of the table (-1: the end)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := stepRange(*from, *to); err != nil {
		return err
	}
	st, err := openStore(sf.db)
	if err != nil {
		return err
	}
	defer st.Close()
	sum, err := resolveRun(st, sf.run)
	if err != nil {
		return err
	}
	if *step >= 0 {
		s, err := st.Snapshot(sum.ID, *step)
		if errors.Is(err, store.ErrUnknownStep) {
			return fmt.Errorf("run %q has no snapshot at step %d (%w); its steps: %s", sum.ID, *step, store.ErrUnknownStep, st.KnownSteps(sum.ID))
		}
		if err != nil {
			return err
		}
		s.Eigenvectors = nil
		if *asJSON {
			return writeJSON(e.stdout, struct {
				snapshot.JSONSnapshot
				ESDSummary *export.ESDSummary `json:"esd_summary,omitempty"`
			}{snapshot.NewJSONSnapshot(s), export.SummarizeESD(s.ESD)})
		}
		return printSnapshot(e.stdout, s)
	}
	fields := store.WithTrace // the table's columns
	if *asJSON {
		fields |= store.WithESD
	}
	snaps, err := loadSnapshots(st, sum.ID, *from, *to, fields)
	if err != nil {
		return err
	}
	if *asJSON {
		out := make([]snapshot.JSONSnapshot, len(snaps))
		for i, s := range snaps {
			out[i] = snapshot.NewJSONSnapshot(s)
		}
		return writeJSON(e.stdout, out)
	}
	fmt.Fprintf(e.stdout, "run %s: %s, %s, %d snapshots, %d failed\n", sum.ID, cmp.Or(sum.Model, "model unknown"),
		cmp.Or(string(sum.Optimizer), "optimiser unknown"), sum.Snapshots, sum.Failures)
	if len(sum.Resumes) > 0 {
		fmt.Fprintln(e.stdout, lineage(sum.Resumes))
	}
	return printTable(e.stdout, snaps)
}

// printTable prints one row per snapshot. Cells hold no spaces, so the
// table splits on whitespace.
func printTable(w io.Writer, snaps []snapshot.Snapshot) error {
	k := 0
	hasMin, hasPre := false, false
	for _, s := range snaps {
		k = max(k, len(s.Eigenvalues))
		hasMin = hasMin || s.LambdaMin != nil
		hasPre = hasPre || s.PreconditionedLambda1 != nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := []string{"STEP", "KIND", "REASON", "LOSS"}
	for i := 1; i <= k; i++ {
		head = append(head, fmt.Sprintf("λ%d", i), fmt.Sprintf("RES%d", i))
	}
	if hasMin {
		head = append(head, "λMIN", "RESMIN")
	}
	if hasPre {
		head = append(head, "λ1(P⁻¹H)", "RESP")
	}
	head = append(head, "TRACE±SE", "RATIO", "HVPS", "SECONDS", "START", "FAILURE")
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for _, s := range snaps {
		row := []string{strconv.FormatInt(s.Step, 10), kindOf(&s), cmp.Or(string(s.Reason), "-"), num(s.Loss)}
		for i := range k {
			l, r := "-", "-"
			if i < len(s.Eigenvalues) {
				l = num(s.Eigenvalues[i])
			}
			if i < len(s.Residuals) {
				r = short(s.Residuals[i])
			}
			row = append(row, l, r)
		}
		pair := func(p *snapshot.Eigenpair) []string {
			if p == nil {
				return []string{"-", "-"}
			}
			return []string{num(p.Value), short(p.Residual)}
		}
		if hasMin {
			row = append(row, pair(s.LambdaMin)...)
		}
		if hasPre {
			row = append(row, pair(s.PreconditionedLambda1)...)
		}
		tr := "-"
		if s.Trace != nil {
			tr = num(s.Trace.Value) + "±" + short(s.Trace.StdErr)
		}
		ratio := "-"
		if s.SharpnessThreshold > 0 {
			ratio = num(s.SharpnessRatio)
		}
		start := "cold"
		if s.Warm {
			start = "warm"
		}
		row = append(row, tr, ratio, strconv.Itoa(s.HVPs), strconv.FormatFloat(s.Seconds, 'f', 2, 64), start, cmp.Or(string(s.Failure), "-"))
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

// kindOf names s's probe kind; a snapshot without one (an older store) is
// a full probe.
func kindOf(s *snapshot.Snapshot) string {
	if s.IsLight() {
		return string(snapshot.KindLight)
	}
	return string(snapshot.KindFull)
}

// probeLine describes how s was taken: kind, reason, cost, precision.
func probeLine(s *snapshot.Snapshot) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s probe", kindOf(s))
	if s.Reason != "" {
		fmt.Fprintf(&b, " (%s)", s.Reason)
	}
	start := "cold start"
	if s.Warm {
		start = "warm start"
	}
	fmt.Fprintf(&b, ": %d HVPs, %.3f s, %s, %s HVPs", s.HVPs, s.Seconds, start, cmp.Or(string(s.Precision), string(snapshot.Float64)))
	if s.PeakBytes > 0 {
		fmt.Fprintf(&b, ", peak %s", fmtBytes(s.PeakBytes))
	}
	if s.IsLight() {
		b.WriteString("; λ1 and λmin only, the other estimates come from full probes")
	}
	return b.String()
}

// fmtBytes formats n bytes in binary units.
func fmtBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// printSnapshot prints one snapshot in full.
func printSnapshot(w io.Writer, s snapshot.Snapshot) error {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("run %s, step %d, %s\n", s.Run, s.Step, fmtTime(s.Time))
	p("loss %s, learning rate %s, optimiser %s", num(s.Loss), num(s.LearningRate), cmp.Or(string(s.Optimizer), "unknown"))
	if s.Beta1 != 0 {
		p(" (β1/momentum %s)", num(s.Beta1))
	}
	p("\n")
	p("%s\n", probeLine(&s))
	if s.Failed() {
		p("FAILED: %s", s.Failure)
		if s.Detail != "" {
			p(": %s", s.Detail)
		}
		p("\n")
	}
	if s.SharpnessThreshold > 0 {
		which := "λ1"
		if s.Optimizer.Adaptive() && s.PreconditionedLambda1 != nil {
			which = "λ1(P⁻¹H)"
		}
		p("sharpness: %s/threshold = %s, threshold %s\n", which, num(s.SharpnessRatio), num(s.SharpnessThreshold))
	}
	if pr := s.PreconditionedLambda1; pr != nil {
		p("preconditioned sharpness λ1(P⁻¹H) %s (residual %s), the level Adam's threshold refers to\n", num(pr.Value), short(pr.Residual))
	}
	if len(s.Eigenvalues) > 0 {
		p("top eigenvalues (residual ‖Hv−λv‖):\n")
		for i, l := range s.Eigenvalues {
			r := "-"
			if i < len(s.Residuals) {
				r = short(s.Residuals[i])
			}
			p("  λ%-2d %14s   residual %s\n", i+1, num(l), r)
		}
	}
	if m := s.LambdaMin; m != nil {
		p("  λmin %14s   residual %s", num(m.Value), short(m.Residual))
		if r, ok := s.NegativeCurvatureRatio(); ok {
			p("   |λmin|/λ1 = %s", num(r))
		}
		p("\n")
	}
	if err := printBlockValues(w, "top eigenvector mass per block ‖v1[b]‖²:", s.BlockMass, false); err != nil {
		return err
	}
	if err := printBlockValues(w, "block λ1 (layer-wise sharpness, residual):", s.BlockLambda1, true); err != nil {
		return err
	}
	if t := s.Trace; t != nil {
		p("trace: %s ± %s (%s, %d probes)\n", num(t.Value), short(t.StdErr), cmp.Or(t.Method, "method unknown"), t.Probes)
		if len(t.Blocks) > 0 {
			p("block traces:\n")
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			for _, b := range t.Blocks {
				fmt.Fprintf(tw, "  %s\t%s\t± %s\n", b.Name, num(b.Value), short(b.StdErr))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
	}
	if es := export.SummarizeESD(s.ESD); es != nil {
		p("spectral density: %d probe(s) × %d Lanczos steps, kernel σ² %s\n", es.Probes, es.Steps, num(float64(es.Sigma2)))
		p("  tr(H)/n %s ± %s, tr(H²)/n %s ± %s\n", num(float64(es.Mean)), short(float64(es.MeanStdErr)),
			num(float64(es.Moment2)), short(float64(es.Moment2Err)))
		p("  Ritz values %s … %s, negative mass (below −0.1%% of max |λ|) %s\n", num(float64(es.MinNode)), num(float64(es.MaxNode)), num(float64(es.NegativeMass)))
		if len(es.Quantiles) > 0 {
			p("  quantiles:")
			for _, q := range es.Quantiles {
				p("  %g%% %s", 100*q.P, num(float64(q.Value)))
			}
			p("\n")
		}
	}
	return nil
}

// printBlockValues prints a per-block section, if any.
func printBlockValues(w io.Writer, title string, bs []snapshot.BlockValue, residuals bool) error {
	if len(bs) == 0 {
		return nil
	}
	fmt.Fprintln(w, title)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, b := range bs {
		if residuals {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", b.Name, num(b.Value), short(b.Residual))
		} else {
			fmt.Fprintf(tw, "  %s\t%s\n", b.Name, num(b.Value))
		}
	}
	return tw.Flush()
}

// ---- hessmon export ----

func runExport(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "export", "export a run's snapshots as tidy data for pandas, R or a spreadsheet.\n\n"+
		"  csv:   one row per snapshot with columns step, time, loss, lr, optimizer, sharpness_threshold,\n"+
		"         sharpness_ratio, lambda_1..lambda_k, residual_1..residual_k, lambda_min, residual_min,\n"+
		"         preconditioned_lambda1, preconditioned_residual, trace, trace_stderr, trace_probes,\n"+
		"         trace_method, hvps, seconds, warm, failure, failure_detail, kind (light or full), reason,\n"+
		"         precision, peak_bytes; a light probe's row has empty full-only cells. With --out F.csv two long-format\n"+
		"         files go next to it: F.esd.csv (step, probe, node, weight: the SLQ quadrature) and\n"+
		"         F.blocks.csv (step, block, value, stderr: per-layer traces), and when the run has them F.mass.csv\n"+
		"         (the top eigenvector's mass per block) and F.block-lambda1.csv (layer-wise λ1 with residuals).\n"+
		"         Missing or NaN values are empty cells.\n"+
		"  json:  one array of snapshots (ESD and block traces included), NaN as null.\n"+
		"  jsonl: one snapshot per line (pandas.read_json(F, lines=True)).",
		"hessmon export --db hessmon.db --run mnist-sgd --format csv --out run.csv   # also run.esd.csv, run.blocks.csv")
	var sf storeFlags
	sf.register(fs, true)
	format := fs.String("format", "csv", "csv, json or jsonl")
	out := fs.String("out", "", "output file (default: standard output; the CSV side files need --out)")
	from := fs.Int64("from", 0, "first step to export")
	to := fs.Int64("to", -1, "last step to export (-1: the end)")
	vectors := fs.Bool("vectors", false, "json/jsonl: include the eigenvectors (large)")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch *format {
	case "csv", "json", "jsonl":
	default:
		return usageErr("--format %q: want csv, json or jsonl", *format)
	}
	if err := stepRange(*from, *to); err != nil {
		return err
	}
	st, err := openStore(sf.db)
	if err != nil {
		return err
	}
	defer st.Close()
	sum, err := resolveRun(st, sf.run)
	if err != nil {
		return err
	}
	fields := store.WithTrace | store.WithESD
	if *vectors && *format != "csv" {
		fields |= store.WithVectors
	}
	snaps, err := loadSnapshots(st, sum.ID, *from, *to, fields)
	if err != nil {
		return err
	}

	files, err := export.WriteFiles(e.stdout, *format, *out, snaps)
	if err != nil {
		return err
	}
	if *format == "csv" && *out == "" && (export.HasESD(snaps) || export.HasBlocks(snaps)) {
		fmt.Fprintln(e.stderr, "hessmon export: the ESD and block-trace CSVs are written only with --out")
	}
	if len(files) > 0 {
		fmt.Fprintf(e.stderr, "hessmon export: run %s, %d snapshots → %s\n", sum.ID, len(snaps), strings.Join(files, ", "))
	}
	return nil
}
