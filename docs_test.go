package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// apiDoc is the API reference, which shows an example of every route.
const apiDoc = "docs/api.md"

// TestDocsShowEveryRoute keeps a curl (or, for WebSocket, websocat)
// example of every route in docs/api.md, with the route's method, and no
// example of one that is not served.
func TestDocsShowEveryRoute(t *testing.T) {
	doc, err := os.ReadFile(apiDoc)
	if err != nil {
		t.Fatal(err)
	}
	type example struct{ method, path string }
	var examples []example
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
			examples = append(examples, example{m, u[1]})
		}
	}
	shown := make([]bool, len(examples))
	for _, rt := range (&server{}).routeList() {
		m, path, _ := strings.Cut(rt.pattern, " ")
		pattern := regexp.QuoteMeta(strings.TrimSuffix(path, "{$}"))
		pattern = regexp.MustCompile(`\\\{[a-z]+\\\}`).ReplaceAllString(pattern, `[^/]+`)
		re := regexp.MustCompile("^" + pattern + "$")
		found := false
		for i, e := range examples {
			// HEAD is served by every GET route.
			if (e.method == m || e.method == "HEAD" && m == "GET") && re.MatchString(e.path) {
				shown[i], found = true, true
			}
		}
		if !found {
			t.Errorf("%s has no curl example of %s", apiDoc, rt.pattern)
		}
	}
	for i, e := range examples {
		if !shown[i] {
			t.Errorf("%s shows %s %s, which is not served", apiDoc, e.method, e.path)
		}
	}
}
