package api_test

import (
	"context"
	"log"
	"net/http"
	"os"
	"os/signal"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hessmon/hessmon/monitor/api"
	"github.com/hessmon/hessmon/monitor/metrics"
)

// Mount the JSON API and the metrics on your own mux, served on loopback
// until interrupted. src is anything that lists runs and snapshots, e.g. the
// *store.Store the monitor writes.
func ExampleNewAPI() {
	var src api.Source // e.g. a *store.Store
	exp := metrics.NewExporter()
	prometheus.MustRegister(exp) // the default registry, next to Go's own metrics

	mux := http.NewServeMux()
	mux.Handle("/api/", api.NewAPI(src))
	mux.Handle("/metrics", promhttp.Handler())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	go func() {
		if err := api.Serve(ctx, "", mux); err != nil {
			log.Print(err)
		}
	}()
	// ... train with monitor.WithSink(exp) ...
}
