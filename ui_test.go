package main

import (
	"io/fs"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// uiBudget is the most the console's files may weigh, uncompressed.
const uiBudget = 150 * 1024

// TestUIFiles serves every file of the console with its content type,
// the console's CSP and an ETag that answers 304; anything else under
// /ui/ is the API's JSON 404.
func TestUIFiles(t *testing.T) {
	ts := newTestServer(t)
	for _, tt := range []struct {
		path, contentType, contains string
	}{
		{"/ui/", "text/html; charset=utf-8", `<script type="module" src="/ui/app.js"></script>`},
		{"/ui/?status=open&severity=high", "text/html; charset=utf-8", `<link rel="stylesheet" href="/ui/app.css">`},
		{"/ui/index.html", "text/html; charset=utf-8", "<title>Incidents</title>"},
		{"/ui/app.js", "text/javascript; charset=utf-8", `from "./api.js"`},
		{"/ui/api.js", "text/javascript; charset=utf-8", "export class Stream"},
		{"/ui/dom.js", "text/javascript; charset=utf-8", "export function el"},
		{"/ui/app.css", "text/css; charset=utf-8", "prefers-color-scheme: dark"},
		{"/ui/icon.svg", "image/svg+xml", "<svg"},
	} {
		r := ts.request(t, "GET", tt.path, "").mustStatus(t, "GET "+tt.path, http.StatusOK)
		if got := r.header.Get("Content-Type"); got != tt.contentType {
			t.Errorf("GET %s Content-Type = %q, want %q", tt.path, got, tt.contentType)
		}
		if got := r.header.Get("Content-Security-Policy"); got != uiCSP {
			t.Errorf("GET %s Content-Security-Policy = %q, want %q", tt.path, got, uiCSP)
		}
		if !strings.Contains(string(r.body), tt.contains) {
			t.Errorf("GET %s body does not contain %q", tt.path, tt.contains)
		}
		etag := r.header.Get("ETag")
		if etag == "" {
			t.Errorf("GET %s has no ETag", tt.path)
			continue
		}
		again := ts.request(t, "GET", tt.path, "", "If-None-Match", etag).mustStatus(t, "GET "+tt.path+" If-None-Match", http.StatusNotModified)
		if len(again.body) != 0 {
			t.Errorf("GET %s If-None-Match: body of %d bytes, want none", tt.path, len(again.body))
		}
	}
	for _, path := range []string{"/ui/nope.js", "/ui/app.go", "/ui/.hidden", "/ui/ui", "/ui/sub/app.js", "/ui"} {
		r := ts.request(t, "GET", path, "").mustStatus(t, "GET "+path, http.StatusNotFound)
		if got := r.header.Get("Content-Type"); got != "application/json" {
			t.Errorf("GET %s Content-Type = %q, want the API's JSON error", path, got)
		}
	}
}

// TestUICSPIsStrict pins the console's policy: its own origin only, no
// inline script or style, nothing framed or embedded.
func TestUICSPIsStrict(t *testing.T) {
	for _, want := range []string{"default-src 'self'", "script-src 'self'", "style-src 'self'", "object-src 'none'", "frame-ancestors 'none'", "base-uri 'none'"} {
		if !strings.Contains(uiCSP, want+";") && !strings.HasSuffix(uiCSP, want) {
			t.Errorf("uiCSP = %q, want %q in it", uiCSP, want)
		}
	}
	for _, bad := range []string{"unsafe-inline", "unsafe-eval", "http:", "https:", "*", "data: "} {
		if strings.Contains(strings.ReplaceAll(uiCSP, "img-src 'self' data:", ""), bad) {
			t.Errorf("uiCSP = %q allows %q", uiCSP, bad)
		}
	}
}

// TestUIRootRedirect sends a browser at / to the console, and keeps the
// JSON for everyone else.
func TestUIRootRedirect(t *testing.T) {
	ts := newTestServer(t)
	ts.Client().CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for _, tt := range []struct {
		accept     string
		wantStatus int
	}{
		{"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", http.StatusSeeOther}, // Chromium, Firefox
		{"text/html", http.StatusSeeOther},
		{"", http.StatusOK},
		{"*/*", http.StatusOK}, // curl
		{"application/json", http.StatusOK},
		{"application/json, text/plain, */*", http.StatusOK},
		{"nonsense;;", http.StatusOK},
	} {
		var headers []string
		if tt.accept != "" {
			headers = []string{"Accept", tt.accept}
		}
		r := ts.request(t, "GET", "/", "", headers...).mustStatus(t, "GET / Accept: "+tt.accept, tt.wantStatus)
		if got := r.header.Get("Vary"); got != "Accept" {
			t.Errorf("GET / Accept: %s: Vary = %q, want Accept", tt.accept, got)
		}
		if tt.wantStatus == http.StatusSeeOther {
			if got := r.header.Get("Location"); got != "/ui/" {
				t.Errorf("GET / Accept: %s: Location = %q, want /ui/", tt.accept, got)
			}
			continue
		}
		var root map[string]string
		r.json(t, &root)
		if root["name"] != "incidents" || root["version"] != readBuildInfo().Version {
			t.Errorf("GET / Accept: %s = %s, want the service information", tt.accept, r.body)
		}
	}
}

// TestUISizeBudget keeps the console small: every embedded file
// together under uiBudget.
func TestUISizeBudget(t *testing.T) {
	total := 0
	err := fs.WalkDir(uiFiles, "ui", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(uiFiles, path)
		total += len(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if total == 0 || total > uiBudget {
		t.Errorf("the console's files weigh %d bytes, want 1 to %d", total, uiBudget)
	}
	t.Logf("the console's files weigh %d bytes of %d", total, uiBudget)
}

// TestUIHasNoInlineCode checks what the CSP would refuse, before a
// browser does: no inline script, style element or attribute, or event
// handler attribute in the page; no markup built from strings and no
// style attribute set from the scripts; every file the page and modules
// name is embedded; and no file anywhere else is loaded.
func TestUIHasNoInlineCode(t *testing.T) {
	files := map[string]string{}
	entries, err := fs.ReadDir(uiFiles, "ui")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := fs.ReadFile(uiFiles, "ui/"+e.Name())
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = string(b)
	}
	page := files["index.html"]
	for _, bad := range []*regexp.Regexp{
		regexp.MustCompile(`<script(?:\s[^>]*)?>[^<]`),     // an inline script
		regexp.MustCompile(`<style`),                       // a style element
		regexp.MustCompile(`\sstyle\s*=`),                  // a style attribute
		regexp.MustCompile(`\son[a-z]+\s*=`),               // an event handler attribute
		regexp.MustCompile(`(?:src|href)="(?:https?:)?//`), // another origin
	} {
		if m := bad.FindString(page); m != "" {
			t.Errorf("index.html has %q, which the CSP refuses", m)
		}
	}
	for _, tag := range regexp.MustCompile(`<script[^>]*>`).FindAllString(page, -1) {
		if !strings.Contains(tag, ` src="/ui/`) {
			t.Errorf("index.html has %s, want only scripts from /ui/", tag)
		}
	}
	for _, m := range regexp.MustCompile(`(?:src|href)="/ui/([^"?]+)"`).FindAllStringSubmatch(page, -1) {
		if _, ok := files[m[1]]; !ok {
			t.Errorf("index.html loads /ui/%s, which is not embedded", m[1])
		}
	}
	for name, src := range files {
		if !strings.HasSuffix(name, ".js") {
			continue
		}
		for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", `setAttribute("style"`, ".style.", "http://", "https://cdn"} {
			if strings.Contains(src, bad) {
				t.Errorf("%s uses %s", name, bad)
			}
		}
		for _, m := range regexp.MustCompile(`(?m)^import .* from "\./([^"]+)";`).FindAllStringSubmatch(src, -1) {
			if _, ok := files[m[1]]; !ok {
				t.Errorf("%s imports ./%s, which is not embedded", name, m[1])
			}
		}
	}
}

// TestUIContrast checks the console's claim that its colours meet WCAG
// AA: every text colour on every background it is shown on has a contrast
// ratio of at least 4.5, in the light and the dark scheme.
func TestUIContrast(t *testing.T) {
	css, err := uiFiles.ReadFile("ui/app.css")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile(`(?s):root \{(.*?)\}`).FindAllStringSubmatch(string(css), -1)
	if len(blocks) != 2 {
		t.Fatalf("found %d :root blocks in app.css, want 2 (light, then dark)", len(blocks))
	}
	texts := []string{"fg", "muted", "accent", "critical", "high", "medium", "low", "ok", "bad"}
	backgrounds := []string{"bg", "panel", "fresh", "sel"}
	for i, scheme := range []string{"light", "dark"} {
		colors := map[string][3]float64{}
		for _, m := range regexp.MustCompile(`--([a-z]+): #([0-9a-f]{6});`).FindAllStringSubmatch(blocks[i][1], -1) {
			var c [3]float64
			for j := range 3 {
				v, _ := strconv.ParseUint(m[2][2*j:2*j+2], 16, 8)
				c[j] = float64(v) / 255
			}
			colors[m[1]] = c
		}
		pairs := [][2]string{{"bg", "accent"}} // a primary button's label
		for _, fg := range texts {
			for _, bg := range backgrounds {
				pairs = append(pairs, [2]string{fg, bg})
			}
		}
		for _, p := range pairs {
			fg, okF := colors[p[0]]
			bg, okB := colors[p[1]]
			if !okF || !okB {
				t.Fatalf("%s scheme: --%s or --%s is not a #rrggbb colour in app.css", scheme, p[0], p[1])
			}
			if r := contrastRatio(fg, bg); r < 4.5 {
				t.Errorf("%s scheme: --%s on --%s has contrast %.2f, want at least 4.5", scheme, p[0], p[1], r)
			}
		}
	}
}

// contrastRatio is WCAG 2's contrast ratio of two sRGB colours.
func contrastRatio(a, b [3]float64) float64 {
	luminance := func(c [3]float64) float64 {
		var l [3]float64
		for i, v := range c {
			if v <= 0.04045 {
				l[i] = v / 12.92
			} else {
				l[i] = math.Pow((v+0.055)/1.055, 2.4)
			}
		}
		return 0.2126*l[0] + 0.7152*l[1] + 0.0722*l[2]
	}
	la, lb := luminance(a), luminance(b)
	return (max(la, lb) + 0.05) / (min(la, lb) + 0.05)
}
