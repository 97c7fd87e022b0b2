package dashboards

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v4"
)

// exporterNames are the names that monitor/metrics/names.go declares.
type exporterNames struct {
	metrics    map[string]bool // metric name → declared
	histograms map[string]bool // metric names documented as histograms
	labels     map[string]bool
}

// readExporterNames parses names.go (not the compiled package) so that the
// check is literally "the name is declared in names.go": string constants
// named Label* are label names, Reason* label values, the others metric
// names. A constant whose
// comment says "histogram" also admits its _bucket, _sum and _count series.
func readExporterNames(t *testing.T) exporterNames {
	t.Helper()
	path := filepath.Join(repoRoot, "monitor", "metrics", "names.go")
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	n := exporterNames{metrics: map[string]bool{}, histograms: map[string]bool{}, labels: map[string]bool{}}
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if i >= len(vs.Values) {
					continue
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					continue
				}
				val, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				switch {
				case strings.HasPrefix(name.Name, "Label"):
					n.labels[val] = true
					continue
				case strings.HasPrefix(name.Name, "Reason"):
					continue // a value of the reason label
				}
				n.metrics[val] = true
				if vs.Comment != nil && strings.Contains(vs.Comment.Text(), "histogram") {
					n.histograms[val] = true
				}
			}
		}
	}
	if len(n.metrics) == 0 || len(n.labels) == 0 {
		t.Fatalf("%s: no metric or label constants found", path)
	}
	return n
}

// Labels Prometheus attaches to every scraped series.
var targetLabels = map[string]bool{"job": true, "instance": true}

func (n exporterNames) isMetric(name string) bool {
	if n.metrics[name] {
		return true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suf); ok && n.histograms[base] {
			return true
		}
	}
	return false
}

func (n exporterNames) isLabel(name string) bool { return n.labels[name] || targetLabels[name] }

// PromQL functions and aggregations the dashboards and rules may use; an
// unknown one is reported, so a typo cannot pass as a metric name.
var promFuncs = map[string]bool{
	"abs": true, "avg": true, "avg_over_time": true, "changes": true, "clamp_min": true,
	"clamp_max": true, "count": true, "deriv": true, "delta": true, "histogram_quantile": true,
	"increase": true, "irate": true, "label_replace": true, "max": true, "max_over_time": true,
	"min": true, "min_over_time": true, "quantile": true, "rate": true, "resets": true,
	"scalar": true, "sort": true, "sort_desc": true, "sum": true, "time": true, "timestamp": true,
	"topk": true, "bottomk": true, "vector": true, "absent": true,
}

var (
	promGrouping = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}
	promKeywords = map[string]bool{"offset": true, "bool": true, "and": true, "or": true, "unless": true, "inf": true, "nan": true}

	promStrings = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	promRanges  = regexp.MustCompile(`\[[^\]]*\]|(?i)\boffset\s+-?[0-9a-z_$]+`)
	promTokens  = regexp.MustCompile(`[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|[A-Za-z_:][A-Za-z0-9_:]*|[{}()]|[^\s{}()A-Za-z0-9_:$]+`)
	promIdent   = regexp.MustCompile(`^[A-Za-z_:][A-Za-z0-9_:]*$`)
)

// promNames returns the metric and label names an expression refers to. It
// is a small tokenizer, not a parser: Prometheus itself checks the syntax
// (promtool for the rules, the integration test for the dashboards).
func promNames(expr string) (metricNames, labelNames []string, err error) {
	s := promStrings.ReplaceAllString(expr, ` "" `)
	s = promRanges.ReplaceAllString(s, " ")
	toks := promTokens.FindAllString(s, -1)
	var stack []string // "brace", "labels" (grouping list) or "paren"
	for i, tok := range toks {
		switch tok {
		case "{":
			stack = append(stack, "brace")
			continue
		case "(":
			ctx := "paren"
			if i > 0 && promGrouping[strings.ToLower(toks[i-1])] {
				ctx = "labels"
			}
			stack = append(stack, ctx)
			continue
		case "}", ")":
			if len(stack) == 0 {
				return nil, nil, fmt.Errorf("unbalanced %q in %q", tok, expr)
			}
			stack = stack[:len(stack)-1]
			continue
		}
		if !promIdent.MatchString(tok) {
			continue // number, operator, string placeholder or $variable
		}
		low := strings.ToLower(tok)
		top := ""
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch {
		case top == "brace" || top == "labels":
			labelNames = append(labelNames, tok)
		case promGrouping[low] || promKeywords[low]:
		case i+1 < len(toks) && (toks[i+1] == "(" || promGrouping[strings.ToLower(toks[i+1])]):
			// A call, or an aggregation written `sum by (le) (...)`.
			if !promFuncs[tok] {
				return nil, nil, fmt.Errorf("unknown PromQL function %q in %q", tok, expr)
			}
		default:
			metricNames = append(metricNames, tok)
		}
	}
	if len(stack) != 0 {
		return nil, nil, fmt.Errorf("unbalanced brackets in %q", expr)
	}
	return metricNames, labelNames, nil
}

// checkNames reports every name of expr that names.go does not declare.
func (n exporterNames) checkNames(t *testing.T, where, expr string) (metricNames []string) {
	t.Helper()
	ms, ls, err := promNames(expr)
	if err != nil {
		t.Errorf("%s: %v", where, err)
		return nil
	}
	for _, m := range ms {
		if !n.isMetric(m) {
			t.Errorf("%s: metric %q is not declared in monitor/metrics/names.go", where, m)
		}
	}
	for _, l := range ls {
		if !n.isLabel(l) {
			t.Errorf("%s: label %q is not declared in monitor/metrics/names.go", where, l)
		}
	}
	if len(ms) == 0 {
		t.Errorf("%s: expression %q uses no metric", where, expr)
	}
	return ms
}

func TestPromNamesTokenizer(t *testing.T) {
	ms, ls, err := promNames(`histogram_quantile(0.9, sum by (le) (rate(x_bucket{run="$run", le!="1e-3"}[$__rate_interval]))) > on(run) group_left() (2 / y offset 1h) and z`)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ms, []string{"x_bucket", "y", "z"}) || !slices.Equal(ls, []string{"le", "run", "le", "run"}) {
		t.Fatalf("metrics %v labels %v", ms, ls)
	}
	if _, _, err := promNames(`rat(x[5m])`); err == nil {
		t.Fatal("unknown function accepted")
	}
	if _, _, err := promNames(`sum(x`); err == nil {
		t.Fatal("unbalanced parenthesis accepted")
	}
}

// TestRulesUseExporterNames fails if rules.yml names a metric or label that
// the exporter does not declare in names.go.
func TestRulesUseExporterNames(t *testing.T) {
	names := readExporterNames(t)
	b, err := os.ReadFile("rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rf struct {
		Groups []struct {
			Rules []struct {
				Alert  string `yaml:"alert"`
				Record string `yaml:"record"`
				Expr   string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &rf); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			n++
			names.checkNames(t, "rules.yml "+r.Alert+r.Record, r.Expr)
		}
	}
	if n < 4 {
		t.Fatalf("rules.yml: %d rules, want at least 4", n)
	}
}

// TestRulesPromtool runs promtool's syntax check and the rule unit tests.
func TestRulesPromtool(t *testing.T) {
	promtool := lookPath(t, "promtool")
	for _, args := range [][]string{
		{"check", "rules", "rules.yml"},
		{"test", "rules", "rules_test.yml"},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
