package api

import (
	"encoding/json"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/hessmon/hessmon/internal/testutil"
	"github.com/hessmon/hessmon/snapshot"
)

// TestAPIKindFilter: a run of light probes every 10 steps with a full one
// every 70 (the first of them of an older store, without a kind). kind=
// light and kind=full page through their own probes only, by the next
// links, for a paged store and an in-memory source alike; no filter serves
// both in step order, light snapshots with λ1, λmin and no trace.
func TestAPIKindFilter(t *testing.T) {
	st := testutil.NewStore(t)
	var all []snapshot.Snapshot
	var light, full, every []int64
	for i := range int64(300) {
		step := 10 * i
		s := testutil.LightSnapshot("r", step)
		if i%7 == 0 {
			s = testutil.Snapshot("r", step, 3)
			if i > 0 {
				s.Kind, s.Reason = snapshot.KindFull, snapshot.ReasonBudget
			}
			full = append(full, step)
		} else {
			light = append(light, step)
		}
		every = append(every, step)
		if err := st.PutSnapshot(s); err != nil {
			t.Fatal(err)
		}
		all = append(all, s)
	}
	for name, src := range map[string]Source{"store": st, "in memory": memSource{all}} {
		t.Run(name, func(t *testing.T) {
			ts := httptest.NewServer(NewServer(nil, src))
			defer ts.Close()
			for _, c := range []struct {
				query string
				want  []int64
			}{
				{"?kind=light&limit=37", light},
				{"?kind=full&limit=5", full},
				{"?limit=100", every},
				{"?kind=light&from=700&to=1400&limit=10", between(light, 700, 1400)},
			} {
				var got []int64
				pages := 0
				for next := "/api/runs/r/snapshots" + c.query; next != ""; pages++ {
					var steps []int64
					steps, next, _ = page(t, ts.URL, next)
					got = append(got, steps...)
					if pages > 100 {
						t.Fatalf("%s: no end of pages", c.query)
					}
				}
				if !slices.Equal(got, c.want) {
					t.Errorf("%s: %d steps %v…, want %d %v…", c.query, len(got), head(got), len(c.want), head(c.want))
				}
			}

			_, body := get(t, ts.URL+"/api/runs/r/snapshots?from=10&to=10")
			var snaps []map[string]any
			if err := json.Unmarshal(body, &snaps); err != nil || len(snaps) != 1 {
				t.Fatalf("step 10: %s (%v)", body, err)
			}
			s := snaps[0]
			if s["kind"] != "light" || s["reason"] != "scheduled" || s["lambda_min"] == nil || s["trace"] != nil || s["esd"] != nil ||
				len(s["eigenvalues"].([]any)) != 1 {
				t.Errorf("light snapshot served as %v", s)
			}
			if code, _ := get(t, ts.URL+"/api/runs/r/snapshots?kind=heavy"); code != 400 {
				t.Errorf("kind=heavy: %d, want 400", code)
			}
		})
	}
}

func between(v []int64, lo, hi int64) []int64 {
	var out []int64
	for _, x := range v {
		if x >= lo && x <= hi {
			out = append(out, x)
		}
	}
	return out
}

func head(v []int64) []int64 { return v[:min(5, len(v))] }
