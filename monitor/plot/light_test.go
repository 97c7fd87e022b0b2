package plot

import (
	"bytes"
	"testing"

	hmtest "github.com/hessmon/hessmon/internal/testutil"
	"github.com/hessmon/hessmon/snapshot"
)

// mixedSeries is light probes every 10 steps with full probes at 0, 50 and
// 100 (three eigenvalues and a trace each).
func mixedSeries() Series {
	s := Series{Label: "mix"}
	for step := int64(0); step <= 100; step += 10 {
		if step%50 == 0 {
			sn := hmtest.Snapshot("mix", step, 3)
			sn.Kind, sn.Reason = snapshot.KindFull, snapshot.ReasonBudget
			s.Snapshots = append(s.Snapshots, sn)
			continue
		}
		s.Snapshots = append(s.Snapshots, hmtest.LightSnapshot("mix", step))
	}
	return s
}

func TestFullProbePoints(t *testing.T) {
	s := mixedSeries()
	pts, light := fullProbePoints(s.Snapshots)
	if light != 8 || len(pts) != 3 {
		t.Fatalf("%d full points and %d light, want 3 and 8", len(pts), light)
	}
	for i, step := range []int64{0, 50, 100} {
		want := s.Snapshots[step/10].Eigenvalues[0]
		if pts[i].X != float64(step) || pts[i].Y != want {
			t.Errorf("point %d = %v, want (%d, %g)", i, pts[i], step, want)
		}
	}
}

// dark counts the near-black pixels of a PNG rendering.
func dark(t *testing.T, f *Figure) int {
	t.Helper()
	var buf bytes.Buffer
	if err := f.Render(&buf, "png", 640, 400); err != nil {
		t.Fatal(err)
	}
	img := decodePNG(t, buf.Bytes())
	n := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			if r < 0x5000 && g < 0x5000 && bl < 0x5000 {
				n++
			}
		}
	}
	return n
}

// TestEigenRingsFullProbes: the λ1 series runs through light and full
// probes alike, and the full ones are ringed. The same data with every
// probe full (nothing to tell apart) draws no rings: the difference in
// dark pixels is the three rings and their legend entry.
func TestEigenRingsFullProbes(t *testing.T) {
	mixed := mixedSeries()
	allFull := Series{Label: mixed.Label}
	for _, sn := range mixed.Snapshots {
		sn.Kind = snapshot.KindFull
		allFull.Snapshots = append(allFull.Snapshots, sn)
	}
	fm, err := New(KindEigen, []Series{mixed}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ff, err := New(KindEigen, []Series{allFull}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	dm, df := dark(t, fm), dark(t, ff)
	t.Logf("dark pixels: mixed %d, all full %d", dm, df)
	if dm < df+30 { // identical drawings but for the rings: 0 without them
		t.Errorf("mixed run: %d dark pixels, all-full run %d: no full-probe rings drawn", dm, df)
	}
}

// TestFullOnlyKindsSkipLight: trace, ESD and block plots draw the full
// probes only; a run of light probes has nothing to show there.
func TestFullOnlyKindsSkipLight(t *testing.T) {
	light := Series{Label: "light"}
	for step := int64(0); step < 50; step += 10 {
		light.Snapshots = append(light.Snapshots, hmtest.LightSnapshot("light", step))
	}
	if _, err := New(KindEigen, []Series{light}, Options{}); err != nil {
		t.Errorf("eigen plot of light probes: %v", err)
	}
	for _, k := range []Kind{KindTrace, KindESD, KindESDHeatmap, KindBlocks} {
		if _, err := New(k, []Series{light}, Options{}); err == nil {
			t.Errorf("%s plot of light probes only: no error", k)
		}
		if _, err := New(k, []Series{mixedSeries()}, Options{}); err != nil {
			t.Errorf("%s plot of a mixed run: %v", k, err)
		}
	}
}
