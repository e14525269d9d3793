package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// apiDoc is the API reference, which shows an example of every route.
const apiDoc = "docs/api.md"

// docExample is a request a curl (or websocat) line in the docs makes.
type docExample struct{ method, path string }

// docExamples lists the requests of the curl and websocat lines of file.
func docExamples(t *testing.T, file string) []docExample {
	t.Helper()
	doc, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var examples []docExample
	url := regexp.MustCompile(`localhost:8080(/[^\s'"?]*)`)
	method := regexp.MustCompile(`(?:^|\s)(?:-X|--request)\s+([A-Z]+)`)
	data := regexp.MustCompile(`(?:^|\s)(?:-d|--data[a-z-]*|--json|-F)\s`)
	head := regexp.MustCompile(`(?:^|\s)(?:-I|--head)\s`)
	// A command may go on over lines that end in a backslash.
	for _, cmd := range strings.Split(strings.ReplaceAll(string(doc), "\\\n", " "), "\n") {
		if !strings.Contains(cmd, "curl ") && !strings.Contains(cmd, "websocat ") {
			continue
		}
		m := "GET"
		switch {
		case method.MatchString(cmd):
			m = method.FindStringSubmatch(cmd)[1]
		case data.MatchString(cmd):
			m = "POST"
		case head.MatchString(cmd):
			m = "HEAD"
		}
		for _, u := range url.FindAllStringSubmatch(cmd, -1) {
			examples = append(examples, docExample{m, u[1]})
		}
	}
	return examples
}

// servedBy tells which of examples route rt serves.
func servedBy(rt route, examples []docExample) []bool {
	m, path, _ := strings.Cut(rt.pattern, " ")
	pattern := regexp.QuoteMeta(strings.TrimSuffix(path, "{$}"))
	pattern = regexp.MustCompile(`\\\{[a-z]+\\\}`).ReplaceAllString(pattern, `[^/]+`)
	re := regexp.MustCompile("^" + pattern + "$")
	served := make([]bool, len(examples))
	for i, e := range examples {
		// HEAD is served by every GET route.
		served[i] = (e.method == m || e.method == "HEAD" && m == "GET") && re.MatchString(e.path)
	}
	return served
}

// TestDocsShowEveryRoute keeps a curl (or, for WebSocket, websocat)
// example of every route in docs/api.md, with the route's method, and no
// example of a route that is not served there or anywhere else in the
// docs.
func TestDocsShowEveryRoute(t *testing.T) {
	files, _ := filepath.Glob("docs/*.md")
	for _, file := range append(files, "README.md") {
		examples := docExamples(t, file)
		shown := make([]bool, len(examples))
		for _, rt := range (&server{}).routeList() {
			found := false
			for i, served := range servedBy(rt, examples) {
				shown[i] = shown[i] || served
				found = found || served
			}
			if !found && file == apiDoc {
				t.Errorf("%s has no curl example of %s", apiDoc, rt.pattern)
			}
		}
		for i, e := range examples {
			if !shown[i] {
				t.Errorf("%s shows %s %s, which is not served", file, e.method, e.path)
			}
		}
	}
}
