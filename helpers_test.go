package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// newTestStore opens a store on a fresh database.
func newTestStore(t testing.TB) *store {
	t.Helper()
	st, err := openStore(context.Background(), newTestDSN(t), 5*time.Second, defaultDBMaxConns)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// testConfig is a valid configuration for tests.
func testConfig() config {
	cfg, err := loadConfig(func(k string) string {
		return map[string]string{"SECRET_KEY": strings.Repeat("k", 32), "DATABASE_URL": "postgres://unused"}[k]
	}, false)
	if err != nil {
		panic(err)
	}
	return cfg
}

// testClock is a clock tests move by hand.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testServer is a server on a fresh database behind httptest.
type testServer struct {
	*httptest.Server
	srv   *server
	st    *store
	clock *testClock
	// sendBuffer, when set, is the send buffer of the server's side of
	// every connection accepted from then on, so tests can fill it.
	sendBuffer *atomic.Int64
}

// newTestServer starts a server on a fresh database; adjust, if given, may
// change the configuration first (databaseURL, which the event feed
// connects with, is the fresh database's).
func newTestServer(t testing.TB, adjust ...func(*config)) *testServer {
	t.Helper()
	ts := newIdleServer(t, adjust...)
	ts.startBackground(t)
	return ts
}

// newIdleServer is a server on a fresh database whose event feed and timer
// loop do not run: a replica that is down, or about to die.
func newIdleServer(t testing.TB, adjust ...func(*config)) *testServer {
	t.Helper()
	cfg := testConfig()
	cfg.databaseURL = newTestDSN(t)
	for _, f := range adjust {
		f(&cfg)
	}
	st, err := openStore(context.Background(), cfg.databaseURL, 5*time.Second, defaultDBMaxConns)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return newTestServerOn(t, st, cfg)
}

// newTestServerOn starts a server on an existing store.
func newTestServerOn(t testing.TB, st *store, cfg config) *testServer {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	srv, err := newServer(cfg, st, logger)
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	clock := &testClock{t: time.Now().UTC().Truncate(time.Microsecond)}
	srv.now = clock.Now
	ts := httptest.NewUnstartedServer(recordStatuses(srv.routes()))
	sendBuffer := new(atomic.Int64)
	ts.Config.ConnState = func(c net.Conn, state http.ConnState) {
		if n := sendBuffer.Load(); n > 0 && state == http.StateNew {
			c.(*net.TCPConn).SetWriteBuffer(int(n))
		}
	}
	ts.Config.RegisterOnShutdown(srv.hub.shutdown)
	ts.Start()
	t.Cleanup(ts.Close)
	// As at the end of a real server; httptest's Close does not call it.
	t.Cleanup(srv.hub.shutdown)
	return &testServer{Server: ts, srv: srv, st: st, clock: clock, sendBuffer: sendBuffer}
}

// replica starts a second server on ts's database, with its own pool,
// feed and timers, as another replica would be.
func (ts *testServer) replica(t testing.TB) *testServer {
	t.Helper()
	st, err := openStore(context.Background(), ts.srv.cfg.databaseURL, 5*time.Second, defaultDBMaxConns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	other := newTestServerOn(t, st, ts.srv.cfg)
	other.startBackground(t)
	return other
}

// startBackground runs the server's event feed and timers until the test ends.
func (ts *testServer) startBackground(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	if err := ts.srv.startBackground(ctx); err != nil {
		t.Fatalf("start stream: %v", err)
	}
	t.Cleanup(cancel)
}

// response is what a test request got back.
type response struct {
	status int
	header http.Header
	body   []byte
}

// json decodes the body into v, failing the test if it is not JSON.
func (r response) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("response body %q is not JSON: %v", r.body, err)
	}
}

// detail returns the "detail" of an error body.
func (r response) detail(t testing.TB) any {
	t.Helper()
	var body map[string]any
	r.json(t, &body)
	return body["detail"]
}

// request sends a request; headers come in name, value pairs. A body that
// does not start like JSON is sent as a form.
func (ts *testServer) request(t testing.TB, method, path, body string, headers ...string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, ts.URL+path, rd)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// mustStatus fails the test unless the response has the wanted status.
func (r response) mustStatus(t testing.TB, what string, want int) response {
	t.Helper()
	if r.status != want {
		t.Fatalf("%s: status = %d, want %d; body %s", what, r.status, want, r.body)
	}
	return r
}

// mustProblems checks that r is a 422 whose problems are exactly want, as
// type@location.
func (r response) mustProblems(t *testing.T, what string, want ...string) {
	t.Helper()
	r.mustStatus(t, what, http.StatusUnprocessableEntity)
	if got := problemTypes(t, r); !slices.Equal(got, want) {
		t.Errorf("%s: problems = %v, want %v", what, got, want)
	}
}

// register creates a user and returns a token for it.
func (ts *testServer) register(t testing.TB, username, password string) string {
	t.Helper()
	body := fmt.Sprintf(`{"username":%q,"password":%q}`, username, password)
	ts.request(t, "POST", "/api/v1/register", body).mustStatus(t, "register "+username, http.StatusCreated)
	return ts.login(t, username, password)
}

// login returns a token.
func (ts *testServer) login(t testing.TB, username, password string) string {
	t.Helper()
	body := fmt.Sprintf(`{"username":%q,"password":%q}`, username, password)
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	ts.request(t, "POST", "/api/v1/login", body).mustStatus(t, "login "+username, http.StatusOK).json(t, &tok)
	return tok.AccessToken
}

// reportBody is the JSON body of a report.
func reportBody(title, severity string) string {
	return fmt.Sprintf(`{"title":%q,"description":"d","severity":%q}`, title, severity)
}

// postIncident sends a report: the one way tests report through the API.
func (ts *testServer) postIncident(t testing.TB, body string, headers ...string) response {
	t.Helper()
	return ts.request(t, "POST", "/api/v1/incidents", body, headers...)
}

// createIncident reports an incident and returns it.
func (ts *testServer) createIncident(t testing.TB, title, severity string) incident {
	t.Helper()
	var inc incident
	ts.postIncident(t, reportBody(title, severity)).mustStatus(t, "create incident", http.StatusCreated).json(t, &inc)
	return inc
}

// inParallel sends n requests at once, request(i) making the i-th, and
// returns their responses in order. request gets a t whose Fatal ends only
// its own goroutine; the test stops once all are back.
func inParallel(t testing.TB, n int, request func(t testing.TB, i int) response) []response {
	t.Helper()
	responses := make([]response, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { responses[i] = request(offTestGoroutine{t}, i) })
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return responses
}

// offTestGoroutine lets helpers that call Fatal run on a goroutine of
// their own: FailNow may only be called from the test's goroutine, so
// these report the failure and end the calling goroutine only.
type offTestGoroutine struct{ testing.TB }

func (g offTestGoroutine) Fatal(args ...any) {
	g.Helper()
	g.Error(args...)
	runtime.Goexit()
}

func (g offTestGoroutine) Fatalf(format string, args ...any) {
	g.Helper()
	g.Errorf(format, args...)
	runtime.Goexit()
}

func (g offTestGoroutine) FailNow() {
	g.Fail()
	runtime.Goexit()
}

// statusCounts counts responses by status.
func statusCounts(responses []response) map[int]int {
	count := map[int]int{}
	for _, r := range responses {
		count[r.status]++
	}
	return count
}

func bearer(token string) []string { return []string{"Authorization", "Bearer " + token} }

// problemTypes lists the type of every problem in a 422 body.
func problemTypes(t *testing.T, r response) []string {
	t.Helper()
	var body struct {
		Detail []fieldError `json:"detail"`
	}
	r.json(t, &body)
	var types []string
	for _, p := range body.Detail {
		types = append(types, p.Type+"@"+strings.Join(p.Loc, "."))
	}
	return types
}

// patch sends a lifecycle action.
func (ts *testServer) patch(t testing.TB, id int64, action, token, body string, headers ...string) response {
	t.Helper()
	return ts.request(t, "PATCH", fmt.Sprintf("/api/v1/incidents/%d/%s", id, action), body, append(bearer(token), headers...)...)
}

// getIncident reads an incident.
func (ts *testServer) getIncident(t *testing.T, id int64) incident {
	t.Helper()
	var inc incident
	ts.request(t, "GET", fmt.Sprintf("/api/v1/incidents/%d", id), "").mustStatus(t, "get incident", http.StatusOK).json(t, &inc)
	return inc
}

// incidentIn creates an incident and brings it to status.
func (ts *testServer) incidentIn(t *testing.T, status, token string) incident {
	t.Helper()
	inc := ts.createIncident(t, "in "+status, "high")
	switch status {
	case "acknowledged":
		ts.patch(t, inc.ID, "acknowledge", token, "").mustStatus(t, "acknowledge", http.StatusOK)
	case "resolved":
		ts.patch(t, inc.ID, "resolve", token, "").mustStatus(t, "resolve", http.StatusOK)
	}
	return ts.getIncident(t, inc.ID)
}

// report posts an incident with a dedup key.
func (ts *testServer) report(t testing.TB, key, severity string) (response, incident) {
	t.Helper()
	r := ts.postIncident(t, fmt.Sprintf(`{"title":"disk full","severity":%q,"dedup_key":%q}`, severity, key))
	var inc incident
	if r.status == http.StatusOK || r.status == http.StatusCreated {
		r.json(t, &inc)
	}
	return r, inc
}

// attemptLogin posts a login and returns whatever came back.
func (ts *testServer) attemptLogin(t testing.TB, username, password string, headers ...string) response {
	t.Helper()
	return ts.request(t, "POST", "/api/v1/login", fmt.Sprintf(`{"username":%q,"password":%q}`, username, password), headers...)
}

// waitStream waits until the feed has published every stored event, so
// that a new subscriber's hello names the newest one.
func (ts *testServer) waitStream(t *testing.T) {
	t.Helper()
	var newest int64
	ts.st.db.QueryRow(`SELECT coalesce(max(id), 0) FROM incident_events`).Scan(&newest)
	waitFor(t, "the stream to reach the newest event", func() bool { return ts.srv.hub.log.current().position >= newest })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// appendEvents appends n "added" events for inc in one transaction, the
// size of the stream's batch.
func (ts *testServer) appendEvents(t *testing.T, inc incident, n int) {
	t.Helper()
	if err := ts.st.inTx(context.Background(), func(tx *sql.Tx) error {
		for range n {
			if err := ts.st.appendEvent(context.Background(), tx, "added", inc, actorRef{}, eventDetail{}, time.Now()); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// count is the number of open subscriptions.
func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// followPages reads a list from path to its last page.
func (ts *testServer) followPages(t *testing.T, path string, headers ...string) []listPage {
	t.Helper()
	var pages []listPage
	for path != "" {
		r := ts.request(t, "GET", path, "", headers...)
		r.mustStatus(t, "GET "+path, http.StatusOK)
		var p listPage
		p.body = r.body
		r.json(t, &p.items)
		pages = append(pages, p)
		path = ""
		if link := r.header.Get("Link"); link != "" {
			path = strings.TrimPrefix(link[:strings.Index(link, ">")], "<")
		}
		if len(pages) > 1000 {
			t.Fatalf("GET %s: more than 1000 pages", path)
		}
	}
	return pages
}

// create posts body to an admin collection as admin and returns what was
// created: an integration, a heartbeat, a webhook.
func create[T any](t testing.TB, ts *testServer, admin, path, body string) T {
	t.Helper()
	var created T
	ts.request(t, "POST", path, body, bearer(admin)...).mustStatus(t, "POST "+path+" "+body, http.StatusCreated).json(t, &created)
	return created
}
