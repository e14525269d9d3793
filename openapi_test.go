package main

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// TestOpenAPIMatchesRoutes keeps openapi.json and routeList equal: every
// route documented, nothing documented that is not served.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var spec struct {
		OpenAPI    string                                `json:"openapi"`
		Info       map[string]any                        `json:"info"`
		Paths      map[string]map[string]json.RawMessage `json:"paths"`
		Components struct {
			SecuritySchemes map[string]struct {
				Type  string `json:"type"`
				Flows struct {
					Password struct {
						TokenURL string `json:"tokenUrl"`
					} `json:"password"`
				} `json:"flows"`
			} `json:"securitySchemes"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openapiJSON, &spec); err != nil {
		t.Fatalf("openapi.json is not valid JSON: %v", err)
	}
	if !strings.HasPrefix(spec.OpenAPI, "3.1.") || spec.Info["title"] == nil || spec.Info["version"] == nil {
		t.Errorf("openapi = %q, info = %v; want 3.1.x with a title and version", spec.OpenAPI, spec.Info)
	}
	passwordFlow := false
	for _, scheme := range spec.Components.SecuritySchemes {
		if scheme.Type == "oauth2" && scheme.Flows.Password.TokenURL == "/api/v1/login" {
			passwordFlow = true
		}
	}
	if !passwordFlow {
		t.Error("openapi.json has no OAuth2 password flow with tokenUrl /api/v1/login")
	}
	if s, ok := spec.Components.SecuritySchemes["ApiKey"]; !ok || s.Type != "http" {
		t.Error("openapi.json has no ApiKey security scheme (HTTP bearer, ik_ keys)")
	}

	var documented []string
	accessOf := map[string]string{} // "GET /path" -> x-access
	for path, ops := range spec.Paths {
		for method, op := range ops {
			if method == "parameters" || method == "summary" || method == "description" {
				continue
			}
			documented = append(documented, strings.ToUpper(method)+" "+path)
			var o struct {
				OperationID string                     `json:"operationId"`
				Responses   map[string]json.RawMessage `json:"responses"`
				Access      string                     `json:"x-access"`
			}
			if err := json.Unmarshal(op, &o); err != nil || o.OperationID == "" || len(o.Responses) == 0 {
				t.Errorf("%s %s: want an operationId and responses", method, path)
			}
			accessOf[strings.ToUpper(method)+" "+path] = o.Access
		}
	}
	var served []string
	for _, rt := range (&server{}).routeList() {
		method, path, _ := strings.Cut(rt.pattern, " ")
		route := method + " " + strings.TrimSuffix(path, "{$}")
		served = append(served, route)
		if got, ok := accessOf[route]; ok && got != rt.access.name {
			t.Errorf("%s: openapi.json says x-access %q, the server enforces %q", route, got, rt.access.name)
		}
	}
	slices.Sort(documented)
	slices.Sort(served)
	for _, r := range served {
		if !slices.Contains(documented, r) {
			t.Errorf("route %s is served but not in openapi.json", r)
		}
	}
	for _, d := range documented {
		if !slices.Contains(served, d) {
			t.Errorf("openapi.json documents %s, which is not served", d)
		}
	}
}

func TestDocsPages(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.docsSwaggerJS = "/static/swagger-ui-bundle.js" })
	for _, tt := range []struct {
		path, contentType, contains string
		csp                         string
	}{
		{"/openapi.json", "application/json", `"openapi"`, ""},
		{"/api/v1/openapi.json", "application/json", `"openapi"`, ""},
		// A viewer served by the server itself needs no other source.
		{"/docs", "text/html; charset=utf-8", `src="/static/swagger-ui-bundle.js"`, "default-src 'none'; script-src 'self'; " +
			"style-src 'self' https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css 'unsafe-inline' https://fonts.googleapis.com; " +
			"font-src https://fonts.gstatic.com; img-src 'self' data:; worker-src blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"},
		{"/docs/init.js", "text/javascript; charset=utf-8", `url: "/openapi.json"`, ""},
		{"/redoc", "text/html; charset=utf-8", "redoc.standalone.js", "default-src 'none'; " +
			"script-src 'self' https://cdn.jsdelivr.net/npm/redoc@2/bundles/redoc.standalone.js; " +
			"style-src 'self' 'unsafe-inline' https://fonts.googleapis.com; font-src https://fonts.gstatic.com; img-src 'self' data:; worker-src blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"},
	} {
		r := ts.request(t, "GET", tt.path, "").mustStatus(t, "GET "+tt.path, http.StatusOK)
		if csp := r.header.Get("Content-Security-Policy"); csp != tt.csp {
			t.Errorf("GET %s Content-Security-Policy = %q, want %q", tt.path, csp, tt.csp)
		}
		if got := r.header.Get("Content-Type"); got != tt.contentType {
			t.Errorf("GET %s Content-Type = %q, want %q", tt.path, got, tt.contentType)
		}
		if !strings.Contains(string(r.body), tt.contains) {
			t.Errorf("GET %s body does not contain %q", tt.path, tt.contains)
		}
	}
}
