package dashboards

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"

	"github.com/hessmon/hessmon/monitor/metrics"
)

const committedDir = "json"

// committed reads every committed dashboard file.
func committed(t *testing.T) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(committedDir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(p)] = b
	}
	if len(out) == 0 {
		t.Fatalf("no committed dashboards in %s", committedDir)
	}
	return out
}

// TestCommittedJSONIsGenerated fails when dashboards/json differs from the
// generator's output: run `go generate ./dashboards` and commit.
func TestCommittedJSONIsGenerated(t *testing.T) {
	gen, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	have := committed(t)
	if !slices.Equal(Names(gen), Names(have)) {
		t.Fatalf("committed files %v, generator writes %v: run go generate ./dashboards", Names(have), Names(gen))
	}
	for _, name := range Names(gen) {
		if !bytes.Equal(gen[name], have[name]) {
			t.Errorf("%s differs from Generate() output: run go generate ./dashboards", name)
		}
	}
}

func TestGenerateIsDeterministic(t *testing.T) {
	a, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	b, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	for name := range a {
		if !bytes.Equal(a[name], b[name]) {
			t.Errorf("%s: two runs of Generate differ", name)
		}
	}
}

func TestWriteAll(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "dir")
	if err := WriteAll(dir); err != nil {
		t.Fatal(err)
	}
	gen, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range Names(gen) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, gen[name]) {
			t.Errorf("%s written differently from Generate()", name)
		}
	}
	// A file where the directory should be is an error, not a panic.
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteAll(f); err == nil {
		t.Error("WriteAll into a regular file succeeded")
	}
}

// TestSDKRoundTrip decodes the committed JSON with the SDK (json.Unmarshal
// after RegisterDefaultPlugins; UnmarshalJSONStrict is broken in v0.0.22)
// and re-encodes it: nothing may be lost or changed.
func TestSDKRoundTrip(t *testing.T) {
	plugins.RegisterDefaultPlugins()
	for name, b := range committed(t) {
		var d dashboard.Dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		again, err := json.MarshalIndent(d, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(append(again, '\n'), b) {
			t.Errorf("%s: SDK decode+encode changes the dashboard", name)
		}
	}
}

// raw is a generic view of the JSON, to check what Grafana reads
// independently of the SDK's types.
type raw = map[string]any

func rawPanels(t *testing.T, b []byte) (raw, []raw) {
	t.Helper()
	var d raw
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	var out []raw
	list, _ := d["panels"].([]any)
	for _, p := range list {
		pm := p.(raw)
		out = append(out, pm)
		if nested, ok := pm["panels"].([]any); ok {
			for _, q := range nested {
				out = append(out, q.(raw))
			}
		}
	}
	return d, out
}

func dig(m raw, path ...string) any {
	var v any = m
	for _, k := range path {
		mm, ok := v.(raw)
		if !ok {
			return nil
		}
		v = mm[k]
	}
	return v
}

// TestPanelsAreExplicit checks what the SDK leaves to Grafana's defaults
// unless told: unique ids, grid positions, refIds, legends, tooltips, the
// datasource, and the heatmap's bucket layout.
func TestPanelsAreExplicit(t *testing.T) {
	for name, b := range committed(t) {
		d, panels := rawPanels(t, b)
		if v, _ := d["schemaVersion"].(float64); v < 39 {
			t.Errorf("%s: schemaVersion %v", name, v)
		}
		if uid, _ := d["uid"].(string); uid == "" || len(uid) > 40 {
			t.Errorf("%s: uid %q", name, uid)
		}
		ids := map[float64]bool{}
		for _, p := range panels {
			title, _ := p["title"].(string)
			where := fmt.Sprintf("%s panel %q", name, title)
			id, ok := p["id"].(float64)
			if !ok || id == 0 || ids[id] {
				t.Errorf("%s: missing or duplicate id %v", where, p["id"])
			}
			ids[id] = true
			if w, _ := dig(p, "gridPos", "w").(float64); w == 0 {
				t.Errorf("%s: no grid width", where)
			}
			typ, _ := p["type"].(string)
			if typ == "row" {
				continue
			}
			if title == "" || p["description"] == nil {
				t.Errorf("%s: no title or description", where)
			}
			if dig(p, "datasource", "uid") != "${datasource}" {
				t.Errorf("%s: datasource %v, want the $datasource variable", where, p["datasource"])
			}
			targets, _ := p["targets"].([]any)
			if len(targets) == 0 {
				t.Errorf("%s: no targets", where)
			}
			refs := map[string]bool{}
			for _, tg := range targets {
				tm := tg.(raw)
				ref, _ := tm["refId"].(string)
				if ref == "" || refs[ref] {
					t.Errorf("%s: missing or duplicate refId %q", where, ref)
				}
				refs[ref] = true
				if l, _ := tm["legendFormat"].(string); l == "" {
					t.Errorf("%s %s: no legendFormat", where, ref)
				}
				if dig(tm, "datasource", "uid") != "${datasource}" {
					t.Errorf("%s %s: datasource %v", where, ref, tm["datasource"])
				}
			}
			switch typ {
			case "timeseries":
				if dig(p, "options", "tooltip", "mode") == nil || dig(p, "options", "legend", "displayMode") == nil ||
					dig(p, "options", "legend", "showLegend") != true {
					t.Errorf("%s: legend or tooltip mode not set", where)
				}
			case "heatmap":
				if dig(p, "options", "calculate") != false || dig(p, "options", "rowsFrame", "layout") != "le" {
					t.Errorf("%s: heatmap must use the exported le buckets as they are", where)
				}
				if s, _ := dig(p, "options", "color", "steps").(float64); s < 2 {
					t.Errorf("%s: colour steps %v", where, s)
				}
				if dig(p, "options", "tooltip", "mode") == nil {
					t.Errorf("%s: tooltip mode not set", where)
				}
				for _, tg := range targets {
					if tg.(raw)["format"] != "heatmap" {
						t.Errorf("%s: target format %v, want heatmap", where, tg.(raw)["format"])
					}
				}
			case "stat":
				if steps, _ := dig(p, "fieldConfig", "defaults", "thresholds", "steps").([]any); len(steps) == 0 {
					t.Errorf("%s: no thresholds", where)
				}
			default:
				t.Errorf("%s: unexpected panel type %q", where, typ)
			}
		}
	}
}

// TestQueriesUseExporterNames checks every committed query: names from
// names.go only, and each query restricted to the dashboard's run variable.
func TestQueriesUseExporterNames(t *testing.T) {
	names := readExporterNames(t)
	used := map[string]bool{}
	for name, b := range committed(t) {
		qs, err := Queries(b)
		if err != nil {
			t.Fatal(err)
		}
		if len(qs) == 0 {
			t.Fatalf("%s: no queries", name)
		}
		for _, q := range qs {
			where := fmt.Sprintf("%s panel %q %s", name, q.Panel, q.RefID)
			for _, m := range names.checkNames(t, where, q.Expr) {
				used[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_sum"), "_count")] = true
			}
			if !regexp.MustCompile(`\brun=~?"\$run"`).MatchString(q.Expr) {
				t.Errorf("%s: %q does not select $run", where, q.Expr)
			}
			if q.Datasource.Type == nil || *q.Datasource.Type != "prometheus" {
				t.Errorf("%s: datasource %+v", where, q.Datasource)
			}
		}
		vars, err := Variables(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range vars {
			if v.Type != "query" {
				continue
			}
			m := regexp.MustCompile(`^label_values\((\w+),\s*(\w+)\)$`).FindStringSubmatch(v.Query)
			if m == nil || !names.isMetric(m[1]) || !names.isLabel(m[2]) {
				t.Errorf("%s variable %s: query %q", name, v.Name, v.Query)
			}
		}
	}
	// Every metric the exporter declares is shown somewhere.
	for m := range names.metrics {
		if !used[m] {
			t.Errorf("metric %s is on no dashboard", m)
		}
	}
}

// TestCurvatureDashboardContent checks the panels issue E asks for, by the
// queries they run.
func TestCurvatureDashboardContent(t *testing.T) {
	b := committed(t)[CurvatureFile]
	qs, err := Queries(b)
	if err != nil {
		t.Fatal(err)
	}
	has := func(panelType, substr, format string) bool {
		for _, q := range qs {
			if q.PanelType == panelType && strings.Contains(q.Expr, substr) && (format == "" || q.Format == format) {
				return true
			}
		}
		return false
	}
	for _, c := range []struct{ typ, substr, format string }{
		{"timeseries", metrics.TopEigenvalue + `{run="$run", rank="1"}`, ""}, // the dense λ1 series
		{"timeseries", metrics.TopEigenvalue + `{run="$run", rank!="1"}`, ""},
		{"stat", metrics.FullProbeStep + `{run="$run"}`, ""},
		{"timeseries", metrics.Step + `{run="$run"} - ` + metrics.FullProbeStep, ""},
		{"timeseries", "sum by (kind, reason) (increase(" + metrics.ProbesByKind, ""},
		{"timeseries", "2 / " + metrics.TrainingLR + `{run="$run"}`, ""},
		{"stat", metrics.SharpnessRatio, ""},
		{"timeseries", metrics.Trace + `{run="$run"} + 2 * ` + metrics.TraceStdErr, ""},
		{"timeseries", metrics.Trace + `{run="$run"} - 2 * ` + metrics.TraceStdErr, ""},
		{"heatmap", `sum by (le) (` + metrics.ESDCumulative + `{run="$run"})`, "heatmap"},
		{"timeseries", metrics.BlockTrace, ""},
		{"timeseries", metrics.TrainingLoss, ""},
		{"timeseries", metrics.TrainingLR, ""},
		{"timeseries", metrics.ProbeHVPs, ""},
		{"timeseries", "histogram_quantile(0.9, sum by (le) (rate(" + metrics.ProbeDuration + "_bucket", ""},
		{"timeseries", "increase(" + metrics.ProbeFailures, ""},
	} {
		if !has(c.typ, c.substr, c.format) {
			t.Errorf("no %s panel querying %q", c.typ, c.substr)
		}
	}
	vars, err := Variables(b)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		varDatasource: "prometheus",
		varRun:        "label_values(" + metrics.Step + ", " + metrics.LabelRun + ")",
	}
	for _, v := range vars {
		if q, ok := want[v.Name]; ok {
			if v.Query != q {
				t.Errorf("variable %s: query %q, want %q", v.Name, v.Query, q)
			}
			if v.Name == varDatasource && v.Current != DatasourceUID {
				t.Errorf("datasource variable defaults to %q, want %q", v.Current, DatasourceUID)
			}
			delete(want, v.Name)
		}
	}
	if len(want) != 0 {
		t.Errorf("missing variables %v", want)
	}
}

func TestComparisonDashboardIsMultiRun(t *testing.T) {
	b := committed(t)[ComparisonFile]
	vars, err := Variables(b)
	if err != nil {
		t.Fatal(err)
	}
	ok := false
	for _, v := range vars {
		if v.Name == varRun {
			ok = v.Multi && v.IncludeAll
		}
	}
	if !ok {
		t.Error("run variable is not multi-select with All")
	}
	qs, err := Queries(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{metrics.TopEigenvalue, metrics.Trace, metrics.TrainingLoss} {
		found := false
		for _, q := range qs {
			if strings.HasPrefix(q.Expr, m+`{run=~"$run"`) && strings.Contains(q.Legend, "{{run}}") {
				found = true
			}
		}
		if !found {
			t.Errorf("no per-run overlay of %s", m)
		}
	}
}

func TestQueriesRejectsBadJSON(t *testing.T) {
	if _, err := Queries([]byte("{")); err == nil {
		t.Error("truncated JSON accepted")
	}
	if _, err := Variables([]byte(`{"templating": 3}`)); err == nil {
		t.Error("bad templating accepted")
	}
}
