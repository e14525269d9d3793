package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// seenStatuses is every status the test servers answered on each route
// during the test run, by route ("GET /api/v1/incidents/{id}", as
// openapi.json names it). It is filled by recordStatuses and read by
// checkStatuses once every test has run.
var seenStatuses = struct {
	sync.Mutex
	byRoute map[string]map[int]bool
}{byRoute: map[string]map[int]bool{}}

// routeOf finds the route of a request as the server's mux does: the same
// patterns, with handlers that are never called.
var routeOf = sync.OnceValue(func() func(*http.Request) string {
	mux := http.NewServeMux()
	for _, rt := range (&server{}).routeList() {
		mux.Handle(rt.pattern, routeHandler{})
	}
	return func(r *http.Request) string {
		h, pattern := mux.Handler(r)
		if _, ok := h.(routeHandler); !ok {
			// Not a route: the mux's own 404 or 405, or a path it would
			// redirect to its clean form, which the server answers 404.
			return ""
		}
		method, path, _ := strings.Cut(pattern, " ")
		return method + " " + strings.TrimSuffix(path, "{$}")
	}
})

// recordStatuses wraps a test server's handler to note the status of every
// response on a route in seenStatuses.
func recordStatuses(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route := routeOf()(r)
		if route == "" {
			h.ServeHTTP(w, r)
			return
		}
		spy := &statusSpy{ResponseWriter: w, record: func(status int) {
			seenStatuses.Lock()
			defer seenStatuses.Unlock()
			if seenStatuses.byRoute[route] == nil {
				seenStatuses.byRoute[route] = map[int]bool{}
			}
			seenStatuses.byRoute[route][status] = true
		}}
		h.ServeHTTP(spy, r)
		spy.note(http.StatusOK) // a handler that writes nothing sends a 200
	})
}

// statusSpy notes the first final status written through it: a WebSocket
// upgrade is a 101 when the connection is taken over.
type statusSpy struct {
	http.ResponseWriter
	record func(int)
	noted  bool
}

func (s *statusSpy) note(status int) {
	if !s.noted {
		s.noted = true
		s.record(status)
	}
}

func (s *statusSpy) WriteHeader(status int) {
	if status >= 200 || status == http.StatusSwitchingProtocols {
		s.note(status)
	}
	s.ResponseWriter.WriteHeader(status)
}

func (s *statusSpy) Write(b []byte) (int, error) {
	s.note(http.StatusOK)
	return s.ResponseWriter.Write(b)
}

func (s *statusSpy) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusSpy) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	s.note(http.StatusSwitchingProtocols)
	return http.NewResponseController(s.ResponseWriter).Hijack()
}

func (s *statusSpy) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// checkStatuses runs after every test (testMain passes it m.Run's exit
// code) and fails the run if a route answered a status openapi.json does
// not document for it. Documented statuses that no test produced are
// listed with -v when the whole suite ran.
func checkStatuses(code int) int {
	documented, err := documentedStatuses()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: read openapi.json:", err)
		return 1
	}
	seenStatuses.Lock()
	defer seenStatuses.Unlock()
	var undocumented, unseen []string
	for route, statuses := range seenStatuses.byRoute {
		for status := range statuses {
			if !documented[route][status] {
				undocumented = append(undocumented, fmt.Sprintf("%s: %d", route, status))
			}
		}
	}
	for route, statuses := range documented {
		for status := range statuses {
			if !seenStatuses.byRoute[route][status] {
				unseen = append(unseen, fmt.Sprintf("%s: %d", route, status))
			}
		}
	}
	slices.Sort(undocumented)
	slices.Sort(unseen)
	if len(undocumented) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: the tests saw statuses that openapi.json does not document for their route:\n\t%s\n",
			strings.Join(undocumented, "\n\t"))
		code = 1
	}
	if run := flag.Lookup("test.run"); testing.Verbose() && run != nil && run.Value.String() == "" && len(seenStatuses.byRoute) > 0 {
		fmt.Printf("openapi.json documents %d statuses that no test produced:\n\t%s\n", len(unseen), strings.Join(unseen, "\n\t"))
	}
	return code
}

// httpMethods are the keys of an OpenAPI path item that are operations.
var httpMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// documentedStatuses reads the response statuses of every operation in
// openapi.json, by route.
func documentedStatuses() (map[string]map[int]bool, error) {
	var spec struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openapiJSON, &spec); err != nil {
		return nil, err
	}
	documented := map[string]map[int]bool{}
	for path, ops := range spec.Paths {
		for method, raw := range ops {
			if !slices.Contains(httpMethods, method) {
				continue // parameters, summary, description
			}
			var op struct {
				Responses map[string]json.RawMessage `json:"responses"`
			}
			if err := json.Unmarshal(raw, &op); err != nil {
				return nil, err
			}
			route := strings.ToUpper(method) + " " + path
			documented[route] = map[int]bool{}
			for code := range op.Responses {
				status, err := strconv.Atoi(code)
				if err != nil {
					return nil, fmt.Errorf("%s: response %q is not a status", route, code)
				}
				documented[route][status] = true
			}
		}
	}
	return documented, nil
}
