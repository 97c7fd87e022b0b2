package main

import (
	"context"
	"fmt"
	"net"
	"net/http"

	"github.com/hessmon/hessmon/monitor/api"
	"github.com/hessmon/hessmon/monitor/metrics"
)

// DefaultServeAddr is where `hessmon serve` listens: loopback, one port
// above a live trainer's api.DefaultAddr so both can run side by side.
const DefaultServeAddr = "127.0.0.1:9465"

func runServe(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "serve", "serve a finished store read-only over HTTP, through the same JSON API as a live trainer "+
		"(/api/runs, /api/runs/{run}/snapshots?from=&to=&kind=light|full, /healthz) plus /metrics replaying every run's snapshots, "+
		"so that Prometheus and Grafana can show a finished run. Runs until interrupted (Ctrl-C). The store is held "+
		"with a shared lock: a trainer cannot write it meanwhile.",
		"hessmon serve --db hessmon.db --listen 127.0.0.1:9465   # then: curl 127.0.0.1:9465/api/runs")
	var sf storeFlags
	sf.register(fs, false)
	listen := fs.String("listen", DefaultServeAddr, "address to serve on; binding beyond loopback must be asked for explicitly")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *listen == "" {
		return usageErr("--listen must name an address, e.g. %s", DefaultServeAddr)
	}
	st, err := openStore(sf.db)
	if err != nil {
		return err
	}
	defer st.Close()
	runs, err := st.Runs()
	if err != nil {
		return err
	}
	exp := metrics.NewExporter()
	if err := exp.Replay(st); err != nil {
		return fmt.Errorf("replay %s: %w", st.Path(), err)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	fmt.Fprintf(e.stdout, "serving %s read-only (%d runs) on http://%s: live page %s, /metrics /api/runs /healthz; Ctrl-C stops\n",
		st.Path(), len(runs), ln.Addr(), pageURL(ln))
	h, err := httpHandler(exp, st)
	if err != nil {
		return err
	}
	return api.ServeListener(ctx, ln, h)
}

// httpHandler is what train and serve serve: exp's metrics on a registry of
// their own, the JSON API over src, and the live page at /.
func httpHandler(exp *metrics.Exporter, src api.Source) (http.Handler, error) {
	reg, err := metrics.NewRegistry(exp)
	if err != nil {
		return nil, err
	}
	return withPage(api.NewServer(reg, src)), nil
}
