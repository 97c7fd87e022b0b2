// Package export turns stored snapshots into tidy data for pandas, R or a
// spreadsheet (CSV in wide and long form, JSON, JSON lines) and condenses a
// spectral density into the numbers a person reads (moments, extreme Ritz
// values, negative mass, quantiles). It is what `hessmon export` and
// `hessmon show` print, as a library, so other tools print the same.
package export

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/hessmon/hessmon/snapshot"
)

// Tidy fills in what an empty field means, so that every exported record
// says its probe kind and precision: a snapshot of an older store, written
// before light probes, has no kind and was a full probe, and one without a
// precision ran in float64.
func Tidy(s snapshot.Snapshot) snapshot.Snapshot {
	if s.Kind == "" {
		s.Kind = snapshot.KindFull
	}
	if s.Precision == "" {
		s.Precision = snapshot.Float64
	}
	return s
}

// WriteJSON writes snaps as one indented JSON array, NaN and Inf as null,
// each made Tidy.
func WriteJSON(w io.Writer, snaps []snapshot.Snapshot) error {
	js := make([]snapshot.JSONSnapshot, len(snaps))
	for i, s := range snaps {
		js[i] = snapshot.NewJSONSnapshot(Tidy(s))
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(js)
}

// WriteJSONL writes one snapshot per line (pandas.read_json(f, lines=True)),
// each made Tidy.
func WriteJSONL(w io.Writer, snaps []snapshot.Snapshot) error {
	enc := json.NewEncoder(w)
	for _, s := range snaps {
		if err := enc.Encode(snapshot.NewJSONSnapshot(Tidy(s))); err != nil {
			return err
		}
	}
	return nil
}

// HasESD reports whether any snapshot carries a spectral density.
func HasESD(snaps []snapshot.Snapshot) bool {
	return slices.ContainsFunc(snaps, func(s snapshot.Snapshot) bool { return s.ESD != nil && len(s.ESD.Nodes) > 0 })
}

// WriteBlockValuesCSV writes a per-block quantity (the top eigenvector's
// mass, block λ1) in long format: step, block, value, residual.
func WriteBlockValuesCSV(w io.Writer, snaps []snapshot.Snapshot, get func(*snapshot.Snapshot) []snapshot.BlockValue) error {
	cw := csv.NewWriter(w)
	if err := cw.Write([]string{"step", "block", "value", "residual"}); err != nil {
		return err
	}
	for i := range snaps {
		step := strconv.FormatInt(snaps[i].Step, 10)
		for _, b := range get(&snaps[i]) {
			if err := cw.Write([]string{step, b.Name, Cell(b.Value), Cell(b.Residual)}); err != nil {
				return err
			}
		}
	}
	cw.Flush()
	return cw.Error()
}

// HasBlocks reports whether any snapshot carries per-block traces.
func HasBlocks(snaps []snapshot.Snapshot) bool {
	return slices.ContainsFunc(snaps, func(s snapshot.Snapshot) bool { return s.Trace != nil && len(s.Trace.Blocks) > 0 })
}

// Cell formats a float for CSV: shortest exact form, NaN as an empty cell,
// ±Inf as inf/-inf (what pandas and R read back).
func Cell(x float64) string {
	switch {
	case math.IsNaN(x):
		return ""
	case math.IsInf(x, 1):
		return "inf"
	case math.IsInf(x, -1):
		return "-inf"
	}
	return strconv.FormatFloat(x, 'g', -1, 64)
}

// Header is the snapshot CSV's header for k eigenvalues. A light probe's
// row has λ1, λmin and their residuals, and empty cells for the full-only
// estimates; kind, reason, precision and peak_bytes come last so that
// columns read by position before light probes keep their place.
func Header(k int) []string {
	h := []string{"step", "time", "loss", "lr", "optimizer", "sharpness_threshold", "sharpness_ratio"}
	for i := 1; i <= k; i++ {
		h = append(h, fmt.Sprintf("lambda_%d", i))
	}
	for i := 1; i <= k; i++ {
		h = append(h, fmt.Sprintf("residual_%d", i))
	}
	return append(h, "lambda_min", "residual_min", "preconditioned_lambda1", "preconditioned_residual",
		"trace", "trace_stderr", "trace_probes", "trace_method", "hvps", "seconds", "warm", "failure", "failure_detail",
		"kind", "reason", "precision", "peak_bytes")
}

// WriteCSV writes one row per snapshot (the columns of Header for the
// largest k among snaps), each made Tidy; missing and NaN values are empty
// cells, and so is a peak_bytes of 0 (not measured).
func WriteCSV(w io.Writer, snaps []snapshot.Snapshot) error {
	k := 0
	for _, s := range snaps {
		k = max(k, len(s.Eigenvalues))
	}
	cw := csv.NewWriter(w)
	if err := cw.Write(Header(k)); err != nil {
		return err
	}
	for _, s := range snaps {
		s = Tidy(s)
		thr, ratio := "", ""
		if s.SharpnessThreshold > 0 { // 0: no threshold known (e.g. no learning rate)
			thr, ratio = Cell(s.SharpnessThreshold), Cell(s.SharpnessRatio)
		}
		t := ""
		if !s.Time.IsZero() {
			t = s.Time.UTC().Format(time.RFC3339Nano)
		}
		row := []string{strconv.FormatInt(s.Step, 10), t, Cell(s.Loss), Cell(s.LearningRate), string(s.Optimizer), thr, ratio}
		for i := range k {
			v := ""
			if i < len(s.Eigenvalues) {
				v = Cell(s.Eigenvalues[i])
			}
			row = append(row, v)
		}
		for i := range k {
			v := ""
			if i < len(s.Residuals) {
				v = Cell(s.Residuals[i])
			}
			row = append(row, v)
		}
		for _, p := range []*snapshot.Eigenpair{s.LambdaMin, s.PreconditionedLambda1} {
			if p != nil {
				row = append(row, Cell(p.Value), Cell(p.Residual))
			} else {
				row = append(row, "", "")
			}
		}
		if tr := s.Trace; tr != nil {
			row = append(row, Cell(tr.Value), Cell(tr.StdErr), strconv.Itoa(tr.Probes), tr.Method)
		} else {
			row = append(row, "", "", "", "")
		}
		row = append(row, strconv.Itoa(s.HVPs), Cell(s.Seconds), strconv.FormatBool(s.Warm), string(s.Failure), s.Detail)
		peak := ""
		if s.PeakBytes > 0 {
			peak = strconv.FormatInt(s.PeakBytes, 10)
		}
		row = append(row, string(s.Kind), string(s.Reason), string(s.Precision), peak)
		if err := cw.Write(row); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// WriteESDCSV writes the quadrature in long format: one row per node
// (step, probe, node, weight).
func WriteESDCSV(w io.Writer, snaps []snapshot.Snapshot) error {
	cw := csv.NewWriter(w)
	if err := cw.Write([]string{"step", "probe", "node", "weight"}); err != nil {
		return err
	}
	for _, s := range snaps {
		e := s.ESD
		if e == nil {
			continue
		}
		step := strconv.FormatInt(s.Step, 10)
		for i, x := range e.Nodes {
			probe := 0
			if e.Steps > 0 {
				probe = i / e.Steps
			}
			wt := math.NaN()
			if i < len(e.Weights) {
				wt = e.Weights[i]
			}
			if err := cw.Write([]string{step, strconv.Itoa(probe), Cell(x), Cell(wt)}); err != nil {
				return err
			}
		}
	}
	cw.Flush()
	return cw.Error()
}

// WriteBlocksCSV writes the per-layer traces in long format (step, block,
// value, stderr).
func WriteBlocksCSV(w io.Writer, snaps []snapshot.Snapshot) error {
	cw := csv.NewWriter(w)
	if err := cw.Write([]string{"step", "block", "value", "stderr"}); err != nil {
		return err
	}
	for _, s := range snaps {
		if s.Trace == nil {
			continue
		}
		step := strconv.FormatInt(s.Step, 10)
		for _, b := range s.Trace.Blocks {
			if err := cw.Write([]string{step, b.Name, Cell(b.Value), Cell(b.StdErr)}); err != nil {
				return err
			}
		}
	}
	cw.Flush()
	return cw.Error()
}
