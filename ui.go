package main

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
)

// uiFiles is the browser console: plain HTML, ES modules and CSS, served
// as they are, with no build step.
//
//go:embed ui
var uiFiles embed.FS

// uiCSP allows the console nothing but its own files and the API: no
// inline script or style, no other origin, no plugins, no framing.
const uiCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'" +
	"; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// uiContentTypes are the types of the console's files, by extension.
var uiContentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

// handleUIIndex handles GET /ui/: the console's page, whatever its query
// (the filters and the view live there).
func (s *server) handleUIIndex(w http.ResponseWriter, r *http.Request) error {
	return serveUIFile(w, r, "index.html")
}

// handleUIFile handles GET /ui/{file}: the console's scripts, styles and
// icon.
func (s *server) handleUIFile(w http.ResponseWriter, r *http.Request) error {
	return serveUIFile(w, r, r.PathValue("file"))
}

// serveUIFile writes one embedded file, with an ETag so a browser
// revalidates instead of downloading it again, and the console's CSP.
func serveUIFile(w http.ResponseWriter, r *http.Request, name string) error {
	typ, known := uiContentTypes[path.Ext(name)]
	b, err := fs.ReadFile(uiFiles, "ui/"+name)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrInvalid) || !known {
		return errRouteNotFound
	}
	if err != nil {
		return err
	}
	sum := sha256.Sum256(b)
	etag := `"` + hex.EncodeToString(sum[:8]) + `"`
	h := w.Header()
	h.Set("Content-Security-Policy", uiCSP)
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", etag)
	h.Set("Content-Type", typ)
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	w.WriteHeader(http.StatusOK)
	_, err = w.Write(b)
	return err
}

// wantsHTML tells a browser navigating to a page, which asks for
// text/html first, from an API client (curl sends */*, scripts JSON).
func wantsHTML(r *http.Request) bool {
	for part := range strings.SplitSeq(r.Header.Get("Accept"), ",") {
		typ, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err == nil && typ == "text/html" {
			return true
		}
	}
	return false
}
