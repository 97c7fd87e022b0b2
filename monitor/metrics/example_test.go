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

	"github.com/hessmon/hessmon/monitor/metrics"
	"github.com/hessmon/hessmon/monitor/snapshot"
)

// The monitor feeds every probe's snapshot to an Exporter and every
// training step's loss; Prometheus scrapes the handler.
func ExampleExporter() {
	exp := metrics.NewExporter()
	exp.ObserveTraining("demo", 100, 0.42, 0.1)
	exp.Observe(snapshot.Snapshot{
		Run: "demo", Step: 100, LearningRate: 0.1, Loss: 0.42,
		Eigenvalues: []float64{15, 9}, Residuals: []float64{1e-6, 2e-6},
		SharpnessThreshold: 20, SharpnessRatio: 0.75,
		HVPs: 35, Seconds: 0.2,
	})

	srv := httptest.NewServer(metrics.NewServer(exp, nil))
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

// A trainer serves its metrics and API on 127.0.0.1:9464 until interrupted.
// src is anything that lists runs and snapshots, e.g. the *store.Store the
// monitor writes.
func ExampleServe() {
	var src metrics.Source // e.g. a *store.Store
	exp := metrics.NewExporter()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	go func() {
		if err := metrics.Serve(ctx, "", metrics.NewServer(exp, src)); err != nil {
			log.Print(err)
		}
	}()
	// ... train, calling exp.Observe and exp.ObserveTraining ...
}
