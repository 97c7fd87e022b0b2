package main

import (
	"encoding/csv"
	"encoding/json"
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/store"
)

// End to end on a store that `hessmon train` wrote: runs, show and export
// print the stored values, and plot draws every kind.
func TestInspectTrainedStore(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "train.db")
	code, _, errs := inspRun(t, "train", "--data", "synthetic", "--steps", "60", "--every", "20", "--listen", "off",
		"--probe-batch", "64", "--hidden", "16", "--esd-steps", "12", "--top", "3", "--async=false", "--progress", "off",
		"--log-level", "warn", "--db", db, "--run", "e2e")
	if code != 0 {
		t.Fatalf("train: exit %d\n%s", code, errs)
	}
	st, err := store.Open(db, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	sums, err := st.Runs()
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := st.Snapshots("e2e", 0, -1)
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) < 3 {
		t.Fatalf("train stored %d snapshots, want ≥ 3 (steps 20, 40, 60)", len(snaps))
	}
	good := 0
	for _, s := range snaps {
		if !s.Failed() && len(s.Eigenvalues) == 3 && s.Trace != nil && s.ESD != nil {
			good++
		}
	}
	if good == 0 {
		t.Fatalf("no complete snapshot to compare against: %+v", snaps)
	}

	var runs []snapshot.RunSummary
	if err := json.Unmarshal([]byte(inspMust(t, "runs", "--db", db, "--json")), &runs); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sums, runs); diff != "" {
		t.Errorf("runs --json (-store +printed):\n%s", diff)
	}
	if runs[0].Snapshots != len(snaps) || runs[0].LastStep != snaps[len(snaps)-1].Step {
		t.Errorf("runs: %+v for %d snapshots", runs[0], len(snaps))
	}

	_, rows := inspTable(t, strings.SplitN(inspMust(t, "show", "--db", db), "\n", 2)[1]) // the only run
	if len(rows) != len(snaps) {
		t.Fatalf("show: %d rows, want %d", len(rows), len(snaps))
	}
	for i, s := range snaps {
		if rows[i]["STEP"] != strconv.FormatInt(s.Step, 10) {
			t.Errorf("row %d step %q, want %d", i, rows[i]["STEP"], s.Step)
		}
		inspNum(t, "loss", rows[i]["LOSS"], s.Loss)
		for k, l := range s.Eigenvalues {
			inspNum(t, "λ", rows[i]["λ"+strconv.Itoa(k+1)], l)
		}
		if s.Trace != nil {
			v, _, _ := strings.Cut(rows[i]["TRACE±SE"], "±")
			inspNum(t, "trace", v, s.Trace.Value)
		}
	}

	recs, err := csv.NewReader(strings.NewReader(inspMust(t, "export", "--db", db, "--run", "e2e", "--format", "csv"))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	col := map[string]int{}
	for i, h := range recs[0] {
		col[h] = i
	}
	for i, s := range snaps {
		r := recs[i+1]
		same := func(name string, x float64) {
			if g := inspCell(t, r[col[name]]); !inspSame(g, x) {
				t.Errorf("step %d %s = %q, want %v", s.Step, name, r[col[name]], x)
			}
		}
		same("loss", s.Loss)
		same("lr", s.LearningRate)
		for k, l := range s.Eigenvalues {
			same("lambda_"+strconv.Itoa(k+1), l)
			same("residual_"+strconv.Itoa(k+1), s.Residuals[k])
		}
		if s.Trace != nil {
			same("trace", s.Trace.Value)
			same("trace_stderr", s.Trace.StdErr)
		}
		if s.SharpnessThreshold > 0 {
			same("sharpness_ratio", s.SharpnessRatio)
			if want := 2 * (1 + 0.9) / 0.05; math.Abs(s.SharpnessThreshold-want) > 1e-9*want {
				t.Errorf("threshold %v, want (2+2β)/η = %v for train's defaults", s.SharpnessThreshold, want)
			}
		}
	}

	for _, kind := range []string{"eigen", "trace", "esd", "esd-heatmap", "blocks"} {
		out := filepath.Join(dir, kind+".png")
		inspMust(t, "plot", "--db", db, "--kind", kind, "--out", out, "--width", "700", "--height", "450")
		f, err := os.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		if got := img.Bounds().Size(); got != (image.Point{X: 700, Y: 450}) {
			t.Errorf("%s: %v, want 700×450", kind, got)
		}
	}
}
