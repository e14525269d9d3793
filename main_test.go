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
	"net/url"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testDB is the PostgreSQL server of this test binary: a throwaway cluster
// started by TestMain, or the server TEST_DATABASE_URL names.
var testDB struct {
	baseDSN  string // a DSN of the server; withDBName picks the database
	template string // a database with the schema applied, cloned per test
	counter  atomic.Int64
}

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	ctx := context.Background()
	testDB.baseDSN = os.Getenv("TEST_DATABASE_URL")
	if testDB.baseDSN == "" {
		dir, err := os.MkdirTemp("", "incidents-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "FAIL: temp dir:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		cluster, err := startPGCluster(ctx, dir, pgClusterOptions{throwaway: true})
		if err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: the tests need a real PostgreSQL and could not start one: %v\n"+
				"Install the PostgreSQL server binaries (Debian: apt install postgresql) or set TEST_DATABASE_URL.\n", err)
			return 1
		}
		defer cluster.Stop()
		testDB.baseDSN = cluster.DSN("postgres")
	}
	testDB.template = fmt.Sprintf("incidents_template_%d", os.Getpid())
	if err := createTemplate(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: prepare the template database:", err)
		return 1
	}
	defer dropDatabase(testDB.template)
	return checkStatuses(m.Run())
}

// createTemplate makes the database every test database is cloned from.
func createTemplate(ctx context.Context) error {
	admin, err := sql.Open("postgres", testDB.baseDSN)
	if err != nil {
		return err
	}
	defer admin.Close()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+quoteIdent(testDB.template)); err != nil {
		return err
	}
	st, err := openStore(ctx, withDBName(testDB.baseDSN, testDB.template), 5*time.Second, defaultDBMaxConns)
	if err != nil {
		return err
	}
	return st.Close()
}

func dropDatabase(name string) error {
	admin, err := sql.Open("postgres", testDB.baseDSN)
	if err != nil {
		return err
	}
	defer admin.Close()
	_, err = admin.Exec("DROP DATABASE IF EXISTS " + quoteIdent(name) + " WITH (FORCE)")
	return err
}

// withDBName points a DSN, URL or key=value, at another database.
func withDBName(dsn, name string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Path = "/" + name
		return u.String()
	}
	return dsn + " dbname=" + name
}

// newTestDSN creates a fresh database with the schema for one test and
// returns its DSN. The database is dropped when the test ends.
func newTestDSN(t testing.TB) string {
	t.Helper()
	return newDatabase(t, testDB.template)
}

// newDatabase creates a database from template for one test.
func newDatabase(t testing.TB, template string) string {
	t.Helper()
	name := fmt.Sprintf("test_%d_%d", os.Getpid(), testDB.counter.Add(1))
	admin, err := sql.Open("postgres", testDB.baseDSN)
	if err != nil {
		t.Fatalf("open admin connection: %v", err)
	}
	defer admin.Close()
	if _, err := admin.Exec("CREATE DATABASE " + quoteIdent(name) + " TEMPLATE " + quoteIdent(template) + " STRATEGY FILE_COPY"); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		if err := dropDatabase(name); err != nil {
			t.Errorf("drop test database: %v", err)
		}
	})
	// A session time zone other than UTC: the API speaks UTC whatever the
	// database's, and a time that skipped the conversion shows.
	return withDSNParam(withDBName(testDB.baseDSN, name), "timezone", "Asia/Kolkata")
}

// withDSNParam is dsn with a connection parameter set (PostgreSQL takes
// the ones lib/pq does not know as settings of the session).
func withDSNParam(dsn, key, value string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		q := u.Query()
		q.Set(key, value)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " " + key + "=" + value
}

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
	cfg := testConfig()
	dsn := newTestDSN(t)
	cfg.databaseURL = dsn
	for _, f := range adjust {
		f(&cfg)
	}
	st, err := openStore(context.Background(), dsn, 5*time.Second, defaultDBMaxConns)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	ts := newTestServerOn(t, st, cfg)
	ts.startStream(t)
	return ts
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

// startStream runs the server's event feed until the test ends.
func (ts *testServer) startStream(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	if err := ts.srv.startStream(ctx); err != nil {
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

// createIncident reports an incident and returns it.
func (ts *testServer) createIncident(t testing.TB, title, severity string) incident {
	t.Helper()
	var inc incident
	body := fmt.Sprintf(`{"title":%q,"description":"d","severity":%q}`, title, severity)
	ts.request(t, "POST", "/api/v1/incidents", body).mustStatus(t, "create incident", http.StatusCreated).json(t, &inc)
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
