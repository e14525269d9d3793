package main

import (
	"bufio"
	"bytes"
	"database/sql"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

func TestIncidentCreateValidation(t *testing.T) {
	ts := newTestServer(t)
	for _, tt := range []struct {
		name      string
		body      string
		wantTypes []string
	}{
		{"missing title and severity", `{"description":"x"}`, []string{"missing@body.title", "missing@body.severity"}},
		{"several problems at once", `{"title":"","description":5,"severity":"urgent"}`, []string{"string_too_short@body.title", "string_type@body.description", "enum@body.severity"}},
		{"blank title", `{"title":"   ","severity":"low"}`, []string{"string_too_short@body.title"}},
		{"long title", `{"title":"` + strings.Repeat("t", 201) + `","severity":"low"}`, []string{"string_too_long@body.title"}},
		{"long description", `{"title":"t","description":"` + strings.Repeat("d", 10001) + `","severity":"low"}`, []string{"string_too_long@body.description"}},
		{"severity is case-sensitive", `{"title":"t","severity":"High"}`, []string{"enum@body.severity"}},
		{"field names are case-sensitive", `{"Title":"t","SEVERITY":"low"}`, []string{"missing@body.title", "missing@body.severity"}},
		{"severity not a string", `{"title":"t","severity":3}`, []string{"string_type@body.severity"}},
		{"title not a string", `{"title":["t"],"severity":"low"}`, []string{"string_type@body.title"}},
		{"NUL in title", `{"title":"a\u0000b","severity":"low"}`, []string{"value_error@body.title"}},
		{"NUL in description", `{"title":"t","description":"\u0000","severity":"low"}`, []string{"value_error@body.description"}},
		{"invalid JSON", `{"title":"t",`, []string{"json_invalid@body"}},
		{"empty body", ``, []string{"json_invalid@body"}},
		{"not an object", `"disk full"`, []string{"model_attributes_type@body"}},
		{"null body", `null`, []string{"model_attributes_type@body"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts.request(t, "POST", "/api/v1/incidents", tt.body, "Content-Type", "application/json").mustProblems(t, "POST /api/v1/incidents", tt.wantTypes...)
		})
	}
	var n int
	if err := ts.st.db.QueryRow(`SELECT count(*) FROM incidents`).Scan(&n); err != nil || n != 0 {
		t.Errorf("incidents stored after invalid requests = %d (%v), want 0", n, err)
	}
}

func TestIncidentCreate(t *testing.T) {
	ts := newTestServer(t)
	r := ts.request(t, "POST", "/api/v1/incidents", `{"title":"Disk full","description":"/var at 100%","severity":"critical","unknown":1}`)
	r.mustStatus(t, "create", http.StatusCreated)
	var body map[string]any
	r.json(t, &body)
	wantKeys := []string{"acknowledged_at", "acknowledged_by", "created_at", "dedup_key", "description", "details", "id", "labels",
		"last_occurred_at", "links", "occurrences", "resolved_at", "resolved_by", "severity", "source", "status", "title", "updated_at", "version"}
	var keys []string
	for k := range body {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if !reflect.DeepEqual(keys, wantKeys) {
		t.Errorf("incident keys = %v, want %v", keys, wantKeys)
	}
	if body["source"] != "api" || fmt.Sprint(body["links"]) != "[]" || fmt.Sprint(body["details"]) != "map[]" {
		t.Errorf("a REST report's source, links, details = %v, %v, %v; want \"api\", [], {}", body["source"], body["links"], body["details"])
	}
	if body["title"] != "Disk full" || body["description"] != "/var at 100%" || body["severity"] != "critical" ||
		body["status"] != "open" || body["resolved_at"] != nil || body["resolved_by"] != nil {
		t.Errorf("incident = %v", body)
	}
	created, _ := body["created_at"].(string)
	if _, err := time.Parse(time.RFC3339, created); err != nil || !strings.HasSuffix(created, "Z") {
		t.Errorf("created_at = %q, want RFC 3339 in UTC", created)
	}

	// description is optional; unicode counts in characters, not bytes.
	r = ts.request(t, "POST", "/api/v1/incidents", `{"title":"`+strings.Repeat("é", 200)+`","severity":"low"}`)
	r.mustStatus(t, "200-character title", http.StatusCreated)
	r.json(t, &body)
	if body["description"] != "" {
		t.Errorf("default description = %v, want empty", body["description"])
	}

	var events int
	if err := ts.st.db.QueryRow(`SELECT count(*) FROM incident_events WHERE type = 'added'`).Scan(&events); err != nil || events != 2 {
		t.Errorf("added events = %d (%v), want 2", events, err)
	}
}

// Of two spellings of a field name, the exact one counts, wherever it is;
// the others are unknown fields.
func TestFieldNamesMatchExactly(t *testing.T) {
	ts := newTestServer(t)
	var inc incident
	ts.request(t, "POST", "/api/v1/incidents", `{"title":"exact","TITLE":"other","severity":"low","Severity":"critical"}`).
		mustStatus(t, "create with other spellings of names", http.StatusCreated).json(t, &inc)
	if inc.Title != "exact" || inc.Severity != "low" {
		t.Errorf("title, severity = %q, %q; want the exactly spelled %q, %q", inc.Title, inc.Severity, "exact", "low")
	}
}

func TestBodyLimits(t *testing.T) {
	ts := newTestServer(t)
	const mib = 1 << 20
	// Just under the limit the body is read, and validated.
	almost := `{"title":"t","severity":"low","description":"` + strings.Repeat("x", mib-100) + `"}`
	ts.request(t, "POST", "/api/v1/incidents", almost).mustStatus(t, "a body just under 1 MiB", http.StatusUnprocessableEntity)
	big := `{"title":"t","severity":"low","description":"` + strings.Repeat("x", mib) + `"}`
	for _, path := range []string{"/api/v1/incidents", "/api/v1/register", "/api/v1/login"} {
		r := ts.request(t, "POST", path, big)
		r.mustStatus(t, "POST "+path+" over 1 MiB", http.StatusRequestEntityTooLarge)
		if d := r.detail(t); d != "Request body too large" {
			t.Errorf("detail = %v, want Request body too large", d)
		}
	}
	r := ts.request(t, "POST", "/api/v1/login", "password="+strings.Repeat("x", maxBodyBytes), "Content-Type", "application/x-www-form-urlencoded")
	r.mustStatus(t, "form login over 1 MiB", http.StatusRequestEntityTooLarge)
}

// A client that stops sending its body halfway gets an answer once
// bodyReadTimeout passes, instead of holding the request open: a 408 where
// the handler reads the body, its own answer where it does not (net/http
// reads the rest of a body before it answers), the mux's own 404 and 405
// and CORS preflights included.
func TestStalledBodyTimesOut(t *testing.T) {
	ts := newTestServer(t)
	defer func(d time.Duration) { bodyReadTimeout = d }(bodyReadTimeout)
	bodyReadTimeout = 300 * time.Millisecond
	preflight := "Origin: https://elsewhere.example\r\nAccess-Control-Request-Method: POST\r\n"
	for _, tt := range []struct {
		method, path, contentType string
		status                    int
		headers                   string
	}{
		{"POST", "/api/v1/incidents", "application/json", http.StatusRequestTimeout, ""},
		{"POST", "/api/v1/login", "application/x-www-form-urlencoded", http.StatusRequestTimeout, ""},
		{"POST", "/api/v1/stream-tickets", "application/json", http.StatusUnauthorized, ""},
		{"GET", "/api/v1/incidents?limit=0", "application/json", http.StatusUnprocessableEntity, ""},
		{"POST", "/api/v1/nope", "application/json", http.StatusNotFound, ""},
		{"DELETE", "/api/v1/incidents", "application/json", http.StatusMethodNotAllowed, ""},
		{"OPTIONS", "/api/v1/incidents", "application/json", http.StatusForbidden, preflight},
	} {
		conn, err := net.Dial("tcp", ts.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n%sContent-Length: 100\r\n\r\n{", tt.method, tt.path, tt.contentType, tt.headers)
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%s %s with a stalled body: %v; want a response", tt.method, tt.path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != tt.status {
			t.Errorf("%s %s with a stalled body = %d %s; want %d", tt.method, tt.path, resp.StatusCode, body, tt.status)
		}
		if tt.status == http.StatusRequestTimeout && !strings.Contains(string(body), `"Request body not received in time"`) {
			t.Errorf("%s %s: body %s, want the 408's JSON detail", tt.method, tt.path, body)
		}
	}
}

func TestIncidentGet(t *testing.T) {
	ts := newTestServer(t)
	inc := ts.createIncident(t, "API down", "high")

	var got incident
	ts.request(t, "GET", fmt.Sprintf("/api/v1/incidents/%d", inc.ID), "").mustStatus(t, "get", http.StatusOK).json(t, &got)
	if !reflect.DeepEqual(got, inc) {
		t.Errorf("GET = %+v, want what POST returned %+v", got, inc)
	}
	for _, tt := range []struct {
		path       string
		wantStatus int
		wantDetail any
	}{
		{"/api/v1/incidents/999999", http.StatusNotFound, "Incident not found"},
		{"/api/v1/incidents/99999999999999", http.StatusNotFound, "Incident not found"},
		{"/api/v1/incidents/-1", http.StatusNotFound, "Incident not found"},
		{"/api/v1/incidents/abc", http.StatusUnprocessableEntity, nil},
		{"/api/v1/incidents/1.5", http.StatusUnprocessableEntity, nil},
		{"/api/v1/incidents/99999999999999999999", http.StatusUnprocessableEntity, nil},
	} {
		r := ts.request(t, "GET", tt.path, "")
		r.mustStatus(t, "GET "+tt.path, tt.wantStatus)
		if tt.wantDetail != nil {
			if d := r.detail(t); d != tt.wantDetail {
				t.Errorf("GET %s detail = %v, want %v", tt.path, d, tt.wantDetail)
			}
		} else if got := problemTypes(t, r); !reflect.DeepEqual(got, []string{"int_parsing@path.id"}) {
			t.Errorf("GET %s problems = %v, want int_parsing@path.id", tt.path, got)
		}
	}
}

// nextLink extracts the target of a rel="next" Link header.
var linkPattern = regexp.MustCompile(`^<([^>]+)>; rel="next"$`)

func nextLink(t *testing.T, r response) string {
	t.Helper()
	link := r.header.Get("Link")
	if link == "" {
		return ""
	}
	m := linkPattern.FindStringSubmatch(link)
	if m == nil {
		t.Fatalf("Link = %q, want <url>; rel=\"next\"", link)
	}
	return m[1]
}

// walk follows Link headers from path and returns the ids in order.
func walk(t *testing.T, ts *testServer, path string) []int64 {
	t.Helper()
	var ids []int64
	for pages := 0; path != ""; pages++ {
		if pages > 1000 {
			t.Fatal("more than 1000 pages: the Link chain does not end")
		}
		r := ts.request(t, "GET", path, "").mustStatus(t, "GET "+path, http.StatusOK)
		var page []incident
		r.json(t, &page)
		for _, inc := range page {
			ids = append(ids, inc.ID)
		}
		next := nextLink(t, r)
		if next != "" && len(page) == 0 {
			t.Fatalf("empty page %s has a next link", path)
		}
		path = next
	}
	return ids
}

// seedIncidents inserts n incidents straight into the table, fast, with
// severities cycling through the four values.
func seedIncidents(t *testing.T, db *sql.DB, n int) {
	t.Helper()
	_, err := db.Exec(`INSERT INTO incidents (title, severity, status)
		SELECT 'seed ' || g, (ARRAY['low','medium','high','critical'])[1 + g % 4],
		       CASE WHEN g % 3 = 0 THEN 'resolved' ELSE 'open' END
		FROM generate_series(1, $1) g`, n)
	if err != nil {
		t.Fatalf("seed incidents: %v", err)
	}
}

// mustBeNewestFirst fails unless ids strictly decrease.
func mustBeNewestFirst(t *testing.T, what string, ids []int64) {
	t.Helper()
	for i := 1; i < len(ids); i++ {
		if ids[i] >= ids[i-1] {
			t.Fatalf("%s: ids not strictly newest first at %d: %d then %d", what, i, ids[i-1], ids[i])
		}
	}
}

func TestIncidentListPagination(t *testing.T) {
	ts := newTestServer(t)
	seedIncidents(t, ts.st.db, 300)

	all := walk(t, ts, "/api/v1/incidents?limit=7")
	if len(all) != 300 {
		t.Fatalf("walked %d incidents, want 300", len(all))
	}
	mustBeNewestFirst(t, "the whole walk", all)
	if got := walk(t, ts, "/api/v1/incidents"); len(got) != 300 {
		t.Errorf("default page size walk = %d incidents, want 300", len(got))
	}
	r := ts.request(t, "GET", "/api/v1/incidents", "")
	var first []incident
	r.json(t, &first)
	if len(first) != 100 || nextLink(t, r) == "" {
		t.Errorf("first default page = %d incidents, link %q; want 100 and a next link", len(first), nextLink(t, r))
	}
	r = ts.request(t, "GET", "/api/v1/incidents?limit=1000", "")
	if nextLink(t, r) != "" {
		t.Errorf("a page holding everything has Link %q, want none", r.header.Get("Link"))
	}

	// Filters combine, and survive the Link.
	want := map[int64]bool{}
	rows, err := ts.st.db.Query(`SELECT id FROM incidents WHERE status = 'open' AND severity IN ('high', 'critical')`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		rows.Scan(&id)
		want[id] = true
	}
	rows.Close()
	for _, path := range []string{
		"/api/v1/incidents?status=open&severity=high,critical&limit=9",
		"/api/v1/incidents?status=open&severity=high&severity=critical&limit=9",
	} {
		got := walk(t, ts, path)
		mustBeNewestFirst(t, path, got) // and so without repeats
		if len(got) != len(want) {
			t.Errorf("%s: %d incidents, want %d", path, len(got), len(want))
		}
		for _, id := range got {
			if !want[id] {
				t.Errorf("%s returned incident %d, which does not match", path, id)
			}
		}
	}

	var page []incident
	ts.request(t, "GET", fmt.Sprintf("/api/v1/incidents?before=%d&limit=5", all[10]), "").mustStatus(t, "before", http.StatusOK).json(t, &page)
	if len(page) != 5 || page[0].ID != all[11] {
		t.Errorf("before=%d gave %d incidents starting at %v, want 5 starting at %d", all[10], len(page), page, all[11])
	}
}

func TestIncidentListValidation(t *testing.T) {
	ts := newTestServer(t)
	for _, tt := range []struct {
		query     string
		wantTypes []string
	}{
		{"status=closed", []string{"enum@query.status"}},
		{"status=open,closed", []string{"enum@query.status"}},
		{"severity=urgent", []string{"enum@query.severity"}},
		{"limit=0", []string{"greater_than_equal@query.limit"}},
		{"limit=1001", []string{"less_than_equal@query.limit"}},
		{"limit=ten", []string{"int_parsing@query.limit"}},
		{"before=0", []string{"greater_than_equal@query.before"}},
		{"before=x", []string{"int_parsing@query.before"}},
		{"status=x&severity=y&limit=-1&before=z", []string{"enum@query.status", "enum@query.severity", "greater_than_equal@query.limit", "int_parsing@query.before"}},
	} {
		ts.request(t, "GET", "/api/v1/incidents?"+tt.query, "").mustProblems(t, "GET ?"+tt.query, tt.wantTypes...)
	}
	r := ts.request(t, "GET", "/api/v1/incidents", "").mustStatus(t, "empty list", http.StatusOK)
	if strings.TrimSpace(string(r.body)) != "[]" {
		t.Errorf("empty list body = %s, want []", r.body)
	}
}

func TestIncidentResolve(t *testing.T) {
	ts := newTestServer(t)
	token := ts.register(t, "oncall", "password1")
	inc := ts.createIncident(t, "DB slow", "medium")
	path := fmt.Sprintf("/api/v1/incidents/%d/resolve", inc.ID)

	for _, tt := range []struct {
		name       string
		path       string
		headers    []string
		wantStatus int
		wantDetail string
	}{
		{"no token", path, nil, http.StatusUnauthorized, "Not authenticated"},
		{"bad token", path, []string{"Authorization", "Bearer x.y.z"}, http.StatusUnauthorized, "Could not validate credentials"},
		{"unknown incident", "/api/v1/incidents/424242/resolve", bearer(token), http.StatusNotFound, "Incident not found"},
		{"bad id", "/api/v1/incidents/abc/resolve", bearer(token), http.StatusUnprocessableEntity, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := ts.request(t, "PATCH", tt.path, "", tt.headers...)
			r.mustStatus(t, "PATCH "+tt.path, tt.wantStatus)
			if tt.wantDetail != "" {
				if d := r.detail(t); d != tt.wantDetail {
					t.Errorf("detail = %v, want %q", d, tt.wantDetail)
				}
			}
		})
	}

	ts.clock.Advance(time.Minute)
	r := ts.request(t, "PATCH", path, "", bearer(token)...).mustStatus(t, "resolve", http.StatusOK)
	var body map[string]any
	r.json(t, &body)
	if want := map[string]any{"message": "Incident resolved", "incident status": "resolved"}; !reflect.DeepEqual(body, want) {
		t.Errorf("resolve body = %v, want %v", body, want)
	}
	var got incident
	ts.request(t, "GET", fmt.Sprintf("/api/v1/incidents/%d", inc.ID), "").json(t, &got)
	if got.Status != "resolved" || got.ResolvedBy == nil || *got.ResolvedBy != "oncall" || got.ResolvedAt == nil ||
		!got.ResolvedAt.Equal(ts.clock.Now()) || !got.UpdatedAt.Equal(ts.clock.Now()) {
		t.Errorf("resolved incident = %+v, want resolved by oncall at %v", got, ts.clock.Now())
	}

	r = ts.request(t, "PATCH", path, "", bearer(token)...).mustStatus(t, "resolve again", http.StatusConflict)
	if d := r.detail(t); d != "Incident already resolved" {
		t.Errorf("detail = %v, want Incident already resolved", d)
	}
	var types []string
	rows, _ := ts.st.db.Query(`SELECT type FROM incident_events WHERE incident_id = $1 ORDER BY id`, inc.ID)
	for rows.Next() {
		var s string
		rows.Scan(&s)
		types = append(types, s)
	}
	rows.Close()
	if !reflect.DeepEqual(types, []string{"added", "resolved"}) {
		t.Errorf("events = %v, want [added resolved]", types)
	}
}

func TestIncidentResolveConcurrent(t *testing.T) {
	ts := newTestServer(t)
	token := ts.register(t, "oncall", "password1")
	for round := range 5 {
		inc := ts.createIncident(t, fmt.Sprintf("race %d", round), "high")
		const n = 6
		count := statusCounts(inParallel(t, n, func(t testing.TB, _ int) response {
			return ts.request(t, "PATCH", fmt.Sprintf("/api/v1/incidents/%d/resolve", inc.ID), "", bearer(token)...)
		}))
		if count[http.StatusOK] != 1 || count[http.StatusConflict] != n-1 {
			t.Errorf("round %d statuses = %v, want one 200 and %d 409", round, count, n-1)
		}
		var events int
		ts.st.db.QueryRow(`SELECT count(*) FROM incident_events WHERE incident_id = $1 AND type = 'resolved'`, inc.ID).Scan(&events)
		if events != 1 {
			t.Errorf("round %d resolved events = %d, want 1", round, events)
		}
	}
}

func TestMuxErrorsAreJSON(t *testing.T) {
	ts := newTestServer(t)
	r := ts.request(t, "GET", "/nope", "").mustStatus(t, "unknown path", http.StatusNotFound)
	if d := r.detail(t); d != "Not Found" || r.header.Get("Content-Type") != "application/json" {
		t.Errorf("404 = %v %q, want JSON Not Found", d, r.header.Get("Content-Type"))
	}
	r = ts.request(t, "DELETE", "/api/v1/incidents", "").mustStatus(t, "wrong method", http.StatusMethodNotAllowed)
	if d := r.detail(t); d != "Method Not Allowed" {
		t.Errorf("405 detail = %v, want Method Not Allowed", d)
	}
	if allow := r.header.Get("Allow"); !strings.Contains(allow, "GET") || !strings.Contains(allow, "POST") {
		t.Errorf("Allow = %q, want GET and POST", allow)
	}
	r = ts.request(t, "GET", "/api/v1/incidents/1/resolve", "").mustStatus(t, "GET on resolve", http.StatusMethodNotAllowed)
	if allow := r.header.Get("Allow"); allow != "PATCH" {
		t.Errorf("Allow = %q, want PATCH", allow)
	}
	for _, h := range []string{"X-Request-Id", "X-Content-Type-Options"} {
		if r.header.Get(h) == "" {
			t.Errorf("error response lacks %s", h)
		}
	}
}

func TestCORS(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.allowedOrigins = []string{"https://dash.example"} })
	preflight := func(origin string) response {
		return ts.request(t, "OPTIONS", "/api/v1/incidents", "", "Origin", origin,
			"Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "content-type")
	}
	r := preflight("https://dash.example").mustStatus(t, "allowed preflight", http.StatusNoContent)
	if r.header.Get("Access-Control-Allow-Origin") != "https://dash.example" ||
		!strings.Contains(r.header.Get("Access-Control-Allow-Methods"), "PATCH") ||
		!strings.Contains(r.header.Get("Access-Control-Allow-Headers"), "Authorization, Content-Type") {
		t.Errorf("preflight headers = %v", r.header)
	}
	r = preflight("https://evil.example")
	if r.header.Get("Access-Control-Allow-Origin") != "" || r.status == http.StatusNoContent {
		t.Errorf("other origin preflight = %d with Allow-Origin %q, want no CORS", r.status, r.header.Get("Access-Control-Allow-Origin"))
	}
	r = ts.request(t, "GET", "/api/v1/incidents", "", "Origin", "https://dash.example")
	if r.header.Get("Access-Control-Allow-Origin") != "https://dash.example" {
		t.Errorf("simple request Allow-Origin = %q, want the origin", r.header.Get("Access-Control-Allow-Origin"))
	}
	r = ts.request(t, "GET", "/api/v1/incidents", "", "Origin", "https://evil.example")
	if r.status != http.StatusOK || r.header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("other origin = %d with Allow-Origin %q, want 200 without", r.status, r.header.Get("Access-Control-Allow-Origin"))
	}

	closed := newTestServer(t)
	r = closed.request(t, "OPTIONS", "/api/v1/incidents", "", "Origin", "https://dash.example", "Access-Control-Request-Method", "GET")
	if r.header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("with no ALLOWED_ORIGINS, Allow-Origin = %q, want none", r.header.Get("Access-Control-Allow-Origin"))
	}
}

func TestHealthAndRoot(t *testing.T) {
	ts := newTestServer(t)
	var health, root map[string]any
	ts.request(t, "GET", "/healthz", "").mustStatus(t, "healthz", http.StatusOK).json(t, &health)
	ts.request(t, "GET", "/readyz", "").mustStatus(t, "readyz", http.StatusOK)
	ts.request(t, "GET", "/", "").mustStatus(t, "root", http.StatusOK).json(t, &root)
	if health["status"] != "ok" || root["name"] != "incidents" || root["version"] != readBuildInfo().Version || root["revision"] != readBuildInfo().Revision || root["docs"] != "/docs" {
		t.Errorf("healthz = %v, root = %v", health, root)
	}
}

// TestDatabaseUnavailable checks a dead database gives a quick 503, never a
// hang or a 500.
func TestDatabaseUnavailable(t *testing.T) {
	refused, err := sql.Open("postgres", "host=127.0.0.1 port=1 user=x dbname=x sslmode=disable connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	defer refused.Close()
	ts := newTestServerOn(t, &store{db: refused, timeout: 2 * time.Second}, testConfig())
	for _, tt := range []struct{ method, path, body string }{
		{"GET", "/readyz", ""},
		{"GET", "/api/v1/incidents", ""},
		{"GET", "/api/v1/incidents/1", ""},
		{"POST", "/api/v1/incidents", `{"title":"t","severity":"low"}`},
		{"POST", "/api/v1/login", `{"username":"u","password":"p"}`},
	} {
		start := time.Now()
		r := ts.request(t, tt.method, tt.path, tt.body)
		r.mustStatus(t, tt.method+" "+tt.path, http.StatusServiceUnavailable)
		if d := r.detail(t); d != "Database unavailable" {
			t.Errorf("%s %s detail = %v, want Database unavailable", tt.method, tt.path, d)
		}
		if took := time.Since(start); took > 4*time.Second {
			t.Errorf("%s %s took %v, want a quick answer", tt.method, tt.path, took)
		}
	}
	ts.request(t, "GET", "/healthz", "").mustStatus(t, "healthz without database", http.StatusOK)
}

func TestNoInternalsInErrors(t *testing.T) {
	ts := newTestServer(t)
	// A broken table is an internal error: a 500 with a generic body.
	if _, err := ts.st.db.Exec(`ALTER TABLE incidents RENAME COLUMN title TO title_gone`); err != nil {
		t.Fatal(err)
	}
	r := ts.request(t, "GET", "/api/v1/incidents", "").mustStatus(t, "broken table", http.StatusInternalServerError)
	if d := r.detail(t); d != "Internal Server Error" || bytes.Contains(r.body, []byte("title")) {
		t.Errorf("500 body = %s, want only the generic detail", r.body)
	}
}

// TestListTimeOffsets sends since and until with offsets PostgreSQL would
// refuse (16 hours or more) and times outside the years it and the API
// keep: the first are read in UTC, the second are a 422, never a 500.
func TestListTimeOffsets(t *testing.T) {
	ts := newTestServer(t)
	inc := ts.createIncident(t, "disk full", "low")
	// in is the incident's creation time moved by d, written with offset.
	in := func(offset, d time.Duration) string {
		zone := time.FixedZone("", int(offset.Seconds()))
		return url.QueryEscape(inc.CreatedAt.Add(d).In(zone).Format(time.RFC3339Nano))
	}
	for _, tt := range []struct {
		name  string
		query string
		want  int // incidents listed
	}{
		{"since +16:00 before it", "since=" + in(16*time.Hour, -time.Minute), 1},
		{"since +23:59 after it", "since=" + in(23*time.Hour+59*time.Minute, time.Minute), 0},
		{"until -20:00 after it", "until=" + in(-20*time.Hour, time.Minute), 1},
		{"until -16:00 at it", "until=" + in(-16*time.Hour, 0), 0},
		{"since +16:00 long ago", "since=2026-01-01T00:00:00%2B16:00", 1},
		{"until -20:00 long ago", "until=2026-01-01T00:00:00-20:00", 0},
		{"since the first instant", "since=0001-01-01T00:00:00Z", 1},
		{"until the last instant", "until=9999-12-31T23:59:59.999999Z", 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var list []incident
			ts.request(t, "GET", "/api/v1/incidents?"+tt.query, "").mustStatus(t, "GET ?"+tt.query, http.StatusOK).json(t, &list)
			if len(list) != tt.want {
				t.Errorf("GET ?%s listed %d incidents, want %d", tt.query, len(list), tt.want)
			}
		})
	}
	for _, tt := range []struct {
		query    string
		wantType string
	}{
		{"since=9999-12-31T23:59:59-23:59", "datetime_parsing@query.since"},   // year 10000 in UTC
		{"until=0001-01-01T00:00:00%2B01:00", "datetime_parsing@query.until"}, // year 0 in UTC
		{"since=0000-06-01T00:00:00Z", "datetime_parsing@query.since"},
		{"sort=created_at&cursor=" + editedCursor("created_at", "0001-01-01T00:00:00+01:00"), "value_error@query.cursor"},
	} {
		t.Run(tt.query, func(t *testing.T) {
			ts.request(t, "GET", "/api/v1/incidents?"+tt.query, "").mustProblems(t, "GET ?"+tt.query, tt.wantType)
		})
	}
}
