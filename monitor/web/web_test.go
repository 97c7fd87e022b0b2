package web

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, method, path string) *http.Response {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec.Result()
}

// TestHandlerRoutesAndHeaders checks what the page serves, with which types,
// and that every answer, errors included, carries the security headers.
func TestHandlerRoutesAndHeaders(t *testing.T) {
	h := Handler()
	for _, c := range []struct {
		method, path string
		code         int
		ctype        string
	}{
		{"GET", "/", 200, "text/html; charset=utf-8"},
		{"HEAD", "/", 200, "text/html; charset=utf-8"},
		{"GET", "/static/app.js", 200, "text/javascript; charset=utf-8"},
		{"GET", "/static/app.css", 200, "text/css; charset=utf-8"},
		{"GET", "/static/favicon.svg", 200, "image/svg+xml"},
		{"GET", "/static/vendor/uplot/uPlot.iife.min.js", 200, "text/javascript; charset=utf-8"},
		{"GET", "/static/vendor/uplot/uPlot.min.css", 200, "text/css; charset=utf-8"},
		{"GET", "/static/", 404, ""},
		{"GET", "/static/vendor/", 404, ""},
		{"GET", "/static/index.html", 404, ""},
		{"GET", "/static/nope.js", 404, ""},
		{"GET", "/index.html", 404, ""},
		{"GET", "/api/runs", 404, ""}, // the API is mounted beside the page, not by it
		{"POST", "/", 405, ""},
		{"PUT", "/static/app.js", 405, ""},
		{"DELETE", "/", 405, ""},
	} {
		resp := get(t, h, c.method, c.path)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != c.code {
			t.Errorf("%s %s: status %d, want %d (%s)", c.method, c.path, resp.StatusCode, c.code, body)
		}
		if c.ctype != "" && resp.Header.Get("Content-Type") != c.ctype {
			t.Errorf("%s %s: Content-Type %q, want %q", c.method, c.path, resp.Header.Get("Content-Type"), c.ctype)
		}
		if got := resp.Header.Get("Content-Security-Policy"); got != CSP {
			t.Errorf("%s %s: Content-Security-Policy %q, want %q", c.method, c.path, got, CSP)
		}
		if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("%s %s: X-Content-Type-Options %q", c.method, c.path, got)
		}
		if c.method == "HEAD" && len(body) != 0 {
			t.Errorf("HEAD %s: %d bytes of body", c.path, len(body))
		}
	}
}

// TestCSPAllowsOnlySelf parses the policy: every fetch directive is 'self'
// or 'none', nothing inline, eval'd, or from another origin.
func TestCSPAllowsOnlySelf(t *testing.T) {
	dirs := map[string]string{}
	for _, d := range strings.Split(CSP, ";") {
		f := strings.Fields(d)
		if len(f) == 0 {
			continue
		}
		dirs[f[0]] = strings.Join(f[1:], " ")
		for _, src := range f[1:] {
			if src != "'self'" && src != "'none'" {
				t.Errorf("directive %s allows %s", f[0], src)
			}
		}
	}
	for d, want := range map[string]string{
		"default-src": "'none'", "script-src": "'self'", "style-src": "'self'", "connect-src": "'self'",
		"frame-ancestors": "'none'", "base-uri": "'none'", "form-action": "'none'",
	} {
		if dirs[d] != want {
			t.Errorf("%s = %q, want %q", d, dirs[d], want)
		}
	}
}

var (
	reTag       = regexp.MustCompile(`(?is)<(script|style|link|img|iframe|object|embed)\b([^>]*)>`)
	reAttr      = regexp.MustCompile(`(?i)\b(src|href)\s*=\s*"([^"]*)"`)
	reInlineAtt = regexp.MustCompile(`(?i)\s(on[a-z]+|style)\s*=`)
	reScript    = regexp.MustCompile(`(?is)<script\b[^>]*>(.*?)</script>`)
)

// TestIndexHasNoInlineCode checks the page against its own policy before a
// browser does: no inline script, style or event handler, and every
// referenced file is embedded (so nothing comes from a CDN).
func TestIndexHasNoInlineCode(t *testing.T) {
	files, err := fs.Sub(static, "static")
	if err != nil {
		t.Fatal(err)
	}
	b, err := fs.ReadFile(files, "index.html")
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)
	if m := reInlineAtt.FindString(page); m != "" {
		t.Errorf("index.html has an inline attribute %q", m)
	}
	for _, m := range reScript.FindAllStringSubmatch(page, -1) {
		if strings.TrimSpace(m[1]) != "" {
			t.Errorf("index.html has an inline script: %.60q", m[1])
		}
	}
	refs := 0
	for _, m := range reTag.FindAllStringSubmatch(page, -1) {
		if strings.EqualFold(m[1], "style") {
			t.Errorf("index.html has a <style> element")
			continue
		}
		for _, a := range reAttr.FindAllStringSubmatch(m[2], -1) {
			ref := a[2]
			name, ok := strings.CutPrefix(ref, "static/")
			if !ok {
				t.Errorf("<%s %s=%q>: want a relative static/ file", m[1], a[1], ref)
				continue
			}
			if _, err := fs.Stat(files, name); err != nil {
				t.Errorf("<%s %s=%q>: not embedded: %v", m[1], a[1], ref, err)
			}
			refs++
		}
	}
	if refs < 4 {
		t.Errorf("index.html references %d files; want the two scripts, the two style sheets and the icon", refs)
	}
}

// TestVendoredUPlot checks the vendored files against the sums that
// refresh-uplot.sh wrote into uplot.pin after verifying the npm tarball, so
// a hand edit (or a partial refresh) of the vendored library fails.
func TestVendoredUPlot(t *testing.T) {
	f, err := os.Open("uplot.pin")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var version, integrity string
	sums := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) == 2 && fields[0] == "version":
			version = fields[1]
		case len(fields) == 2 && fields[0] == "integrity":
			integrity = fields[1]
		case len(fields) == 3 && fields[0] == "sha256":
			sums[fields[1]] = fields[2]
		}
	}
	if !regexp.MustCompile(`^\d+\.\d+\.\d+$`).MatchString(version) || !strings.HasPrefix(integrity, "sha512-") {
		t.Fatalf("uplot.pin: version %q, integrity %q: want an exact version and the registry's sha512", version, integrity)
	}
	for _, name := range []string{"uPlot.iife.min.js", "uPlot.min.css", "LICENSE"} {
		b, err := static.ReadFile("static/vendor/uplot/" + name)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		sum := sha256.Sum256(b)
		if got := hex.EncodeToString(sum[:]); got != sums[name] {
			t.Errorf("%s: sha256 %s, uplot.pin says %q: run monitor/web/refresh-uplot.sh", name, got, sums[name])
		}
	}
}
