package dashboards_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/hessmon/hessmon/dashboards"
)

// Generate returns every dashboard as JSON, keyed by file name; WriteAll
// writes the same bytes into a directory for Grafana to provision.
func ExampleGenerate() {
	files, err := dashboards.Generate()
	if err != nil {
		log.Fatal(err)
	}
	for _, name := range dashboards.Names(files) {
		fmt.Println(name)
	}
	// Output:
	// run-comparison.json
	// training-curvature.json
}

// Queries lists what each panel asks Prometheus, straight from the JSON that
// Grafana loads.
func ExampleQueries() {
	b, err := os.ReadFile(filepath.Join("json", dashboards.ComparisonFile))
	if err != nil {
		log.Fatal(err)
	}
	qs, err := dashboards.Queries(b)
	if err != nil {
		log.Fatal(err)
	}
	for _, q := range qs {
		fmt.Printf("%s [%s] %s\n", q.Panel, q.Legend, q.Expr)
	}
	// Output:
	// Sharpness λ1 per run [{{run}}] hessian_top_eigenvalue{run=~"$run", rank="1"}
	// Sharpness ratio per run [{{run}}] hessian_sharpness_ratio{run=~"$run"}
	// Hessian trace per run [{{run}}] hessian_trace{run=~"$run"}
	// Training loss per run [{{run}}] hessmon_training_loss{run=~"$run"}
}

// WriteAll is what `hessmon dashboards --out DIR` and `go generate` run.
func ExampleWriteAll() {
	dir, err := os.MkdirTemp("", "dashboards")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := dashboards.WriteAll(dir); err != nil {
		log.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(entries), "dashboards written")
	// Output: 2 dashboards written
}
