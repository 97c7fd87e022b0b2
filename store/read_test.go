package store

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hessmon/hessmon/snapshot"
)

func TestScanFields(t *testing.T) {
	s, _ := newStore(t)
	withBlocks := func(step int64) snapshot.Snapshot {
		sn := fullSnapshot("r", step)
		sn.BlockMass = []snapshot.BlockValue{{Name: "fc1.weight", Value: 0.75}}
		sn.BlockLambda1 = []snapshot.BlockValue{{Name: "fc1.weight", Value: 9, Residual: 1e-6}}
		return sn
	}
	for step := range int64(5) {
		if err := s.PutSnapshot(withBlocks(step)); err != nil {
			t.Fatal(err)
		}
	}
	full := withBlocks(3)
	for _, c := range []struct {
		f    Fields
		want func(*snapshot.Snapshot)
	}{
		{Headers, func(s *snapshot.Snapshot) { s.Eigenvectors, s.Trace, s.ESD, s.BlockLambda1 = nil, nil, nil, nil }},
		{WithTrace, func(s *snapshot.Snapshot) { s.Eigenvectors, s.ESD = nil, nil }},
		{WithESD, func(s *snapshot.Snapshot) { s.Eigenvectors, s.Trace, s.BlockLambda1 = nil, nil, nil }},
		{WithTrace | WithESD, func(s *snapshot.Snapshot) { s.Eigenvectors = nil }},
		{AllFields, func(*snapshot.Snapshot) {}},
	} {
		want := full
		c.want(&want)
		var got []snapshot.Snapshot
		if err := s.Scan("r", 3, 3, c.f, func(sn snapshot.Snapshot) error { got = append(got, sn); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 {
			t.Fatalf("fields %b: %d snapshots", c.f, len(got))
		}
		if diff := cmp.Diff(want, got[0], sameSnapshot); diff != "" {
			t.Errorf("fields %b (-want +got):\n%s", c.f, diff)
		}
	}
}

func TestSnapshotsPage(t *testing.T) {
	s, _ := newStore(t)
	for step := int64(0); step < 100; step += 10 {
		if err := s.PutSnapshot(fullSnapshot("r", step)); err != nil {
			t.Fatal(err)
		}
	}
	steps := func(snaps []snapshot.Snapshot) (out []int64) {
		for _, sn := range snaps {
			out = append(out, sn.Step)
		}
		return out
	}
	for _, c := range []struct {
		from, to int64
		limit    int
		want     []int64
	}{
		{0, -1, 3, []int64{0, 10, 20}},
		{15, -1, 2, []int64{20, 30}},
		{15, 35, 10, []int64{20, 30}},
		{85, -1, 5, []int64{90}},
		{0, 25, 0, []int64{0, 10, 20}},
		{95, -1, 5, nil},
	} {
		got, err := s.SnapshotsPage("r", c.from, c.to, c.limit, false)
		if err != nil {
			t.Fatal(err)
		}
		if !cmp.Equal(steps(got), c.want) {
			t.Errorf("from %d to %d limit %d: steps %v, want %v", c.from, c.to, c.limit, steps(got), c.want)
		}
		for _, sn := range got {
			if sn.Eigenvectors != nil || sn.Trace == nil || sn.ESD == nil {
				t.Errorf("page without vectors: vectors %v, trace %v, ESD %v", sn.Eigenvectors != nil, sn.Trace != nil, sn.ESD != nil)
			}
		}
	}
	got, err := s.SnapshotsPage("r", 0, -1, 1, true)
	if err != nil || len(got) != 1 || len(got[0].Eigenvectors) != 3 {
		t.Errorf("vectors: %v, %v", got, err)
	}
	if _, err := s.SnapshotsPage("nope", 0, -1, 1, false); err == nil {
		t.Error("unknown run: no error")
	}
}
