package main

import (
	_ "embed"
	"html/template"
	"net/http"
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

// handleDocs handles GET /docs.
func (s *server) handleDocs(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
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
	return redocPage.Execute(w, map[string]string{"JS": s.cfg.docsRedocJS})
}
