package main

import (
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	hmtest "github.com/hessmon/hessmon/internal/testutil"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/store"
)

// lightFixture writes run "mix": full probes at steps 0 (older store: no
// kind, no reason) and 30 (brought forward by a jump), light ones at 10, 20
// and 40 (the last in float32).
func lightFixture(t *testing.T) (string, []snapshot.Snapshot) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "light.db")
	st, err := store.Open(path, store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.PutRun(snapshot.Run{ID: "mix", Model: "mlp", Optimizer: "sgd", Started: inspT0}); err != nil {
		t.Fatal(err)
	}
	full0 := hmtest.Snapshot("mix", 0, 3)
	full30 := hmtest.Snapshot("mix", 30, 3)
	full30.Kind, full30.Reason = snapshot.KindFull, snapshot.ReasonJump
	l40 := hmtest.LightSnapshot("mix", 40)
	l40.Precision = snapshot.Float32
	snaps := []snapshot.Snapshot{full0, hmtest.LightSnapshot("mix", 10), hmtest.LightSnapshot("mix", 20), full30, l40}
	for _, s := range snaps {
		if err := st.PutSnapshot(s); err != nil {
			t.Fatal(err)
		}
	}
	return path, snaps
}

func TestShowLightProbes(t *testing.T) {
	path, snaps := lightFixture(t)
	_, rows := inspTable(t, strings.SplitN(inspMust(t, "show", "--db", path), "\n", 2)[1])
	if len(rows) != len(snaps) {
		t.Fatalf("%d rows, want %d", len(rows), len(snaps))
	}
	for i, s := range snaps {
		r := rows[i]
		kind, reason := "full", orDash(string(s.Reason))
		if s.IsLight() {
			kind = "light"
		}
		if r["KIND"] != kind || r["REASON"] != reason {
			t.Errorf("step %d: KIND %q REASON %q, want %q %q", s.Step, r["KIND"], r["REASON"], kind, reason)
		}
		inspNum(t, "λ1", r["λ1"], s.Eigenvalues[0])
		if !s.IsLight() {
			inspNum(t, "λ3", r["λ3"], s.Eigenvalues[2])
			inspNum(t, "trace", strings.Split(r["TRACE±SE"], "±")[0], s.Trace.Value)
			if r["λMIN"] != "-" {
				t.Errorf("full step %d λMIN %q, want -", s.Step, r["λMIN"])
			}
			continue
		}
		inspNum(t, "λmin", r["λMIN"], s.LambdaMin.Value)
		for _, c := range []string{"λ2", "RES2", "λ3", "RES3", "TRACE±SE"} {
			if r[c] != "-" {
				t.Errorf("light step %d: %s = %q, want -", s.Step, c, r[c])
			}
		}
	}

	text := inspMust(t, "show", "--db", path, "--step", "40")
	if !strings.Contains(text, "light probe (scheduled): 6 HVPs") || !strings.Contains(text, "float32 HVPs") ||
		!strings.Contains(text, "λ1 and λmin only") || strings.Contains(text, "trace:") {
		t.Errorf("show --step 40:\n%s", text)
	}
	if text := inspMust(t, "show", "--db", path, "--step", "0"); !strings.Contains(text, "full probe: ") || !strings.Contains(text, "float64 HVPs") {
		t.Errorf("show --step 0 (older store):\n%s", text)
	}
	var js []struct {
		Step   int64  `json:"step"`
		Kind   string `json:"kind"`
		Reason string `json:"reason"`
	}
	if err := json.Unmarshal([]byte(inspMust(t, "show", "--db", path, "--json")), &js); err != nil {
		t.Fatal(err)
	}
	for i, s := range snaps {
		if js[i].Kind != string(s.Kind) || js[i].Reason != string(s.Reason) {
			t.Errorf("show --json step %d: kind %q reason %q, want %q %q", s.Step, js[i].Kind, js[i].Reason, s.Kind, s.Reason)
		}
	}

	_, runs := inspTable(t, inspMust(t, "runs", "--db", path))
	if len(runs) != 1 || runs[0]["LIGHT"] != "3" || runs[0]["FULL"] != "2" || runs[0]["SNAPSHOTS"] != strconv.Itoa(len(snaps)) {
		t.Errorf("runs: %v, want 3 light and 2 full", runs)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
