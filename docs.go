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

// docsPages holds what the documentation pages share: a message that the
// viewer could not be loaded. The pages load their viewers from a CDN, as
// FastAPI's do, unless DOCS_SWAGGER_JS, DOCS_SWAGGER_CSS and DOCS_REDOC_JS
// point them elsewhere; on a network without internet access the viewer
// never runs, and the page would stay blank. The message says why, what to
// read instead and what to set. It appears after a few seconds, so that a
// viewer that loads is not preceded by a warning, or at once when
// /docs/init.js finds no viewer, and init.js removes it when there is one.
var docsPages = template.Must(template.New("unavailable-style").Parse(`<style>
#docs-unavailable { max-width: 42em; margin: 2em auto; padding: 0 1em; font: 16px/1.5 sans-serif; animation: docs-wait 0s 3s both }
#docs-unavailable.failed { animation: none }
@keyframes docs-wait { from { visibility: hidden } }
</style>
{{define "unavailable"}}<div id="docs-unavailable">
<h1>Incidents API</h1>
<p><strong>The API viewer could not be loaded.</strong>
This page shows the API with {{.Viewer}}, which your browser loads from
{{range $i, $url := .Assets}}{{if $i}} and {{end}}<code>{{$url}}</code>{{end}};
it could not reach {{if eq (len .Assets) 1}}that address{{else}}those addresses{{end}} (is this a network without internet access?), or scripts are turned off.</p>
<p>The API is described in <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1),
and explained in docs/api.md in the source.</p>
<p>To use the viewers without internet access, serve copies of them on your network and point the server at them:
<code>DOCS_SWAGGER_JS</code> and <code>DOCS_SWAGGER_CSS</code> (swagger-ui-dist's swagger-ui-bundle.js and swagger-ui.css)
for /docs, <code>DOCS_REDOC_JS</code> (redoc's bundles/redoc.standalone.js) for /redoc.</p>
</div>{{end}}`))

var (
	swaggerPage = template.Must(template.Must(docsPages.Clone()).New("docs").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Incidents API - Swagger UI</title>
<link rel="stylesheet" href="{{.CSS}}">
{{template "unavailable-style"}}
</head>
<body>
<div id="swagger-ui"></div>
{{template "unavailable" .}}
<script src="{{.JS}}"></script>
<script src="/docs/init.js"></script>
</body>
</html>
`))
	redocPage = template.Must(template.Must(docsPages.Clone()).New("redoc").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Incidents API - ReDoc</title>
{{template "unavailable-style"}}
</head>
<body>
<redoc spec-url="/openapi.json"></redoc>
{{template "unavailable" .}}
<script src="{{.JS}}"></script>
<script src="/docs/init.js"></script>
</body>
</html>
`))
)

// docsPage is what a documentation page shows.
type docsPage struct {
	Viewer  string
	JS, CSS string   // the viewer's files
	Assets  []string // the URLs of those, as the page names them
}

// docsInit runs after the viewer's script on /docs and /redoc, whether it
// loaded or not: it removes the page's message that the viewer could not
// be loaded and starts Swagger UI (ReDoc starts itself on <redoc>), or,
// without a viewer, shows the message at once. It is served as a script
// of its own so the pages need no inline script.
const docsInit = `(function () {
  var unavailable = document.getElementById("docs-unavailable");
  if (typeof SwaggerUIBundle !== "function" && typeof Redoc !== "object") {
    unavailable.classList.add("failed");
    return;
  }
  unavailable.remove();
  if (typeof SwaggerUIBundle === "function") {
    window.ui = SwaggerUIBundle({
      url: "/openapi.json",
      dom_id: "#swagger-ui",
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout",
      persistAuthorization: true
    });
  }
})();
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
	return swaggerPage.Execute(w, docsPage{Viewer: "Swagger UI", JS: s.cfg.docsSwaggerJS, CSS: s.cfg.docsSwaggerCSS,
		Assets: []string{s.cfg.docsSwaggerJS, s.cfg.docsSwaggerCSS}})
}

// handleDocsInit handles GET /docs/init.js, the script of /docs and /redoc.
func (s *server) handleDocsInit(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	_, err := w.Write([]byte(docsInit))
	return err
}

// handleRedoc handles GET /redoc.
func (s *server) handleRedoc(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", docsCSP([]string{s.cfg.docsRedocJS}, nil))
	return redocPage.Execute(w, docsPage{Viewer: "ReDoc", JS: s.cfg.docsRedocJS, Assets: []string{s.cfg.docsRedocJS}})
}
