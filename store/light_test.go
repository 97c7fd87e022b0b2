package store_test

import (
	"fmt"
	"runtime/debug"
	"strings"
	"testing"
	"unicode/utf8"

	hmtest "github.com/hessmon/hessmon/internal/testutil"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/store"
)

// TestLightSnapshotCompact: a light snapshot, with every field a light probe
// fills (λ1(P⁻¹H) and a long run name included), encodes in at most 1 KB,
// also when it failed with a panic's stack trace as its detail.
func TestLightSnapshotCompact(t *testing.T) {
	s := hmtest.LightSnapshot(strings.Repeat("run-name-", 8), 123456)
	s.Optimizer, s.Beta1 = snapshot.Adam, 0.9
	s.PreconditionedLambda1 = &snapshot.Eigenpair{Value: 1234.5, Residual: 0.7}
	s.Reason = snapshot.ReasonNegativeCurvature
	s.Precision = snapshot.Float32
	b, err := store.EncodeSnapshot(s)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 1024 {
		t.Errorf("light snapshot encodes in %d bytes, want ≤ 1024", len(b))
	}
	t.Logf("light snapshot: %d bytes", len(b))
	back, err := store.DecodeSnapshot(b)
	if err != nil {
		t.Fatal(err)
	}
	if back.Kind != snapshot.KindLight || back.Reason != s.Reason || back.Precision != s.Precision ||
		back.PeakBytes != s.PeakBytes || back.Eigenvalues[0] != s.Eigenvalues[0] || *back.LambdaMin != *s.LambdaMin {
		t.Errorf("round trip lost light fields: %+v", back)
	}

	// A failed light probe whose detail is a real panic's stack, made long
	// and ending in multi-byte runes so that a byte cut would split one.
	failed := s
	failed.Failure = snapshot.FailPanic
	failed.Detail = fmt.Sprintf("λ operator panicked\n%s%s", debug.Stack(), strings.Repeat("λμ", 400))
	if len(failed.Detail) <= store.MaxLightDetail {
		t.Fatalf("detail of %d bytes does not test the cap", len(failed.Detail))
	}
	b, err = store.EncodeSnapshot(failed)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 1024 {
		t.Errorf("failed light snapshot encodes in %d bytes, want ≤ 1024", len(b))
	}
	back, err = store.DecodeSnapshot(b)
	if err != nil {
		t.Fatal(err)
	}
	if !utf8.ValidString(back.Detail) || len(back.Detail) > store.MaxLightDetail ||
		!strings.HasPrefix(failed.Detail, strings.TrimSuffix(back.Detail, "…")) || !strings.HasPrefix(back.Detail, "λ operator panicked") {
		t.Errorf("capped detail (%d bytes) is not a valid head of the original: %q", len(back.Detail), back.Detail)
	}

	// A full snapshot keeps its whole detail.
	full := hmtest.Snapshot("r", 1, 3)
	full.Failure, full.Detail = snapshot.FailPanic, failed.Detail
	b, err = store.EncodeSnapshot(full)
	if err != nil {
		t.Fatal(err)
	}
	if back, err = store.DecodeSnapshot(b); err != nil || back.Detail != full.Detail {
		t.Errorf("full snapshot's detail cut to %d of %d bytes (%v)", len(back.Detail), len(full.Detail), err)
	}
}
