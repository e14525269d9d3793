package main

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer collects a server's log while tests read it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// runningServer is run() going in the background.
type runningServer struct {
	url    string
	log    *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

// startRun calls run() with env as the whole environment and waits until
// it logs the address it listens on.
func startRun(t *testing.T, env map[string]string, args ...string) *runningServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	rs := &runningServer{log: &syncBuffer{}, cancel: cancel, done: make(chan error, 1)}
	argv := append([]string{"incidents", "-env-file", ""}, args...)
	go func() { rs.done <- run(ctx, argv, func(k string) string { return env[k] }, io.Discard, rs.log) }()
	t.Cleanup(func() { rs.stop(t) })
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		sc := bufio.NewScanner(strings.NewReader(rs.log.String()))
		for sc.Scan() {
			var line struct {
				Msg string `json:"msg"`
				URL string `json:"url"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" {
				rs.url = line.URL
				return rs
			}
		}
		select {
		case err := <-rs.done:
			t.Fatalf("run returned before listening: %v\nlog:\n%s", err, rs.log)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("run did not log its address in time; log:\n%s", rs.log)
	return nil
}

// stop cancels run's context and waits for it to return nil.
func (rs *runningServer) stop(t *testing.T) {
	t.Helper()
	if rs.cancel == nil {
		return
	}
	rs.cancel()
	rs.cancel = nil
	select {
	case err := <-rs.done:
		if err != nil {
			t.Errorf("run returned %v, want nil after a graceful shutdown", err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("run did not return after cancel")
	}
}

func TestRunEndToEnd(t *testing.T) {
	env := map[string]string{
		"DATABASE_URL": newTestDSN(t),
		"SECRET_KEY":   strings.Repeat("e", 40),
		"ADDR":         "127.0.0.1:0",
		"PUBLIC_READ":  "false",
	}
	rs := startRun(t, env, "-log-level", "debug")
	if !strings.Contains(rs.log.String(), `"level":"WARN","msg":"registration is open`) {
		t.Errorf("no warning that registration is open:\n%s", rs.log)
	}
	post := func(path, body, token string) *http.Response {
		req, _ := http.NewRequest("POST", rs.url+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		return resp
	}
	if resp := post("/api/v1/register", `{"username":"admin","password":"admin123"}`, ""); resp.StatusCode != http.StatusCreated {
		t.Fatalf("register = %d, want 201", resp.StatusCode)
	}
	resp := post("/api/v1/login", `{"username":"admin","password":"admin123"}`, "")
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	var inc incident
	resp = post("/api/v1/incidents", `{"title":"e2e","severity":"low"}`, "")
	json.NewDecoder(resp.Body).Decode(&inc)
	resp.Body.Close()
	req, _ := http.NewRequest("PATCH", fmt.Sprintf("%s/api/v1/incidents/%d/resolve", rs.url, inc.ID), nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("resolve = %v %v, want 200", resp, err)
	}
	resp.Body.Close()

	// A stream ticket is in a URL, so it must not reach the log.
	var ticket struct {
		Ticket string `json:"ticket"`
	}
	resp = post("/api/v1/stream-tickets", "", tok.AccessToken)
	json.NewDecoder(resp.Body).Decode(&ticket)
	resp.Body.Close()
	var statuses []int
	for range 2 { // accepted, then refused as used
		resp, err = http.Get(rs.url + "/api/v1/events?ticket=" + ticket.Ticket)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		statuses = append(statuses, resp.StatusCode)
	}
	if !slices.Equal(statuses, []int{http.StatusOK, http.StatusUnauthorized}) {
		t.Errorf("a ticket used twice got %v, want [200 401]", statuses)
	}
	rs.stop(t)
	if ticket.Ticket == "" || strings.Contains(rs.log.String(), ticket.Ticket) {
		t.Errorf("no ticket, or the log contains it:\n%s", rs.log)
	}
	if strings.Contains(rs.log.String(), env["SECRET_KEY"]) || strings.Contains(rs.log.String(), tok.AccessToken) {
		t.Errorf("the log contains a secret:\n%s", rs.log)
	}
	if !strings.Contains(rs.log.String(), `"route":"PATCH /api/v1/incidents/{id}/resolve"`) {
		t.Errorf("the log has no request line for the resolve:\n%s", rs.log)
	}
}

// An internal error is logged once, at error level, with the request id the
// client got; the client gets only a generic body.
func TestServerErrorLoggedOnce(t *testing.T) {
	dsn := newTestDSN(t)
	rs := startRun(t, map[string]string{"DATABASE_URL": dsn, "SECRET_KEY": strings.Repeat("e", 40), "ADDR": "127.0.0.1:0"})
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`ALTER TABLE incidents RENAME COLUMN title TO title_gone`); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(rs.url + "/api/v1/incidents")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	id := resp.Header.Get("X-Request-ID")
	if resp.StatusCode != http.StatusInternalServerError || id == "" {
		t.Fatalf("broken table: %d, request id %q; want 500 with an id", resp.StatusCode, id)
	}
	rs.stop(t)
	var lines []string
	for _, line := range strings.Split(rs.log.String(), "\n") {
		var entry struct {
			Level     string `json:"level"`
			RequestID string `json:"request_id"`
			Error     string `json:"error"`
		}
		if json.Unmarshal([]byte(line), &entry) == nil && entry.RequestID == id {
			lines = append(lines, line)
			if entry.Level != "ERROR" || !strings.Contains(entry.Error, "title") {
				t.Errorf("log line for the 500 = %s, want level ERROR with the cause", line)
			}
		}
	}
	if len(lines) != 1 {
		t.Errorf("%d log lines for request %s, want 1:\n%s", len(lines), id, strings.Join(lines, "\n"))
	}
}

func TestRunRefusesBadConfig(t *testing.T) {
	err := run(context.Background(), []string{"incidents", "-env-file", ""}, func(k string) string {
		return map[string]string{"SECRET_KEY": "short", "ALGORITHM": "none"}[k]
	}, io.Discard, io.Discard)
	if err == nil {
		t.Fatal("run with a bad configuration returned nil")
	}
	for _, want := range []string{"DATABASE_URL is required", "SECRET_KEY is 5 bytes", "ALGORITHM must be"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestRunReadsDotEnv(t *testing.T) {
	envFile := filepath.Join(t.TempDir(), ".env")
	dotenv := fmt.Sprintf("DATABASE_URL=%q\nSECRET_KEY=%s\nADDR=127.0.0.1:0\n", newTestDSN(t), strings.Repeat("d", 32))
	if err := os.WriteFile(envFile, []byte(dotenv), 0o600); err != nil {
		t.Fatal(err)
	}
	// An empty environment: everything comes from the file (the last
	// -env-file wins over startRun's).
	rs := startRun(t, map[string]string{}, "-env-file", envFile)
	rs.stop(t)
}

func TestGracefulShutdownFinishesInFlightRequest(t *testing.T) {
	rs := startRun(t, map[string]string{
		"DATABASE_URL": newTestDSN(t),
		"SECRET_KEY":   strings.Repeat("g", 32),
		"ADDR":         "127.0.0.1:0",
	})
	// The request is in flight: headers sent, body still coming.
	body, feed := io.Pipe()
	req, _ := http.NewRequest("POST", rs.url+"/api/v1/incidents", body)
	req.Header.Set("Content-Type", "application/json")
	result := make(chan *http.Response, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Errorf("in-flight request: %v", err)
		}
		result <- resp
	}()
	feed.Write([]byte(`{"title":"arrives during shutdown",`))
	time.Sleep(200 * time.Millisecond) // let the server start reading it

	rs.cancel()
	time.Sleep(200 * time.Millisecond) // shutdown has begun and waits for us
	feed.Write([]byte(`"severity":"low"}`))
	feed.Close()

	resp := <-result
	if resp == nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("in-flight request = %v, want 201", resp)
	}
	resp.Body.Close()
	select {
	case err := <-rs.done:
		if err != nil {
			t.Errorf("run = %v, want nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return after shutdown")
	}
	rs.cancel = nil
	if _, err := http.Get(rs.url + "/healthz"); err == nil {
		t.Error("the server still accepts connections after shutdown")
	}
}

func TestDevModeFromEmptyDirectory(t *testing.T) {
	dir := t.TempDir()
	// PostgreSQL runs as the postgres user when the tests run as root; it
	// must be able to reach the directory.
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	devDir := filepath.Join(dir, ".dev")
	rs := startRun(t, map[string]string{"ADDR": "127.0.0.1:0"}, "-dev", "-dev-dir", devDir)
	resp, err := http.Get(rs.url + "/readyz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("readyz in dev mode = %v %v, want 200", resp, err)
	}
	resp.Body.Close()
	resp, err = http.Post(rs.url+"/api/v1/register", "application/json", strings.NewReader(`{"username":"dev","password":"admin123"}`))
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("register in dev mode = %v %v, want 201", resp, err)
	}
	resp.Body.Close()
	if !strings.Contains(rs.log.String(), `"psql"`) || !strings.Contains(rs.log.String(), `"docs":"`+rs.url+`/docs"`) {
		t.Errorf("dev mode did not log how to connect with psql and where the docs are:\n%s", rs.log)
	}
	// The private cluster listens on its unix socket only.
	var psql struct {
		PSQL string `json:"psql"`
	}
	for _, line := range strings.Split(rs.log.String(), "\n") {
		if json.Unmarshal([]byte(line), &psql) == nil && psql.PSQL != "" {
			break
		}
	}
	db, err := sql.Open("postgres", strings.Trim(strings.TrimPrefix(psql.PSQL, "psql "), `"`))
	if err != nil {
		t.Fatal(err)
	}
	var listen string
	if err := db.QueryRow(`SHOW listen_addresses`).Scan(&listen); err != nil || listen != "" {
		t.Errorf("dev cluster listen_addresses = %q (%v), want none", listen, err)
	}
	db.Close()
	key, err := os.ReadFile(filepath.Join(devDir, "secret_key"))
	if err != nil || len(bytes.TrimSpace(key)) < minSecretKeyBytes {
		t.Errorf("dev secret key = %q, %v; want one of at least 32 bytes", key, err)
	}
	rs.stop(t)
	if _, err := os.Stat(filepath.Join(devDir, "postgres", "postmaster.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("PostgreSQL still running after the dev server stopped (postmaster.pid: %v)", err)
	}

	// A second run reuses the cluster, the data and the key.
	rs = startRun(t, map[string]string{"ADDR": "127.0.0.1:0"}, "-dev", "-dev-dir", devDir)
	resp, err = http.Post(rs.url+"/api/v1/login", "application/json", strings.NewReader(`{"username":"dev","password":"admin123"}`))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("login after restart = %v %v, want 200", resp, err)
	}
	resp.Body.Close()
	key2, _ := os.ReadFile(filepath.Join(devDir, "secret_key"))
	if !bytes.Equal(key, key2) {
		t.Error("the dev secret key changed between runs")
	}

	// Two at once in one directory (replicas on one machine): PostgreSQL
	// runs until the last of them stops, whichever started it.
	other := startRun(t, map[string]string{"ADDR": "127.0.0.1:0"}, "-dev", "-dev-dir", devDir)
	rs.stop(t)
	resp, err = http.Post(other.url+"/api/v1/login", "application/json", strings.NewReader(`{"username":"dev","password":"admin123"}`))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("login on the second dev server after the first stopped = %v %v, want 200", resp, err)
	}
	resp.Body.Close()
	other.stop(t)
	if _, err := os.Stat(filepath.Join(devDir, "postgres", "postmaster.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("PostgreSQL still running after both dev servers stopped (postmaster.pid: %v)", err)
	}
}

// DB_MAX_CONNS bounds the server's connections to PostgreSQL; a burst of
// requests past it waits its turn and is served.
func TestDBMaxConnsBoundsConnections(t *testing.T) {
	dsn := newTestDSN(t)
	rs := startRun(t, map[string]string{"DATABASE_URL": dsn, "SECRET_KEY": strings.Repeat("e", 40), "ADDR": "127.0.0.1:0",
		"DB_MAX_CONNS": "2", "RATE_LIMITS": "off"})
	reports := inParallel(t, 40, func(t testing.TB, i int) response {
		resp, err := http.Post(rs.url+"/api/v1/incidents", "application/json", strings.NewReader(`{"title":"burst","severity":"low"}`))
		if err != nil {
			t.Fatalf("report %d: %v", i, err)
		}
		resp.Body.Close()
		return response{status: resp.StatusCode}
	})
	for i, r := range reports {
		if r.status != http.StatusCreated {
			t.Fatalf("report %d: status %d, want 201", i, r.status)
		}
	}
	// The pool keeps what it opened; the event feed and its listener add
	// one connection each.
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var others int
	if err := db.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`).Scan(&others); err != nil {
		t.Fatal(err)
	}
	if others > 2+2 {
		t.Errorf("the server has %d connections, want at most DB_MAX_CONNS (2) + 2", others)
	}
}

// TestRunMetricsAddr drives run() with METRICS_ADDR and METRICS_TOKEN:
// the metrics move to their own listener, which serves nothing else and
// asks for the token; the main listener answers 404 there; the token is
// never logged.
func TestRunMetricsAddr(t *testing.T) {
	const token = "scrape-token-0123456789"
	rs := startRun(t, map[string]string{"DATABASE_URL": newTestDSN(t), "SECRET_KEY": strings.Repeat("e", 40), "ADDR": "127.0.0.1:0",
		"METRICS_ADDR": "127.0.0.1:0", "METRICS_TOKEN": token})
	var metricsURL string
	sc := bufio.NewScanner(strings.NewReader(rs.log.String()))
	for sc.Scan() {
		var line struct{ Msg, URL string }
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "serving metrics" {
			metricsURL = line.URL
		}
	}
	if metricsURL == "" || metricsURL == rs.url+"/metrics" {
		t.Fatalf("no separate metrics listener logged (got %q); log:\n%s", metricsURL, rs.log)
	}
	get := func(url, token string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	base := strings.TrimSuffix(metricsURL, "/metrics")
	for _, tt := range []struct {
		name, url, token string
		want             int
	}{
		{"metrics listener, token", metricsURL, token, http.StatusOK},
		{"metrics listener, no token", metricsURL, "", http.StatusUnauthorized},
		{"metrics listener, wrong token", metricsURL, "scrape-token-0123456780", http.StatusUnauthorized},
		{"metrics listener serves only /metrics", base + "/healthz", "", http.StatusNotFound},
		{"main listener", rs.url + "/metrics", token, http.StatusNotFound},
		{"main listener still serves the API", rs.url + "/healthz", "", http.StatusOK},
	} {
		if got := get(tt.url, tt.token); got != tt.want {
			t.Errorf("%s: GET %s = %d, want %d", tt.name, tt.url, got, tt.want)
		}
	}
	rs.stop(t)
	if strings.Contains(rs.log.String(), token) {
		t.Errorf("the log contains the metrics token:\n%s", rs.log)
	}
	if !strings.Contains(rs.log.String(), `"route":"GET /metrics","status":200`) {
		t.Errorf("the metrics listener's requests are not logged:\n%s", rs.log)
	}
}

// TestRunVersion checks -version: the build's version, revision and Go
// version on stdout, and nothing started.
func TestRunVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"incidents", "-version"}, func(string) string { return "" }, &stdout, &stderr); err != nil {
		t.Fatalf("run -version = %v, want nil", err)
	}
	b := readBuildInfo()
	if want := fmt.Sprintf("incidents %s (revision %s, %s)\n", b.Version, b.Revision, b.GoVersion); stdout.String() != want {
		t.Errorf("run -version printed %q, want %q", stdout.String(), want)
	}
	if !strings.HasPrefix(b.GoVersion, "go1.") || b.Version == "" || b.Revision == "" {
		t.Errorf("build info %+v: want a version, a revision and a Go version", b)
	}
	if stderr.Len() != 0 {
		t.Errorf("run -version logged %q", stderr.String())
	}
}

// TestRunHealthcheck checks -healthcheck against a running server and
// against a port nothing listens on.
func TestRunHealthcheck(t *testing.T) {
	rs := startRun(t, map[string]string{"DATABASE_URL": newTestDSN(t), "SECRET_KEY": strings.Repeat("e", 40), "ADDR": "127.0.0.1:0"})
	_, port, _ := strings.Cut(strings.TrimPrefix(rs.url, "http://"), ":")
	check := func(env map[string]string) error {
		return run(context.Background(), []string{"incidents", "-healthcheck"}, func(k string) string { return env[k] }, io.Discard, io.Discard)
	}
	if err := check(map[string]string{"PORT": port}); err != nil {
		t.Errorf("-healthcheck with PORT=%s = %v, want nil", port, err)
	}
	if err := check(map[string]string{"ADDR": "127.0.0.1:" + port}); err != nil {
		t.Errorf("-healthcheck with ADDR = %v, want nil", err)
	}
	rs.stop(t)
	if err := check(map[string]string{"PORT": port}); err == nil {
		t.Error("-healthcheck of a stopped server = nil, want an error")
	}
	if err := check(map[string]string{"ADDR": "nonsense"}); err == nil {
		t.Error("-healthcheck with a bad ADDR = nil, want an error")
	}
}
