package main

import (
	_ "embed"
	"html/template"
	"net/http"
	"strings"
)

//go:embed openapi.json
var openapiJSON []byte

// handleOpenAPI handles GET /openapi.json and GET /api/v1/openapi.json.
func (s *server) handleOpenAPI(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	_, err := w.Write(openapiJSON)
	return err
}

// The documentation pages load their viewers from a CDN, as FastAPI's do;
// DOCS_SWAGGER_JS, DOCS_SWAGGER_CSS and DOCS_REDOC_JS point them elsewhere
// for sites without internet access.
var (
	swaggerPage = template.Must(template.New("docs").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Incidents API - Swagger UI</title>
<link rel="stylesheet" href="{{.CSS}}">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{{.JS}}"></script>
<script src="/docs/init.js"></script>
</body>
</html>
`))
	redocPage = template.Must(template.New("redoc").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Incidents API - ReDoc</title>
</head>
<body>
<redoc spec-url="/openapi.json"></redoc>
<script src="{{.JS}}"></script>
</body>
</html>
`))
)

// swaggerInit starts Swagger UI. It is served as a script of its own so the
// page needs no inline script.
const swaggerInit = `window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  persistAuthorization: true
});
`

// docsCSP lets a documentation page load only its own files and the
// viewer's, by their exact configured URLs (a CDN serves every package, not
// just the viewer). Both viewers set inline styles, ReDoc runs a worker from
// a blob and loads Google fonts.
func docsCSP(scripts, styles []string) string {
	sources := func(urls []string) string {
		list := "'self'"
		for _, u := range urls {
			if strings.HasPrefix(u, "https://") || strings.HasPrefix(u, "http://") {
				list += " " + u
			}
		}
		return list
	}
	return "default-src 'none'; script-src " + sources(scripts) + "; style-src " + sources(styles) + " 'unsafe-inline' https://fonts.googleapis.com" +
		"; font-src https://fonts.gstatic.com; img-src 'self' data:; worker-src blob:; connect-src 'self'" +
		"; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}

// handleDocs handles GET /docs.
func (s *server) handleDocs(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", docsCSP([]string{s.cfg.docsSwaggerJS}, []string{s.cfg.docsSwaggerCSS}))
	return swaggerPage.Execute(w, map[string]string{"JS": s.cfg.docsSwaggerJS, "CSS": s.cfg.docsSwaggerCSS})
}

// handleDocsInit handles GET /docs/init.js.
func (s *server) handleDocsInit(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	_, err := w.Write([]byte(swaggerInit))
	return err
}

// handleRedoc handles GET /redoc.
func (s *server) handleRedoc(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", docsCSP([]string{s.cfg.docsRedocJS}, nil))
	return redocPage.Execute(w, map[string]string{"JS": s.cfg.docsRedocJS})
}
