package export

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"strconv"
	"testing"

	hmtest "github.com/hessmon/hessmon/internal/testutil"
	"github.com/hessmon/hessmon/snapshot"
)

// mixedRun is an older-store full probe (no kind, no precision), a light
// probe and a triggered float32 full probe.
func mixedRun() []snapshot.Snapshot {
	old := hmtest.Snapshot("r", 0, 3)
	light := hmtest.LightSnapshot("r", 10)
	jump := hmtest.Snapshot("r", 20, 3)
	jump.Kind, jump.Reason, jump.Precision, jump.PeakBytes = snapshot.KindFull, snapshot.ReasonJump, snapshot.Float32, 123456
	return []snapshot.Snapshot{old, light, jump}
}

func TestCSVLightAndFull(t *testing.T) {
	snaps := mixedRun()
	var buf bytes.Buffer
	if err := WriteCSV(&buf, snaps); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	head := rows[0]
	col := map[string]int{}
	for i, h := range head {
		col[h] = i
	}
	for _, c := range []string{"kind", "reason", "precision", "peak_bytes"} {
		if _, ok := col[c]; !ok {
			t.Fatalf("no %s column in %q", c, head)
		}
	}
	if len(rows) != 1+len(snaps) {
		t.Fatalf("%d rows", len(rows))
	}
	want := []map[string]string{
		{"kind": "full", "reason": "", "precision": "float64", "peak_bytes": "", "lambda_3": Cell(snaps[0].Eigenvalues[2]),
			"trace": Cell(snaps[0].Trace.Value), "lambda_min": ""},
		{"kind": "light", "reason": "scheduled", "precision": "float64", "peak_bytes": strconv.FormatInt(snaps[1].PeakBytes, 10),
			"lambda_1": Cell(snaps[1].Eigenvalues[0]), "residual_1": Cell(snaps[1].Residuals[0]),
			"lambda_min": Cell(snaps[1].LambdaMin.Value), "residual_min": Cell(snaps[1].LambdaMin.Residual),
			"lambda_2": "", "lambda_3": "", "residual_2": "", "trace": "", "trace_stderr": "", "trace_method": ""},
		{"kind": "full", "reason": "jump", "precision": "float32", "peak_bytes": "123456", "lambda_2": Cell(snaps[2].Eigenvalues[1])},
	}
	for i, w := range want {
		for c, v := range w {
			if got := rows[1+i][col[c]]; got != v {
				t.Errorf("row %d (step %d) %s = %q, want %q", i, snaps[i].Step, c, got, v)
			}
		}
	}
}

func TestJSONLLightAndFull(t *testing.T) {
	snaps := mixedRun()
	var buf bytes.Buffer
	if err := WriteJSONL(&buf, snaps); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(&buf)
	var got []map[string]any
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		got = append(got, m)
	}
	if len(got) != len(snaps) {
		t.Fatalf("%d lines", len(got))
	}
	for i, w := range []map[string]any{
		{"kind": "full", "precision": "float64"},
		{"kind": "light", "reason": "scheduled", "precision": "float64", "peak_bytes": float64(snaps[1].PeakBytes)},
		{"kind": "full", "reason": "jump", "precision": "float32", "peak_bytes": 123456.0},
	} {
		for k, v := range w {
			if got[i][k] != v {
				t.Errorf("line %d %s = %v, want %v", i, k, got[i][k], v)
			}
		}
	}
	if _, ok := got[1]["trace"]; ok {
		t.Error("light probe exported with a trace")
	}
	if ev := got[1]["eigenvalues"].([]any); len(ev) != 1 || ev[0] != snaps[1].Eigenvalues[0] {
		t.Errorf("light eigenvalues %v", ev)
	}
}
