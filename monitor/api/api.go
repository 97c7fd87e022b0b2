package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hessmon/hessmon/snapshot"
)

// DefaultAddr is where Serve listens when no address is given: loopback
// only. Another address must be asked for explicitly.
const DefaultAddr = "127.0.0.1:9464"

// Source is what the read-only JSON API serves from (see snapshot.Source).
type Source = snapshot.Source

// PagedSource is a Source that also reads by query (snapshot.Reader): one
// page of a run without reading the rest of it, and without eigenvectors
// unless asked for. The API pages through a source that has it
// (*store.Store does) at the cost of the page; any other Source is read
// whole and cut.
type PagedSource = snapshot.Reader

// Page sizes of GET /api/runs/{run}/snapshots.
const (
	// DefaultPageSize is the page size when the request gives no limit.
	DefaultPageSize = 1000
	// MaxPageSize is the largest limit accepted.
	MaxPageSize = 10000
	// With vectors=true each snapshot carries k eigenvectors of the
	// model's size (4.7 MB of floats for a 118k-parameter MLP, more as
	// JSON), so pages are smaller: DefaultVectorPageSize by default, at
	// most MaxVectorPageSize.
	DefaultVectorPageSize = 10
	MaxVectorPageSize     = 100
)

// NextFromHeader names the response header that holds the from= of the
// next page when more snapshots follow.
const NextFromHeader = "X-Hessmon-Next-From"

// NewAPI returns the read-only JSON API over src, for users to mount on
// their own mux (mux.Handle("/api/", api.NewAPI(src))):
//
//	GET /api/runs                                     JSON array of run summaries
//	GET /api/runs/{run}/snapshots?from=&to=&limit=&kind=    JSON array of snapshots
//
// The snapshots endpoint pages: it returns the first limit snapshots with
// from ≤ step ≤ to (inclusive; default all steps), limit defaulting to
// DefaultPageSize (1000) and at most MaxPageSize (10000); vectors=true adds
// the eigenvectors, in pages of 10 by default and at most 100
// (DefaultVectorPageSize, MaxVectorPageSize). When more snapshots follow, the response says where
// the next page starts, in two equivalent headers:
//
//	X-Hessmon-Next-From: 2020
//	Link: </api/runs/r/snapshots?from=2020&limit=1000>; rel="next"
//
// kind=light or kind=full keeps the probes of that kind only (a snapshot
// without a kind, from an older store, is full); the default is every
// probe, light and full, in step order. A light snapshot has λ1 and λmin
// with their residuals (eigenvalues [λ1], lambda_min) and no trace, ESD or
// blocks; its "kind" is "light" and "reason" says why it was taken.
//
// The next link keeps the request's to, limit, vectors and kind. The body stays
// a plain JSON array, as before paging. A last page has neither header.
//
// Other methods get 405.
func NewAPI(src Source) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/runs", func(w http.ResponseWriter, r *http.Request) {
		runs, err := src.Runs()
		if err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		if runs == nil {
			runs = []snapshot.RunSummary{}
		}
		writeJSON(w, http.StatusOK, runs)
	})
	mux.HandleFunc("GET /api/runs/{run}/snapshots", func(w http.ResponseWriter, r *http.Request) {
		serveSnapshots(w, r, src)
	})
	return mux
}

// NewServer returns the handler hessmon's own commands serve:
//
//	GET /metrics     Prometheus exposition of g (e.g. a registry holding an Exporter)
//	GET /api/...     the JSON API over src (see NewAPI)
//	GET /healthz     "ok"
//
// A nil g leaves out /metrics, a nil src the API.
func NewServer(g prometheus.Gatherer, src Source) http.Handler {
	mux := http.NewServeMux()
	if g != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{
			// A bad series (it cannot happen with our label sanitising, but
			// if it did) must not blank the whole scrape.
			ErrorHandling: promhttp.ContinueOnError,
			ErrorLog:      slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn),
		}))
	}
	if src != nil {
		mux.Handle("/api/", NewAPI(src))
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// pageQuery is a parsed GET /api/runs/{run}/snapshots request.
type pageQuery struct {
	from, to int64 // to < 0: no bound
	hasTo    bool
	limit    int
	vectors  bool
	kind     snapshot.Kind // "": every kind
}

// match reports whether s is of the kind asked for; a snapshot without a
// kind (an older store) is a full one.
func (pq *pageQuery) match(s *snapshot.Snapshot) bool {
	switch pq.kind {
	case "":
		return true
	case snapshot.KindLight:
		return s.IsLight()
	}
	return !s.IsLight()
}

func parsePageQuery(q url.Values) (pageQuery, error) {
	pq := pageQuery{to: -1, hasTo: q.Has("to")}
	for _, p := range []struct {
		name string
		dst  *int64
	}{{"from", &pq.from}, {"to", &pq.to}} {
		v := q.Get(p.name)
		if v == "" {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return pq, fmt.Errorf("%s=%q: want a non-negative step", p.name, v)
		}
		*p.dst = n
	}
	if pq.to >= 0 && pq.from > pq.to {
		return pq, fmt.Errorf("from=%d is after to=%d", pq.from, pq.to)
	}
	if v := q.Get("vectors"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return pq, fmt.Errorf("vectors=%q: want true or false", v)
		}
		pq.vectors = b
	}
	switch k := snapshot.Kind(q.Get("kind")); k {
	case "", snapshot.KindLight, snapshot.KindFull:
		pq.kind = k
	default:
		return pq, fmt.Errorf("kind=%q: want %s or %s", k, snapshot.KindLight, snapshot.KindFull)
	}
	limit, maxLimit := DefaultPageSize, MaxPageSize
	if pq.vectors {
		limit, maxLimit = DefaultVectorPageSize, MaxVectorPageSize
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			with := ""
			if pq.vectors {
				with = " with vectors=true"
			}
			return pq, fmt.Errorf("limit=%q: want 1 to %d snapshots per page%s", v, maxLimit, with)
		}
		limit = n
	}
	pq.limit = limit
	return pq, nil
}

// readPage returns up to n snapshots of run that pq asks for, in step
// order. With a kind filter it reads the source page by page until it has
// n matches or the run ends, so that a page of light probes is not cut
// short by the full ones between them.
func readPage(src Source, run string, pq *pageQuery, n int) ([]snapshot.Snapshot, error) {
	ps, paged := src.(PagedSource)
	if !paged {
		snaps, err := src.Snapshots(run, pq.from, pq.to)
		if err != nil {
			return nil, err
		}
		snaps = slices.DeleteFunc(snaps, func(s snapshot.Snapshot) bool { return !pq.match(&s) })
		return snaps[:min(n, len(snaps))], nil
	}
	var out []snapshot.Snapshot
	for from := pq.from; ; {
		page, err := ps.Read(run, storeQuery(from, pq.to, n, pq.vectors))
		if err != nil {
			return nil, err
		}
		if pq.to == 0 && len(page) > 0 && page[0].Step != 0 {
			page = page[:0]
		}
		for _, s := range page {
			if pq.match(&s) {
				out = append(out, s)
			}
		}
		if len(page) < n || len(out) >= n || pq.kind == "" {
			return out[:min(n, len(out))], nil
		}
		from = page[len(page)-1].Step + 1
	}
}

func serveSnapshots(w http.ResponseWriter, r *http.Request, src Source) {
	q := r.URL.Query()
	pq, err := parsePageQuery(q)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	run := r.PathValue("run")
	// One snapshot more than the page tells whether another page follows
	// and where it starts.
	snaps, err := readPage(src, run, &pq, pq.limit+1)
	switch {
	case errors.Is(err, snapshot.ErrUnknownRun):
		writeError(w, http.StatusNotFound, fmt.Errorf("unknown run %q", run))
		return
	case err != nil:
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	if len(snaps) > pq.limit {
		next := snaps[pq.limit].Step
		snaps = snaps[:pq.limit]
		nq := url.Values{}
		nq.Set("from", strconv.FormatInt(next, 10))
		if pq.hasTo {
			nq.Set("to", strconv.FormatInt(pq.to, 10))
		}
		nq.Set("limit", strconv.Itoa(pq.limit))
		if pq.vectors {
			nq.Set("vectors", "true")
		}
		if pq.kind != "" {
			nq.Set("kind", string(pq.kind))
		}
		// The path as the client sent it, which a StripPrefix in front
		// of this handler would have shortened in r.URL.
		path := r.URL.EscapedPath()
		if u, err := url.ParseRequestURI(r.RequestURI); err == nil {
			path = u.EscapedPath()
		}
		w.Header().Set(NextFromHeader, strconv.FormatInt(next, 10))
		w.Header().Set("Link", fmt.Sprintf("<%s?%s>; rel=\"next\"", path, nq.Encode()))
	}
	out := make([]snapshot.JSONSnapshot, len(snaps))
	for i, s := range snaps {
		if !pq.vectors {
			s.Eigenvectors = nil
		}
		out[i] = snapshot.NewJSONSnapshot(s)
	}
	writeJSON(w, http.StatusOK, out)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, code int, err error) {
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{err.Error()})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

// Serve serves h on addr ("" means DefaultAddr, loopback only) until ctx is
// cancelled, then shuts down gracefully. It returns nil after a shutdown
// caused by ctx and the listener's error otherwise.
func Serve(ctx context.Context, addr string, h http.Handler) error {
	if addr == "" {
		addr = DefaultAddr
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("api: listen: %w", err)
	}
	return ServeListener(ctx, ln, h)
}

// Start serves h on addr in the background, for a program that keeps its
// own main loop (a training loop). It returns the address it listens on
// (useful with port 0) and stop, which shuts the server down gracefully
// and returns Serve's error.
func Start(addr string, h http.Handler) (net.Addr, func() error, error) {
	if addr == "" {
		addr = DefaultAddr
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("api: listen: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, ln, h) }()
	return ln.Addr(), func() error { cancel(); return <-done }, nil
}

// ServeListener is Serve on a listener the caller opened, e.g. on port 0 to
// learn the address it got.
func ServeListener(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      time.Minute,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		err := srv.Shutdown(sctx)
		if err != nil {
			_ = srv.Close() // slow clients: cut them off
		}
		<-errc
		return err
	}
}

// storeQuery is the store Query of a page of limit snapshots with from ≤ step ≤ to
// (to < 0: no upper bound; to = 0, where a Query has none, reads the first
// snapshot, which the caller keeps only if it is step 0).
func storeQuery(from, to int64, limit int, vectors bool) snapshot.Query {
	q := snapshot.Query{From: from, To: to, Limit: limit, Fields: snapshot.WithTrace | snapshot.WithESD}
	if vectors {
		q.Fields |= snapshot.WithVectors
	}
	if to == 0 {
		q.Limit = 1 // from ≤ to was checked: from is 0
	}
	return q
}
