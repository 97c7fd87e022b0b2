package api

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"testing"

	"github.com/hessmon/hessmon/internal/testutil"
	"github.com/hessmon/hessmon/snapshot"
)

// memSource is a Source without Read, as an in-memory view would
// be: the API reads it whole and cuts the page.
type memSource struct{ snaps []snapshot.Snapshot }

func (m memSource) Runs() ([]snapshot.RunSummary, error) { return nil, nil }

func (m memSource) Snapshots(run string, from, to int64) ([]snapshot.Snapshot, error) {
	if run != "r" {
		return nil, fmt.Errorf("%w %q", snapshot.ErrUnknownRun, run)
	}
	var out []snapshot.Snapshot
	for _, s := range m.snaps {
		if s.Step >= from && (to < 0 || s.Step <= to) {
			out = append(out, s)
		}
	}
	return out, nil
}

var linkNext = regexp.MustCompile(`^<([^>]+)>; rel="next"$`)

// page fetches one page and returns its steps and the next link ("" on
// the last page), checking that the two headers agree.
func page(t *testing.T, base, path string) (steps []int64, next string, vectors bool) {
	t.Helper()
	resp, err := http.Get(base + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %d %s", path, resp.StatusCode, body)
	}
	var snaps []map[string]any
	if err := json.Unmarshal(body, &snaps); err != nil {
		t.Fatalf("%s: body is not a JSON array: %v", path, err)
	}
	for _, s := range snaps {
		steps = append(steps, int64(s["step"].(float64)))
		if s["eigenvectors"] != nil {
			vectors = true
		}
	}
	nf, link := resp.Header.Get(NextFromHeader), resp.Header.Get("Link")
	if (nf == "") != (link == "") {
		t.Fatalf("%s: %s %q but Link %q", path, NextFromHeader, nf, link)
	}
	if link == "" {
		return steps, "", vectors
	}
	m := linkNext.FindStringSubmatch(link)
	if m == nil {
		t.Fatalf("%s: Link %q", path, link)
	}
	u, err := resp.Request.URL.Parse(m[1])
	if err != nil {
		t.Fatal(err)
	}
	if got := u.Query().Get("from"); got != nf {
		t.Fatalf("%s: next link from=%s, header says %s", path, got, nf)
	}
	return steps, u.RequestURI(), vectors
}

func TestAPIPages(t *testing.T) {
	st := testutil.NewStore(t)
	var all []snapshot.Snapshot
	for i := range int64(2345) {
		s := testutil.Snapshot("r", 10*i, 2)
		s.Eigenvectors = [][]float64{{1, 0}}
		if err := st.PutSnapshot(s); err != nil {
			t.Fatal(err)
		}
		all = append(all, s)
	}
	for name, src := range map[string]Source{"store": st, "in memory": memSource{all}} {
		t.Run(name, func(t *testing.T) {
			ts := httptest.NewServer(NewServer(nil, src))
			defer ts.Close()

			// The default page, then every page by the next links.
			for _, c := range []struct {
				first          string
				pageLen        int
				wantLo, wantHi int64
				wantVecs       bool
			}{
				{"/api/runs/r/snapshots", DefaultPageSize, 0, 23440, false},
				{"/api/runs/r/snapshots?limit=100", 100, 0, 23440, false},
				{"/api/runs/r/snapshots?from=95&to=20000&limit=33&vectors=true", 33, 100, 20000, true},
				{"/api/runs/r/snapshots?from=23000&vectors=true", DefaultVectorPageSize, 23000, 23440, true},
				{"/api/runs/r/snapshots?limit=10000", 2345, 0, 23440, false},
			} {
				var got []int64
				path, pages := c.first, 0
				for path != "" {
					steps, next, vecs := page(t, ts.URL, path)
					if next != "" && len(steps) != c.pageLen {
						t.Fatalf("%s: page %d holds %d snapshots, want %d", c.first, pages, len(steps), c.pageLen)
					}
					if vecs != c.wantVecs {
						t.Fatalf("%s: eigenvectors served: %v", path, vecs)
					}
					got = append(got, steps...)
					path = next
					if pages++; pages > 100 {
						t.Fatal("no last page")
					}
				}
				if c.first == "/api/runs/r/snapshots" && pages != 3 {
					t.Errorf("%d pages of the default size %d for 2345 snapshots, want 3", pages, DefaultPageSize)
				}
				want := (c.wantHi-c.wantLo)/10 + 1
				if int64(len(got)) != want || got[0] != c.wantLo || got[len(got)-1] != c.wantHi {
					t.Fatalf("%s: %d snapshots %v…, want %d from %d to %d", c.first, len(got), got[:min(3, len(got))], want, c.wantLo, c.wantHi)
				}
				for i := 1; i < len(got); i++ {
					if got[i] != got[i-1]+10 {
						t.Fatalf("%s: step %d after %d: a page boundary lost or repeated a snapshot", c.first, got[i], got[i-1])
					}
				}
			}

			// curl '…/snapshots?limit=100' gets 100 and the next page.
			resp, err := http.Get(ts.URL + "/api/runs/r/snapshots?limit=100")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := resp.Header.Get(NextFromHeader); got != "1000" {
				t.Errorf("%s = %q, want 1000", NextFromHeader, got)
			}
			if got, want := resp.Header.Get("Link"), `</api/runs/r/snapshots?from=1000&limit=100>; rel="next"`; got != want {
				t.Errorf("Link %q, want %q", got, want)
			}

			for _, bad := range []string{"0", "-1", strconv.Itoa(MaxPageSize + 1), "ten", "1.5", "101&vectors=true"} {
				code, body := get(t, ts.URL+"/api/runs/r/snapshots?limit="+bad)
				if code != 400 {
					t.Errorf("limit=%s: %d %s, want 400", bad, code, body)
				}
			}
		})
	}
}

// TestAPIPageUnderPrefix: the next link is the path the client asked for,
// also when the API is mounted under a prefix that is stripped.
func TestAPIPageUnderPrefix(t *testing.T) {
	st := testutil.NewStore(t)
	for i := range int64(3) {
		if err := st.PutSnapshot(testutil.Snapshot("a b", i, 1)); err != nil {
			t.Fatal(err)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/hessmon/", http.StripPrefix("/hessmon", NewServer(nil, st)))
	ts := httptest.NewServer(mux)
	defer ts.Close()
	steps, next, _ := page(t, ts.URL, "/hessmon/api/runs/a%20b/snapshots?limit=2")
	if len(steps) != 2 || next != "/hessmon/api/runs/a%20b/snapshots?from=2&limit=2" {
		t.Fatalf("steps %v, next %q", steps, next)
	}
	steps, next, _ = page(t, ts.URL, next)
	if len(steps) != 1 || steps[0] != 2 || next != "" {
		t.Fatalf("last page: steps %v, next %q", steps, next)
	}
}
