package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"testing"

	"github.com/hessmon/hessmon/internal/bench"
)

// TestBenchHVPReportsBLAS: bench hvp --json names the BLAS in use and
// reports the HVP beside its GEMMs alone and the probe-batch HVP. No timing
// is asserted; only that the figures exist and are consistent.
func TestBenchHVPReportsBLAS(t *testing.T) {
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"bench", "hvp", "--data", "synthetic", "--hidden", "16", "--batch", "40",
		"--probe-batch", "8", "--reps", "1", "--json"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var res bench.HVPResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatal(err)
	}
	if res.BLAS.Name == "" || res.BLAS.Request == "" {
		t.Errorf("no BLAS reported: %+v", res.BLAS)
	}
	if res.BLAS.Loaded() && res.BLAS.File == "" {
		t.Errorf("loaded BLAS without its file: %+v", res.BLAS)
	}
	if !(res.HVPGFlops > 0 && res.BLASGFlops > 0 && res.Probe.HVPSeconds > 0 && res.Probe.Batch == 8) {
		t.Errorf("missing figures: %+v", res)
	}
	if r := res.HVPGFlops / res.BLASGFlops; r != res.HVPOverBLAS {
		t.Errorf("hvp_gflops_over_blas_gflops %v, want %v", res.HVPOverBLAS, r)
	}
}

// TestBenchHVPVsTorch runs the PyTorch reference when Debian's python3-torch
// is installed (never in CI) and requires torch's H·v to match hessmon's.
func TestBenchHVPVsTorch(t *testing.T) {
	if err := exec.Command("/usr/bin/python3", "-c", "import torch").Run(); err != nil {
		t.Skip("python3-torch not installed")
	}
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"bench", "hvp", "--data", "synthetic", "--hidden", "16,8", "--batch", "50",
		"--reps", "1", "--json", "--vs-torch", "--torch-script", "../../bench/torch_hvp.py"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var res bench.HVPResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatal(err)
	}
	if res.Torch == nil || !(res.Torch.HVRelDiff < 1e-12) {
		t.Fatalf("torch's H·v does not match hessmon's: %+v", res.Torch)
	}
	t.Logf("torch %s: |Hv_torch − Hv_hessmon|/|Hv| = %.2e", res.Torch.Version, res.Torch.HVRelDiff)
}
