package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rawRequest writes raw to a new connection to ts, as it is, and reads the
// one response: for requests net/http's client would not send, or would
// send differently. The write goes on in the background, so a server that
// answers before the request is all there is still read.
func rawRequest(t *testing.T, ts *testServer, raw string) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go io.WriteString(conn, raw)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%.40q: read response: %v", raw, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

// TestMuxAnswersAreJSON checks that what the mux answers itself is in the
// API's JSON error shape: a path the mux would redirect to its clean form
// is a 404, like any path the API does not list.
func TestMuxAnswersAreJSON(t *testing.T) {
	ts := newTestServer(t)
	for _, tt := range []struct {
		requestLine string
		wantStatus  int
		wantDetail  string
	}{
		{"GET //api/v1/incidents HTTP/1.1", http.StatusNotFound, "Not Found"},
		{"POST //api/v1/incidents HTTP/1.1", http.StatusNotFound, "Not Found"},
		{"GET /api/v1/./incidents HTTP/1.1", http.StatusNotFound, "Not Found"},
		{"GET /api/v1/x/../incidents?limit=1 HTTP/1.1", http.StatusNotFound, "Not Found"},
		{"DELETE //api/v1/incidents HTTP/1.1", http.StatusNotFound, "Not Found"},
		{"GET //nope HTTP/1.1", http.StatusNotFound, "Not Found"},
		{"GET /api/v1/incidents/1/ HTTP/1.1", http.StatusNotFound, "Not Found"},
		{"GET * HTTP/1.1", http.StatusBadRequest, "Bad Request"},
		{"DELETE /api/v1/incidents HTTP/1.1", http.StatusMethodNotAllowed, "Method Not Allowed"},
	} {
		t.Run(tt.requestLine, func(t *testing.T) {
			resp, body := rawRequest(t, ts, tt.requestLine+"\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status = %d, want %d; body %s", resp.StatusCode, tt.wantStatus, body)
			}
			var got struct{ Detail string }
			if err := json.Unmarshal(body, &got); err != nil || got.Detail != tt.wantDetail {
				t.Errorf("body = %s, want {\"detail\":%q}", body, tt.wantDetail)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			if loc := resp.Header.Get("Location"); loc != "" {
				t.Errorf("Location = %q, want none", loc)
			}
		})
	}
}

// TestAnswersNetHTTPWrites pins what net/http answers itself, before any
// handler runs, so cannot be JSON: docs/api.md says so. A Go release that
// changes one of these fails here, and docs/api.md needs a look.
func TestAnswersNetHTTPWrites(t *testing.T) {
	ts := newTestServer(t)
	for _, tt := range []struct {
		name       string
		raw        string
		wantStatus int
	}{
		{"headers over MaxHeaderBytes", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("b", http.DefaultMaxHeaderBytes+8192) + "\r\n\r\n", http.StatusRequestHeaderFieldsTooLarge},
		{"malformed request line", "GARBAGE\r\n\r\n", http.StatusBadRequest},
		{"HTTP/1.1 without Host", "GET / HTTP/1.1\r\n\r\n", http.StatusBadRequest},
		{"malformed Host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", http.StatusBadRequest},
		{"malformed header", "GET / HTTP/1.1\r\nHost: x\r\nNo colon\r\n\r\n", http.StatusBadRequest},
		{"unsupported HTTP version", "GET / HTTP/3.0\r\nHost: x\r\n\r\n", http.StatusHTTPVersionNotSupported},
		{"unknown Transfer-Encoding", "POST /api/v1/incidents HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", http.StatusNotImplemented},
		{"unknown Expect", "POST /api/v1/incidents HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 2\r\n\r\n{}", http.StatusExpectationFailed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := rawRequest(t, ts, tt.raw)
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status = %d, want %d; body %s", resp.StatusCode, tt.wantStatus, body)
			}
			if resp.Header.Get("X-Request-Id") != "" {
				t.Errorf("X-Request-ID = %q, want none: net/http, not the server, answers this", resp.Header.Get("X-Request-Id"))
			}
		})
	}
}

// TestDeclaredBodyTooLarge sends only the headers of requests whose
// Content-Length is over maxBodyBytes: each is a 413 at once, not a 408
// once bodyReadTimeout has passed, on every route and on none.
func TestDeclaredBodyTooLarge(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.allowedOrigins = []string{"https://app.example"} })
	for _, tt := range []struct {
		method, path, contentType string
		contentLength             int
	}{
		{"POST", "/api/v1/incidents", "application/json", 2 << 20},
		{"POST", "/api/v1/incidents", "application/json", maxBodyBytes + 1},
		{"POST", "/api/v1/login", "application/x-www-form-urlencoded", 2 << 20},
		{"POST", "/api/v1/register", "application/json", 2 << 20},
		{"PATCH", "/api/v1/incidents/1/resolve", "application/json", 2 << 20},
		{"POST", "/api/v1/stream-tickets", "application/json", 2 << 20}, // reads no body, needs credentials
		{"GET", "/api/v1/incidents", "application/json", 2 << 20},
		{"POST", "/api/v1/nope", "application/json", 2 << 20},
		{"DELETE", "/api/v1/incidents", "application/json", 2 << 20},
	} {
		t.Run(fmt.Sprintf("%s %s %d", tt.method, tt.path, tt.contentLength), func(t *testing.T) {
			conn, err := net.Dial("tcp", ts.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n",
				tt.method, tt.path, tt.contentType, tt.contentLength)
			// Before this server's fix the answer came after bodyReadTimeout
			// (30 s); a few seconds leave room for a loaded machine.
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("read response: %v; want a 413 before the body is sent", err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusRequestEntityTooLarge || strings.TrimSpace(string(body)) != `{"detail":"Request body too large"}` {
				t.Errorf("response = %d %s, want 413 {\"detail\":\"Request body too large\"}", resp.StatusCode, body)
			}
			for _, h := range []string{"X-Request-Id", "Access-Control-Allow-Origin"} {
				if resp.Header.Get(h) == "" {
					t.Errorf("413 lacks %s", h)
				}
			}
			if !resp.Close {
				t.Error("413 keeps the connection open, want Connection: close: the body was not read")
			}
		})
	}
}
