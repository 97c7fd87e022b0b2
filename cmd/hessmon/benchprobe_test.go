package main

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/hessmon/hessmon/internal/bench"
)

// TestBenchProbeDrivesTheMonitor: bench probe's sides are monitors with
// train's defaults, so the every-10th cold solve happens (a copy of the rule
// built on a Config without defaults had ColdEvery 0), and the HVP share is
// a measured fraction of the probes' time.
func TestBenchProbeDrivesTheMonitor(t *testing.T) {
	if testing.Short() {
		t.Skip("trains and probes 12 times")
	}
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"bench", "probe", "--data", "synthetic", "--hidden", "8", "--steps", "24", "--every", "2",
		"--async-steps", "0", "--json"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("bench probe exited %d: %s", code, errOut.String())
	}
	var res bench.ProbeResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatal(err)
	}
	if res.Probes != 12 {
		t.Errorf("%d probes, want 12 (every 2 of 24 steps)", res.Probes)
	}
	for name, s := range map[string]bench.ProbeSide{"round 1": res.Baseline, "now": res.New} {
		if !(s.HVPShare > 0 && s.HVPShare < 1) || s.HVPSeconds <= 0 || s.HVPSeconds >= s.Seconds {
			t.Errorf("%s: HVP share %g (%g s of %g s)", name, s.HVPShare, s.HVPSeconds, s.Seconds)
		}
		if !s.WithinTol || s.Failures != 0 {
			t.Errorf("%s: residuals within tolerance %v, %d failures", name, s.WithinTol, s.Failures)
		}
	}
}

func TestWithoutFlag(t *testing.T) {
	got := bench.WithoutFlag([]string{"--json", "--sizes", "8,8", "-json", "--json=true", "--jsonx"}, "json")
	want := []string{"--sizes", "8,8", "--jsonx"}
	if len(got) != len(want) {
		t.Fatalf("WithoutFlag = %q, want %q", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("WithoutFlag = %q, want %q", got, want)
		}
	}
}
