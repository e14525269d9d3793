package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestDocsPagesInChromium loads /docs and /redoc in a headless Chromium.
// With the viewers' files unreachable, as on a network without internet
// access, each page says so in words, links /openapi.json and the prose
// docs, and names the variables that point at a local copy; with viewers
// that load (stand-ins served here), that message goes and the viewer
// starts. Both run under the pages' Content-Security-Policy.
func TestDocsPagesInChromium(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("this test needs Chromium to load the documentation pages, and found none: %v\n"+
			"Install it (Debian: apt-get install chromium); .ci/run does.", err)
	}
	// The stand-ins do what the viewers do to the page: Swagger UI is
	// started by /docs/init.js, ReDoc starts itself on <redoc>.
	viewers := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/swagger-ui-bundle.js":
			w.Header().Set("Content-Type", "text/javascript")
			io.WriteString(w, `window.SwaggerUIBundle = function (o) {
  document.querySelector(o.dom_id).textContent = "Swagger UI shows " + o.url;
};
SwaggerUIBundle.presets = {apis: {}};
`)
		case "/redoc.standalone.js":
			w.Header().Set("Content-Type", "text/javascript")
			io.WriteString(w, `window.Redoc = {};
var el = document.querySelector("redoc");
el.textContent = "ReDoc shows " + el.getAttribute("spec-url");
`)
		case "/swagger-ui.css":
			w.Header().Set("Content-Type", "text/css")
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(viewers.Close)
	at := func(base string) func(*config) {
		return func(c *config) {
			c.docsSwaggerJS = base + "/swagger-ui-bundle.js"
			c.docsSwaggerCSS = base + "/swagger-ui.css"
			c.docsRedocJS = base + "/redoc.standalone.js"
		}
	}
	const unreachable = "http://127.0.0.1:1" // nothing listens on port 1
	offline, online := newTestServer(t, at(unreachable)), newTestServer(t, at(viewers.URL))
	unavailable := []string{
		`<div id="docs-unavailable" class="failed">`, // init.js ran and found no viewer
		"The API viewer could not be loaded.",
		`<a href="/openapi.json">/openapi.json</a>`,
		"docs/api.md in the source",
		"DOCS_SWAGGER_JS", "DOCS_SWAGGER_CSS", "DOCS_REDOC_JS",
	}
	for _, tt := range []struct {
		name        string
		url         string
		want        []string
		wantMissing []string
	}{
		{"/docs offline", offline.URL + "/docs",
			append(unavailable, "Swagger UI", "<code>"+unreachable+"/swagger-ui-bundle.js</code>"), nil},
		{"/redoc offline", offline.URL + "/redoc",
			append(unavailable, "ReDoc", "<code>"+unreachable+"/redoc.standalone.js</code>"), nil},
		{"/docs online", online.URL + "/docs", []string{"Swagger UI shows /openapi.json"}, []string{"docs-unavailable\""}},
		{"/redoc online", online.URL + "/redoc", []string{"ReDoc shows /openapi.json"}, []string{"docs-unavailable\""}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dom := dumpDOM(t, chromium, tt.url)
			var wrong []string
			for _, s := range tt.want {
				if !strings.Contains(dom, s) {
					wrong = append(wrong, fmt.Sprintf("no %q", s))
				}
			}
			for _, s := range tt.wantMissing {
				if strings.Contains(dom, s) {
					wrong = append(wrong, fmt.Sprintf("%q", s))
				}
			}
			if len(wrong) > 0 {
				t.Errorf("Chromium's DOM of %s has %s:\n%s", tt.url, strings.Join(wrong, ", "), dom)
			}
		})
	}
}

// dumpDOM loads url in a headless Chromium and returns the document as
// it is once the page has loaded and its scripts have run.
func dumpDOM(t *testing.T, chromium, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu",
		"--disable-background-networking", "--disable-component-update", "--no-first-run",
		"--user-data-dir="+t.TempDir(), "--dump-dom", url)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom %s: %v\n%s", url, err, stderr.String())
	}
	return string(out)
}
