// Command gen writes hessmon's generated Grafana dashboards as JSON.
//
// It is what `go generate ./dashboards` runs; `hessmon dashboards --out DIR`
// does the same from the main binary.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/hessmon/hessmon/dashboards"
)

func main() {
	out := flag.String("out", "json", "directory to write the dashboard JSON files into")
	flag.Parse()
	if err := dashboards.WriteAll(*out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}
