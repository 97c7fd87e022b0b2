package metrics_test

import (
	"bufio"
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hessmon/hessmon/monitor/metrics"
	"github.com/hessmon/hessmon/monitor/snapshot"
)

// The exporter is a prometheus.Collector: register it next to your own
// metrics and serve the registry with promhttp. Given to the monitor with
// monitor.WithSink(exp), it sees every probe's snapshot and every training
// step's loss.
func ExampleExporter() {
	reg := prometheus.NewRegistry()
	exp := metrics.NewExporter()
	reg.MustRegister(exp)

	exp.ObserveTraining("demo", 100, 0.42, 0.1)
	_ = exp.PutSnapshot(snapshot.Snapshot{
		Run: "demo", Step: 100, LearningRate: 0.1, Loss: 0.42,
		Eigenvalues: []float64{15, 9}, Residuals: []float64{1e-6, 2e-6},
		SharpnessThreshold: 20, SharpnessRatio: 0.75,
		HVPs: 35, Seconds: 0.2,
	})

	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, metrics.TopEigenvalue) || strings.HasPrefix(l, metrics.SharpnessRatio) {
			fmt.Println(l)
		}
	}
	// Output:
	// hessian_sharpness_ratio{run="demo"} 0.75
	// hessian_top_eigenvalue{rank="1",run="demo"} 15
	// hessian_top_eigenvalue{rank="2",run="demo"} 9
}

// Mount the JSON API and the metrics on your own mux, served on loopback
// until interrupted. src is anything that lists runs and snapshots, e.g. the
// *store.Store the monitor writes.
func ExampleNewAPI() {
	var src metrics.Source // e.g. a *store.Store
	exp := metrics.NewExporter()
	prometheus.MustRegister(exp) // the default registry, next to Go's own metrics

	mux := http.NewServeMux()
	mux.Handle("/api/", metrics.NewAPI(src))
	mux.Handle("/metrics", promhttp.Handler())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	go func() {
		if err := metrics.Serve(ctx, "", mux); err != nil {
			log.Print(err)
		}
	}()
	// ... train with monitor.WithSink(exp) ...
}
