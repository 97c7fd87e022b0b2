package metrics_test

import (
	"bufio"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hessmon/hessmon/monitor/metrics"
	"github.com/hessmon/hessmon/snapshot"
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
