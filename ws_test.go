package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lib/pq"
	"golang.org/x/net/websocket"

	"incidents/internal/uring"
)

// rawWS is a minimal WebSocket client written from RFC 6455 for the tests,
// so the framing is checked by code that is not the server's library.
type rawWS struct {
	conn net.Conn
	br   *bufio.Reader
}

// dialRaw opens a WebSocket to path; headers come in name, value pairs. It
// returns the handshake response; the client is nil unless it was a 101.
func dialRaw(t *testing.T, ts *testServer, path string, headers ...string) (*rawWS, *http.Response) {
	t.Helper()
	u, _ := url.Parse(ts.URL)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	req := "GET " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	for i := 0; i+1 < len(headers); i += 2 {
		req += headers[i] + ": " + headers[i+1] + "\r\n"
	}
	if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
		t.Fatalf("write handshake: %v", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read handshake response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		conn.Close()
		return nil, resp
	}
	if resp.Header.Get("Sec-WebSocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("Sec-WebSocket-Accept = %q, want the RFC 6455 example's", resp.Header.Get("Sec-WebSocket-Accept"))
	}
	c := &rawWS{conn: conn, br: br}
	t.Cleanup(func() { conn.Close() })
	return c, resp
}

// waitStream waits until the feed has published every stored event, so
// that a new subscriber's hello names the newest one.
func (ts *testServer) waitStream(t *testing.T) {
	t.Helper()
	var newest int64
	ts.st.db.QueryRow(`SELECT coalesce(max(id), 0) FROM incident_events`).Scan(&newest)
	waitFor(t, "the stream to reach the newest event", func() bool { return ts.srv.hub.currentPosition() >= newest })
}

// mustDial opens a WebSocket and reads its hello.
func mustDial(t *testing.T, ts *testServer, path string, headers ...string) (*rawWS, int64) {
	t.Helper()
	c, resp := dialRaw(t, ts, path, headers...)
	if c == nil {
		t.Fatalf("GET %s: status %d, want 101", path, resp.StatusCode)
	}
	hello := c.readMessage(t)
	if hello.Type != "hello" {
		t.Fatalf("first message = %+v, want hello", hello)
	}
	return c, hello.Seq
}

// readFrame reads one frame; the server must not mask.
func (c *rawWS) readFrame(timeout time.Duration) (opcode byte, payload []byte, err error) {
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return 0, nil, err
	}
	if h[0]&0x80 == 0 || h[0]&0x70 != 0 {
		return 0, nil, fmt.Errorf("frame header %08b: want FIN set and no RSV bits", h[0])
	}
	if h[1]&0x80 != 0 {
		return 0, nil, errors.New("server frame is masked")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		io.ReadFull(c.br, b[:])
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		io.ReadFull(c.br, b[:])
		n = binary.BigEndian.Uint64(b[:])
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(c.br, payload); err != nil {
		return 0, nil, err
	}
	return h[0] & 0x0f, payload, nil
}

// writeFrame sends one masked frame, as clients must.
func (c *rawWS) writeFrame(opcode byte, payload []byte) error {
	b := []byte{0x80 | opcode}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xFFFF:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	var mask [4]byte
	rand.Read(mask[:])
	b = append(b, mask[:]...)
	for i, x := range payload {
		b = append(b, x^mask[i%4])
	}
	_, err := c.conn.Write(b)
	return err
}

// received is a stream message as a test reads it.
type received = eventView

// readMessage returns the next text message, answering pings on the way.
func (c *rawWS) readMessage(t *testing.T) received {
	t.Helper()
	for {
		op, payload, err := c.readFrame(10 * time.Second)
		if err != nil {
			t.Fatalf("read WebSocket frame: %v", err)
		}
		switch op {
		case wsOpPing:
			c.writeFrame(0xA, payload)
			continue
		case wsOpText:
			var m received
			if err := json.Unmarshal(payload, &m); err != nil {
				t.Fatalf("message %q is not JSON: %v", payload, err)
			}
			return m
		case wsOpClose:
			t.Fatalf("connection closed: code %d %q", closeCode(payload), payload[min(2, len(payload)):])
		default:
			t.Fatalf("unexpected opcode %d", op)
		}
	}
}

// readClose reads until a close frame and returns its code and reason.
func (c *rawWS) readClose(t *testing.T, timeout time.Duration) (int, string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		op, payload, err := c.readFrame(time.Until(deadline))
		if err != nil {
			t.Fatalf("waiting for a close frame: %v", err)
		}
		if op == wsOpClose {
			return closeCode(payload), string(payload[min(2, len(payload)):])
		}
	}
	t.Fatal("no close frame in time")
	return 0, ""
}

func closeCode(payload []byte) int {
	if len(payload) < 2 {
		return 0
	}
	return int(binary.BigEndian.Uint16(payload))
}

// expectSeqs reads n events and checks they are exactly the want sequence.
func (c *rawWS) expectSeqs(t *testing.T, want []int64) []received {
	t.Helper()
	var got []received
	for range want {
		got = append(got, c.readMessage(t))
	}
	for i := range want {
		if got[i].Seq != want[i] {
			seqs := make([]int64, len(got))
			for j, m := range got {
				seqs[j] = m.Seq
			}
			t.Fatalf("received seqs %v, want %v", seqs, want)
		}
	}
	return got
}

// eventSeqs lists the stored events' sequence numbers after since.
func eventSeqs(t *testing.T, ts *testServer, since int64) []int64 {
	t.Helper()
	rows, err := ts.st.db.Query(`SELECT id FROM incident_events WHERE id > $1 ORDER BY id`, since)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var seqs []int64
	for rows.Next() {
		var s int64
		rows.Scan(&s)
		seqs = append(seqs, s)
	}
	return seqs
}

func TestWSSeedCompatibility(t *testing.T) {
	ts := newTestServer(t)
	token := ts.register(t, "oncall", "password1")
	// The library's own client, as the original system's users had.
	ws, err := websocket.Dial(strings.Replace(ts.URL, "http", "ws", 1)+"/api/v1/ws", "", ts.URL)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	var raw string
	if err := websocket.Message.Receive(ws, &raw); err != nil || !strings.Contains(raw, `"type":"hello"`) {
		t.Fatalf("first message = %q, %v; want hello", raw, err)
	}
	inc := ts.createIncident(t, "Checkout failing", "critical")
	ts.request(t, "PATCH", fmt.Sprintf("/api/v1/incidents/%d/resolve", inc.ID), "", bearer(token)...).mustStatus(t, "resolve", http.StatusOK)
	for _, wantType := range []string{"added", "resolved"} {
		if err := websocket.Message.Receive(ws, &raw); err != nil {
			t.Fatalf("receive %s: %v", wantType, err)
		}
		var msg struct {
			Type string         `json:"type"`
			Seq  int64          `json:"seq"`
			Data map[string]any `json:"data"`
		}
		if err := json.Unmarshal([]byte(raw), &msg); err != nil {
			t.Fatalf("message %q: %v", raw, err)
		}
		if msg.Type != wantType || msg.Seq == 0 {
			t.Fatalf("message = %s, want type %s with a seq", raw, wantType)
		}
		for _, key := range []string{"title", "description", "severity", "id", "status", "created_at"} {
			if _, ok := msg.Data[key]; !ok {
				t.Errorf("%s data lacks %q: %s", wantType, key, raw)
			}
		}
		if msg.Data["title"] != "Checkout failing" || msg.Data["severity"] != "critical" {
			t.Errorf("%s data = %v", wantType, msg.Data)
		}
		if wantType == "resolved" && (msg.Data["status"] != "resolved" || msg.Data["resolved_by"] != "oncall") {
			t.Errorf("resolved data = %v, want status resolved by oncall", msg.Data)
		}
	}
}

func TestWSHelloFiltersAndValidation(t *testing.T) {
	ts := newTestServer(t)
	ts.createIncident(t, "before", "low")
	ts.waitStream(t)
	c, hello := mustDial(t, ts, "/api/v1/ws?severity=high,critical&status=open")
	if want := eventSeqs(t, ts, 0); hello != want[len(want)-1] {
		t.Errorf("hello seq = %d, want the newest seq %d", hello, want[len(want)-1])
	}
	ts.createIncident(t, "low one", "low")
	high := ts.createIncident(t, "high one", "high")
	ts.createIncident(t, "medium one", "medium")
	crit := ts.createIncident(t, "critical one", "critical")
	for _, want := range []int64{high.ID, crit.ID} {
		m := c.readMessage(t)
		var data incident
		json.Unmarshal(m.Data, &data)
		if data.ID != want {
			t.Errorf("filtered stream delivered incident %d (%s), want %d", data.ID, data.Severity, want)
		}
	}

	for _, tt := range []struct {
		query     string
		wantTypes []string
	}{
		{"since=-1", []string{"greater_than_equal@query.since"}},
		{"since=abc", []string{"int_parsing@query.since"}},
		{"severity=urgent", []string{"enum@query.severity"}},
		{"status=closed&since=x", []string{"enum@query.status", "int_parsing@query.since"}},
	} {
		c, resp := dialRaw(t, ts, "/api/v1/ws?"+tt.query)
		if c != nil {
			t.Fatalf("?%s: upgraded, want a 422 before the upgrade", tt.query)
		}
		body, _ := io.ReadAll(resp.Body)
		response{status: resp.StatusCode, body: body}.mustProblems(t, "?"+tt.query, tt.wantTypes...)
	}
	r := ts.request(t, "GET", "/api/v1/ws", "")
	r.mustStatus(t, "plain GET /api/v1/ws", http.StatusBadRequest)
}

// SSE takes the same filters and refuses the same bad values.
func TestSSEFiltersAndValidation(t *testing.T) {
	ts := newTestServer(t)
	sse := openSSE(t, ts, "/api/v1/events?severity=high,critical&status=open")
	if ev, ok := sse.next(t); !ok || ev.event != "hello" {
		t.Fatalf("first SSE event = %+v, %v", ev, ok)
	}
	ts.createIncident(t, "low one", "low")
	high := ts.createIncident(t, "high one", "high")
	ts.createIncident(t, "medium one", "medium")
	crit := ts.createIncident(t, "critical one", "critical")
	for _, want := range []int64{high.ID, crit.ID} {
		ev, ok := sse.next(t)
		var m received
		json.Unmarshal([]byte(ev.data), &m)
		var data incident
		json.Unmarshal(m.Data, &data)
		if !ok || ev.event != "added" || data.ID != want {
			t.Errorf("filtered SSE delivered %+v (incident %d), want incident %d", ev, data.ID, want)
		}
	}
	for query, wantTypes := range map[string][]string{
		"severity=urgent":       {"enum@query.severity"},
		"status=closed&since=x": {"enum@query.status", "int_parsing@query.since"},
		"since=-1":              {"greater_than_equal@query.since"},
	} {
		ts.request(t, "GET", "/api/v1/events?"+query, "").mustProblems(t, "SSE ?"+query, wantTypes...)
	}
}

// NOTIFY carries the event's id only, never the incident: payloads are
// capped at 8000 bytes.
func TestNotifyPayloadIsTheID(t *testing.T) {
	ts := newTestServer(t)
	l := pq.NewListener(ts.srv.cfg.databaseURL, 10*time.Millisecond, time.Second, nil)
	defer l.Close()
	if err := l.Listen(notifyChannel); err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf(`{"title":"long","severity":"low","description":%q}`, strings.Repeat("d", 10000))
	var inc incident
	ts.request(t, "POST", "/api/v1/incidents", body).mustStatus(t, "create", http.StatusCreated).json(t, &inc)
	want := eventSeqs(t, ts, 0)
	select {
	case n := <-l.Notify:
		if n == nil || n.Extra != strconv.FormatInt(want[len(want)-1], 10) {
			t.Errorf("notification = %+v, want the event id %d", n, want[len(want)-1])
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no notification")
	}
}

// Upgrade requests RFC 6455 calls invalid get a JSON error, not the
// library's plain text or, for a malformed key, a connection.
func TestWSHandshakeErrors(t *testing.T) {
	ts := newTestServer(t)
	valid := map[string]string{"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
	for _, tt := range []struct {
		name, header, value string // value "" leaves the header out
		status              int
		detail              string
	}{
		{"no upgrade", "Upgrade", "", 400, "Expected a WebSocket upgrade request"},
		{"no Connection: Upgrade", "Connection", "keep-alive", 400, "Expected a WebSocket upgrade request: Connection must include Upgrade"},
		{"old version", "Sec-WebSocket-Version", "8", 426, "Unsupported WebSocket version: this server speaks 13"},
		{"no version", "Sec-WebSocket-Version", "", 426, "Unsupported WebSocket version: this server speaks 13"},
		{"short key", "Sec-WebSocket-Key", "short", 400, "Sec-WebSocket-Key must be 16 bytes in base64"},
		{"no key", "Sec-WebSocket-Key", "", 400, "Sec-WebSocket-Key must be 16 bytes in base64"},
	} {
		var headers []string
		for k, v := range valid {
			if k == tt.header {
				v = tt.value
			}
			if v != "" {
				headers = append(headers, k, v)
			}
		}
		r := ts.request(t, "GET", "/api/v1/ws", "", headers...)
		r.mustStatus(t, tt.name, tt.status)
		if d := r.detail(t); d != tt.detail {
			t.Errorf("%s: detail %q, want %q", tt.name, d, tt.detail)
		}
		if tt.status == 426 && r.header.Get("Sec-WebSocket-Version") != "13" {
			t.Errorf("%s: Sec-WebSocket-Version %q, want 13", tt.name, r.header.Get("Sec-WebSocket-Version"))
		}
	}
}

func TestWSOrigin(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.allowedOrigins = []string{"https://dash.example"} })
	own := ts.URL // the server's own origin
	for _, tt := range []struct {
		name       string
		headers    []string
		wantStatus int
	}{
		{"no origin (a script)", nil, http.StatusSwitchingProtocols},
		{"allowed origin", []string{"Origin", "https://dash.example"}, http.StatusSwitchingProtocols},
		{"own origin", []string{"Origin", own}, http.StatusSwitchingProtocols},
		{"other origin", []string{"Origin", "https://evil.example"}, http.StatusForbidden},
		{"allowed host, other scheme", []string{"Origin", "http://dash.example"}, http.StatusForbidden},
		{"null origin", []string{"Origin", "null"}, http.StatusForbidden},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, resp := dialRaw(t, ts, "/api/v1/ws", tt.headers...)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if c != nil {
				if m := c.readMessage(t); m.Type != "hello" {
					t.Errorf("first message = %+v, want hello", m)
				}
			}
		})
	}
}

func TestStreamAcrossInstances(t *testing.T) {
	a := newTestServer(t)
	st, err := openStore(context.Background(), a.srv.cfg.databaseURL, 5*time.Second, defaultDBMaxConns)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	b := newTestServerOn(t, st, a.srv.cfg)
	b.startStream(t)

	c, hello := mustDial(t, b, "/api/v1/ws")
	var want []int64
	for i := range 20 {
		a.createIncident(t, fmt.Sprintf("on A %d", i), "medium")
		want = append(want, hello+int64(i)+1)
	}
	c.expectSeqs(t, want)
}

func TestWSResume(t *testing.T) {
	ts := newTestServer(t)
	c, hello := mustDial(t, ts, "/api/v1/ws")
	for range 3 {
		ts.createIncident(t, "first batch", "low")
	}
	got := c.expectSeqs(t, []int64{hello + 1, hello + 2, hello + 3})
	last := got[2].Seq
	c.writeFrame(wsOpClose, binary.BigEndian.AppendUint16(nil, closeNormal))
	if code, _ := c.readClose(t, 5*time.Second); code != closeNormal {
		t.Errorf("close answered with %d, want %d", code, closeNormal)
	}
	waitFor(t, "the hub to drop the closed subscriber", func() bool { return ts.srv.hub.count() == 0 })

	for range 4 {
		ts.createIncident(t, "while away", "low")
	}
	c, _ = mustDial(t, ts, "/api/v1/ws?since="+strconv.FormatInt(last, 10))
	c.expectSeqs(t, []int64{last + 1, last + 2, last + 3, last + 4})
	ts.createIncident(t, "live again", "low")
	c.expectSeqs(t, []int64{last + 5})

	// since=0 replays everything; a since beyond every stored event is
	// live only.
	c, _ = mustDial(t, ts, "/api/v1/ws?since=0")
	all := eventSeqs(t, ts, 0)
	c.expectSeqs(t, all)
	c, hello = mustDial(t, ts, "/api/v1/ws?since=999999")
	ts.createIncident(t, "after a future since", "low")
	c.expectSeqs(t, []int64{hello + 1})
}

// sseClient reads a Server-Sent Events stream.
type sseClient struct {
	resp *http.Response
	sc   *bufio.Scanner
}

type sseEvent struct {
	id, event, data string
}

func openSSE(t *testing.T, ts *testServer, path string, headers ...string) *sseClient {
	t.Helper()
	req, _ := http.NewRequest("GET", ts.URL+path, nil)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET %s = %d %q, want 200 text/event-stream", path, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return &sseClient{resp: resp, sc: bufio.NewScanner(resp.Body)}
}

// next returns the next event, skipping comments; ok is false at the end.
func (c *sseClient) next(t *testing.T) (sseEvent, bool) {
	t.Helper()
	var ev sseEvent
	timer := time.AfterFunc(10*time.Second, func() { c.resp.Body.Close() })
	defer timer.Stop()
	for c.sc.Scan() {
		line := c.sc.Text()
		switch {
		case line == "":
			if ev.event != "" || ev.data != "" {
				return ev, true
			}
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "id: "):
			ev.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			ev.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			ev.data = line[6:]
		default:
			t.Fatalf("unexpected SSE line %q", line)
		}
	}
	return ev, false
}

func TestSSEResume(t *testing.T) {
	ts := newTestServer(t)
	ts.createIncident(t, "old", "low")
	c := openSSE(t, ts, "/api/v1/events?since=0")
	hello, _ := c.next(t)
	if hello.event != "hello" || hello.id != "" {
		t.Fatalf("first SSE event = %+v, want hello without an id", hello)
	}
	ev, _ := c.next(t)
	var msg received
	json.Unmarshal([]byte(ev.data), &msg)
	if ev.event != "added" || ev.id != strconv.FormatInt(msg.Seq, 10) || msg.Type != "added" {
		t.Fatalf("replayed event = %+v, want added with id = seq", ev)
	}
	ts.createIncident(t, "live", "high")
	live, _ := c.next(t)
	c.resp.Body.Close()

	for range 3 {
		ts.createIncident(t, "missed", "low")
	}
	// EventSource reconnects with the original URL and Last-Event-ID, which wins.
	c = openSSE(t, ts, "/api/v1/events?since=0", "Last-Event-ID", live.id)
	c.next(t) // hello
	lastID, _ := strconv.ParseInt(live.id, 10, 64)
	for i := int64(1); i <= 3; i++ {
		ev, ok := c.next(t)
		if !ok || ev.id != strconv.FormatInt(lastID+i, 10) {
			t.Fatalf("resumed event %d = %+v, want id %d", i, ev, lastID+i)
		}
	}
	ts.createIncident(t, "live after resume", "low")
	if ev, _ := c.next(t); ev.id != strconv.FormatInt(lastID+4, 10) {
		t.Errorf("live event after resume = %+v, want id %d", ev, lastID+4)
	}

	r := ts.request(t, "GET", "/api/v1/events", "", "Last-Event-ID", "nope")
	r.mustStatus(t, "bad Last-Event-ID", http.StatusUnprocessableEntity)
	if got := problemTypes(t, r); strings.Join(got, " ") != "int_parsing@header.last-event-id" {
		t.Errorf("problems = %v, want int_parsing@header.last-event-id", got)
	}
}

// TestStreamSeam connects with since while events are being created, again
// and again: the replay/live seam must have no gap and no duplicate.
func TestStreamSeam(t *testing.T) {
	ts := newTestServer(t)
	inc := ts.createIncident(t, "busy", "high")
	ctx, cancel := context.WithCancel(context.Background())
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for ctx.Err() == nil {
			ts.st.inTx(ctx, func(tx *sql.Tx) error {
				return ts.st.appendEvent(ctx, tx, "added", inc, actorRef{}, nil, time.Now())
			})
		}
	}()
	defer func() { cancel(); <-writerDone }()

	rounds := 200
	if testing.Short() {
		rounds = 20
	}
	for round := range rounds {
		since := ts.srv.hub.currentPosition() - int64(round%7)
		c, _ := mustDial(t, ts, fmt.Sprintf("/api/v1/ws?since=%d", since))
		for want := since + 1; want <= since+12; want++ {
			if m := c.readMessage(t); m.Seq != want {
				t.Fatalf("round %d: got seq %d, want %d (since=%d)", round, m.Seq, want, since)
			}
		}
		c.conn.Close()
	}
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

func TestFeedOutOfOrderCommit(t *testing.T) {
	ts := newTestServer(t)
	// A transaction that holds a gap past gapWait is still waited for: it
	// has not ended, so it may commit.
	ts.srv.feed.gapWait = 200 * time.Millisecond
	inc := ts.createIncident(t, "ordering", "low")
	ts.waitStream(t)
	c, hello := mustDial(t, ts, "/api/v1/ws")
	begin := func() (*sql.Tx, int64) { return beginEvent(t, ts.st.db, inc.ID) }
	first, firstSeq := begin()
	second, secondSeq := begin()
	if firstSeq != hello+1 || secondSeq != hello+2 {
		t.Fatalf("seqs = %d, %d; want %d, %d", firstSeq, secondSeq, hello+1, hello+2)
	}
	if err := second.Commit(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the feed sees seq+2 without seq+1 and must wait
	if err := first.Commit(); err != nil {
		t.Fatal(err)
	}
	c.expectSeqs(t, []int64{firstSeq, secondSeq})

	// A rolled-back id is a gap the feed skips after gapWait, though an
	// unrelated transaction (one that writes no events) stays open.
	unrelated, err := ts.st.db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer unrelated.Rollback()
	if _, err := unrelated.Exec(`SELECT pg_current_xact_id()`); err != nil {
		t.Fatal(err)
	}
	if waited := skipRolledBack(t, ts.st.db, c, inc.ID); waited > 3*time.Second {
		t.Errorf("a rolled-back id held the stream %v while an unrelated transaction ran; want about gapWait", waited)
	}

	// A transaction left open past gapMaxWait no longer holds the stream up.
	ts.srv.feed.gapMaxWait = 500 * time.Millisecond
	open, _ := begin()
	defer open.Rollback()
	after, afterSeq := begin()
	after.Commit()
	c.expectSeqs(t, []int64{afterSeq})
}

// When PostgreSQL cannot say which transactions still write events, the
// feed cannot tell a rollback from a slow commit: it waits out gapMaxWait,
// then skips the gap rather than hold the stream for good.
func TestFeedSkipsGapWhenWritersUnknown(t *testing.T) {
	// The feed's connections look for pg_locks in public before
	// pg_catalog, where the test puts one that fails: PostgreSQL answers the
	// feed's lock queries with an error, as it would for a role not allowed
	// to read the view.
	ts := newTestServer(t, func(c *config) {
		c.databaseURL = withDSNParam(c.databaseURL, "search_path", "public,pg_catalog")
	})
	for _, stmt := range []string{
		`CREATE FUNCTION public.no_locks() RETURNS TABLE (locktype text, relation oid, mode text, granted boolean, database oid, virtualtransaction text)
			LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'pg_locks is not readable here'; END $$`,
		`CREATE VIEW public.pg_locks AS SELECT * FROM public.no_locks()`,
	} {
		if _, err := ts.st.db.Exec(stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	ts.srv.feed.gapWait = 200 * time.Millisecond
	ts.srv.feed.gapMaxWait = 2 * time.Second
	inc := ts.createIncident(t, "unknown writers", "low")
	ts.waitStream(t)
	c, _ := mustDial(t, ts, "/api/v1/ws")
	if waited := skipRolledBack(t, ts.st.db, c, inc.ID); waited < ts.srv.feed.gapMaxWait {
		t.Errorf("the gap was skipped after %v, though the feed could not tell whether its transaction had ended (if its pg_locks queries failed); want gapMaxWait (%v)", waited, ts.srv.feed.gapMaxWait)
	}
}

// beginEvent starts a transaction that appends an event to incident
// incidentID, and returns it, uncommitted, with the event's sequence
// number.
func beginEvent(t *testing.T, db *sql.DB, incidentID int64) (*sql.Tx, int64) {
	t.Helper()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	var seq int64
	if err := tx.QueryRow(`INSERT INTO incident_events (incident_id, type, data) VALUES ($1, 'added', '{"id":1}') RETURNING id`, incidentID).Scan(&seq); err != nil {
		t.Fatal(err)
	}
	return tx, seq
}

// skipRolledBack rolls back an event's transaction and commits the next
// one's, and returns how long the feed took to deliver the committed event
// to c past the gap the rollback left.
func skipRolledBack(t *testing.T, db *sql.DB, c *rawWS, incidentID int64) time.Duration {
	t.Helper()
	rolledBack, _ := beginEvent(t, db, incidentID)
	kept, keptSeq := beginEvent(t, db, incidentID)
	start := time.Now()
	rolledBack.Rollback()
	if err := kept.Commit(); err != nil {
		t.Fatal(err)
	}
	c.expectSeqs(t, []int64{keptSeq})
	return time.Since(start)
}

func TestFeedSurvivesListenerOutage(t *testing.T) {
	ts := newTestServer(t)
	listenerPID := func() int {
		var pid int
		ts.st.db.QueryRow(`SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'listen%'`).Scan(&pid)
		return pid
	}
	// The listener connects in the background; the feed polls until then.
	waitFor(t, "the listener backend", func() bool { return listenerPID() != 0 })
	old := listenerPID()
	c, hello := mustDial(t, ts, "/api/v1/ws")
	ts.createIncident(t, "before outage", "low")
	c.expectSeqs(t, []int64{hello + 1})
	// Poll rarely, so only the reconnect catch-up can deliver in time.
	ts.srv.feed.pollInterval = time.Hour
	if _, err := ts.st.db.Exec(`SELECT pg_terminate_backend($1)`, old); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		ts.createIncident(t, "during outage", "high")
	}
	c.expectSeqs(t, []int64{hello + 2, hello + 3, hello + 4, hello + 5, hello + 6})
	waitFor(t, "a new listener backend", func() bool { p := listenerPID(); return p != 0 && p != old })
	ts.createIncident(t, "after outage", "low")
	c.expectSeqs(t, []int64{hello + 7})
}

func TestStalledSubscriberDoesNotDelayOthers(t *testing.T) {
	ts := newTestServer(t)
	ts.srv.hub.maxPending = 300
	// Long enough that only the full queue, not a failed write, can drop it.
	ts.srv.hub.writeTimeout = time.Minute
	inc := ts.createIncident(t, "big", "critical")
	ts.waitStream(t)

	stalled, resp := dialRaw(t, ts, "/api/v1/ws")
	if stalled == nil {
		t.Fatalf("stalled client: status %d", resp.StatusCode)
	}
	stalled.conn.(*net.TCPConn).SetReadBuffer(4096)
	healthy, hello := mustDial(t, ts, "/api/v1/ws")
	waitFor(t, "two subscribers", func() bool { return ts.srv.hub.count() == 2 })

	// The healthy client reads while the events arrive; the writer stays at
	// most one batch ahead of it, so only the stalled client falls behind.
	const n, batch = 3000, 100
	var delivered atomic.Int64
	readerDone := make(chan error, 1)
	go func() {
		for i := int64(1); i <= n; i++ {
			op, payload, err := healthy.readFrame(10 * time.Second)
			if err != nil || op != wsOpText {
				readerDone <- fmt.Errorf("frame %d: opcode %d, %v: %s", i, op, err, payload)
				return
			}
			var m received
			json.Unmarshal(payload, &m)
			if m.Seq != hello+i {
				readerDone <- fmt.Errorf("healthy subscriber got seq %d, want %d", m.Seq, hello+i)
				return
			}
			delivered.Add(1)
		}
		readerDone <- nil
	}()

	// Enough large events to fill the stalled client's socket buffers and
	// then its queue.
	inc.Description = strings.Repeat("x", 10000)
	for sent := 0; sent < n; sent += batch {
		waitFor(t, "the healthy subscriber to keep up", func() bool { return delivered.Load() >= int64(sent-batch) })
		ts.appendEvents(t, inc, batch)
	}
	if err := <-readerDone; err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the stalled subscriber to be dropped", func() bool { return ts.srv.hub.count() == 1 })
	ts.createIncident(t, "still flowing", "low")
	healthy.expectSeqs(t, []int64{hello + n + 1})
}

func TestBadClientsAffectOnlyThemselves(t *testing.T) {
	ts := newTestServer(t)
	healthy, hello := mustDial(t, ts, "/api/v1/ws")
	binaryClient, _ := mustDial(t, ts, "/api/v1/ws")
	bigClient, _ := mustDial(t, ts, "/api/v1/ws")
	garbageClient, _ := mustDial(t, ts, "/api/v1/ws")

	binaryClient.writeFrame(0x2, []byte{0, 1, 2, 3, 0xff})
	binaryClient.writeFrame(wsOpText, []byte("not json at all"))
	bigClient.writeFrame(wsOpText, []byte(strings.Repeat("a", 5000)))
	garbageClient.conn.Write([]byte("GET / HTTP/1.1\r\n\r\n\x00\x01garbage"))

	if code, _ := bigClient.readClose(t, 5*time.Second); code != closeTooBig {
		t.Errorf("oversized frame: close code %d, want %d", code, closeTooBig)
	}
	if code, _ := garbageClient.readClose(t, 5*time.Second); code != closeProtocol {
		t.Errorf("garbage: close code %d, want %d", code, closeProtocol)
	}
	if op, payload, err := garbageClient.readFrame(time.Second); err == nil {
		t.Errorf("garbage: after the close frame came opcode %d %q; want the connection closed", op, payload)
	}
	ts.createIncident(t, "after the bad clients", "low")
	healthy.expectSeqs(t, []int64{hello + 1})
	binaryClient.expectSeqs(t, []int64{hello + 1}) // ignored frames do not end it
	ts.request(t, "GET", "/api/v1/incidents", "").mustStatus(t, "REST after bad clients", http.StatusOK)
	ts.request(t, "POST", "/api/v1/incidents", `{"title":"t","severity":"low"}`).mustStatus(t, "create after bad clients", http.StatusCreated)
	healthy.expectSeqs(t, []int64{hello + 2})
}

func TestWSPingAndSSEKeepalive(t *testing.T) {
	ts := newTestServer(t)
	ts.srv.pingInterval = 50 * time.Millisecond
	c, _ := mustDial(t, ts, "/api/v1/ws")
	op, _, err := c.readFrame(5 * time.Second)
	if err != nil || op != wsOpPing {
		t.Fatalf("idle WebSocket got opcode %d (%v), want a ping", op, err)
	}
	// A ping from the client is answered by a pong even between our writes.
	c.writeFrame(wsOpPing, []byte("hi"))
	for {
		op, payload, err := c.readFrame(5 * time.Second)
		if err != nil {
			t.Fatalf("waiting for pong: %v", err)
		}
		if op == 0xA {
			if string(payload) != "hi" {
				t.Errorf("pong payload = %q, want hi", payload)
			}
			break
		}
	}

	// The timeout turns a missing keepalive into a failure, not a hang.
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(ts.URL + "/api/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if sc.Text() == ": keepalive" {
			return
		}
	}
	t.Error("no SSE keepalive comment")
}

func TestStreamShutdown(t *testing.T) {
	env := map[string]string{"DATABASE_URL": newTestDSN(t), "SECRET_KEY": strings.Repeat("s", 32), "ADDR": "127.0.0.1:0"}
	rs := startRun(t, env)
	u, _ := url.Parse(rs.url)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /api/v1/ws HTTP/1.1\r\nHost: "+u.Host+"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	c := &rawWS{conn: conn, br: bufio.NewReader(conn)}
	if resp, err := http.ReadResponse(c.br, nil); err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	c.readMessage(t) // hello

	sseResp, err := http.Get(rs.url + "/api/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	defer sseResp.Body.Close()
	sse := &sseClient{resp: sseResp, sc: bufio.NewScanner(sseResp.Body)}
	sse.next(t) // hello

	done := make(chan struct{})
	go func() { rs.stop(t); close(done) }()
	code, reason := c.readClose(t, 10*time.Second)
	if code != closeGoingAway || !strings.Contains(reason, "since=") {
		t.Errorf("WebSocket closed with %d %q, want 1001 telling where to resume", code, reason)
	}
	ev, _ := sse.next(t)
	if ev.event != "close" || !strings.Contains(ev.data, "since") {
		t.Errorf("SSE final event = %+v, want close with since", ev)
	}
	if _, ok := sse.next(t); ok {
		t.Error("SSE stream continues after shutdown")
	}
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return after shutdown with subscribers")
	}
}

// The library answers client pings on the connection our writes set a
// deadline on; an idle subscriber's pong must not fail on an old deadline.
func TestWSPongAfterIdle(t *testing.T) {
	ts := newTestServer(t)
	ts.srv.hub.writeTimeout = 100 * time.Millisecond
	ts.srv.pingInterval = time.Hour
	c, _ := mustDial(t, ts, "/api/v1/ws")
	time.Sleep(300 * time.Millisecond) // past the hello's write deadline
	c.writeFrame(wsOpPing, []byte("still there?"))
	op, payload, err := c.readFrame(5 * time.Second)
	if err != nil || op != 0xA || string(payload) != "still there?" {
		t.Fatalf("got opcode %d %q (%v), want the pong", op, payload, err)
	}
}

// appendEvents appends n "added" events for inc in one transaction, the
// size of the stream's batch.
func (ts *testServer) appendEvents(t *testing.T, inc incident, n int) {
	t.Helper()
	if err := ts.st.inTx(context.Background(), func(tx *sql.Tx) error {
		for range n {
			if err := ts.st.appendEvent(context.Background(), tx, "added", inc, actorRef{}, nil, time.Now()); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// tcpPair is a connected loopback TCP pair with small buffers, so writes
// soon find the socket full.
func tcpPair(t *testing.T) (server, client *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	client = cc.(*net.TCPConn)
	sc, _ := (<-accepted).(*net.TCPConn)
	if sc == nil {
		t.Fatal("accept failed")
	}
	client.SetReadBuffer(4096)
	sc.SetWriteBuffer(4096)
	t.Cleanup(func() { sc.Close(); client.Close() })
	return sc, client
}

// A frame that a direct write could only begin is finished by the writer
// before anything else, and the library's frames (pongs) wait for it: the
// client sees whole frames only, in order. Both ways of sending direct
// writes are checked: io_uring and write(2).
func TestWSConnPartialWriteKeepsFramesWhole(t *testing.T) {
	for _, ring := range []bool{true, false} {
		t.Run(fmt.Sprintf("io_uring=%v", ring), func(t *testing.T) {
			if out := testSender(t, ring); out != nil {
				testPartialWrite(t, out)
			}
		})
	}
}

// A direct write whose outcome io_uring could not report (the ring failed
// mid-batch) is neither queued nor repeated: the connection ends at once,
// with nothing after what may have left, and the subscriber is to be
// ended.
func TestDirectWriteUnknownEndsSubscriber(t *testing.T) {
	sc, cc := tcpPair(t)
	conn := newWSConn(sc, time.Minute)
	sub := newSubscriber(streamFilter{}, principal{}, conn)
	sub.waiting(0)
	ev := &streamEvent{seq: 1, wsFrame: wsFrame(wsOpText, []byte(`{"type":"added","seq":1}`))}
	b, ok := sub.offer(newBatch([]*streamEvent{ev}), 10)
	if !ok || len(b.events) != 1 {
		t.Fatalf("offer to an idle subscriber = %d events, %v; want the event to write directly", len(b.events), ok)
	}
	if sub.wrote(b, uring.Unknown, 10) {
		t.Fatal("wrote with an unknown outcome kept the subscriber; want it ended")
	}
	if !conn.frameMu.TryLock() {
		t.Fatal("the connection is still claimed after an unknown outcome")
	}
	conn.frameMu.Unlock()
	if _, err := conn.Write(wsPingFrame); err == nil {
		t.Error("the library could still write to the connection after an unknown outcome")
	}
	cc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := cc.Read(make([]byte, 64)); n != 0 || err != io.EOF {
		t.Errorf("client read %d bytes, %v; want the connection ended", n, err)
	}
	events, sent, _ := sub.take()
	if len(events) != 0 || sent != 0 {
		t.Errorf("after an unknown outcome: %d events queued, sent up to %d; want none of it counted", len(events), sent)
	}
	// publish ends it as it ends one that is behind; the writer must know
	// the difference.
	sub.end(endOverflow)
	if _, _, reason := sub.take(); reason != endInterrupted {
		t.Errorf("after an unknown outcome the subscriber ends with reason %d; want endInterrupted", reason)
	}
}

// A stream that ended because a write's outcome is unknown writes nothing
// more, not even a close frame: it could land inside a frame.
func TestInterruptedStreamWritesNothingMore(t *testing.T) {
	sub := newSubscriber(streamFilter{}, principal{}, nil)
	c := &subscription{s: &server{pingInterval: time.Hour}, sub: sub}
	var out recordingOut
	sub.end(endInterrupted)
	if c.run(context.Background(), 0, &out) {
		t.Fatal("run says the client went; want the server ending the stream")
	}
	if len(out.msgs) != 1 || out.msgs[0] != "hello" {
		t.Errorf("the stream wrote %q; want only the hello", out.msgs)
	}
}

// recordingOut is a streamOut that keeps what is written.
type recordingOut struct{ msgs []string }

func (o *recordingOut) frame(ev *streamEvent) []byte { return ev.wsFrame }
func (o *recordingOut) hello(int64) []byte           { return []byte("hello") }
func (o *recordingOut) keepalive() []byte            { return []byte("ping") }
func (o *recordingOut) goodbye(endReason, int64, string) []byte {
	return []byte("goodbye")
}
func (o *recordingOut) write(msgs ...[]byte) error {
	for _, m := range msgs {
		o.msgs = append(o.msgs, string(m))
	}
	return nil
}

// When io_uring fails, the sender reports what the kernel never took as
// not written (the writer sends it), drops the ring and writes with
// write(2) from then on.
func TestSenderFallsBackWhenRingFails(t *testing.T) {
	before := ringFDs(t)
	out := testSender(t, true)
	if out == nil {
		return // logged: no io_uring here
	}
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(p[0])
	defer syscall.Close(p[1])
	for _, fd := range ringFDs(t) {
		if !slices.Contains(before, fd) {
			// The ring's descriptor now names a pipe: io_uring_enter fails.
			if err := syscall.Dup3(p[0], fd, syscall.O_CLOEXEC); err != nil {
				t.Fatalf("dup3: %v", err)
			}
		}
	}

	sc, cc := tcpPair(t)
	conn := newWSConn(sc, time.Minute)
	sub := newSubscriber(streamFilter{}, principal{}, conn)
	wire := wsFrame(wsOpText, []byte("once"))
	send := func() int {
		if !conn.claim() {
			t.Fatal("the connection is claimed")
		}
		writes := []directWrite{{sub: sub, b: batch{wire: wire}}}
		out.send(writes)
		conn.wrote(wire, writes[0].n)
		return writes[0].n
	}
	if n := send(); n != -1 || out.ring != nil {
		t.Fatalf("send through a failed ring: %d bytes, ring kept: %v; want -1 (not taken) and the ring dropped", n, out.ring != nil)
	}
	if n := send(); n != len(wire) {
		t.Fatalf("send after the ring failed: %d bytes, want %d through write(2)", n, len(wire))
	}
	// The other shards' rings go too, and new senders get none.
	h := out.hub
	h.mu.Lock()
	other := h.newSender()
	h.senders = append(h.senders, out, other)
	h.distrustRings()
	later := h.newSender()
	h.mu.Unlock()
	t.Cleanup(other.close)
	t.Cleanup(later.close)
	if other.ring != nil || later.ring != nil {
		t.Fatalf("after a ring failed: another shard's ring kept %v, a new sender has one %v; want write(2) everywhere", other.ring != nil, later.ring != nil)
	}
	client := &rawWS{conn: cc, br: bufio.NewReader(cc)}
	if op, payload, err := client.readFrame(time.Second); err != nil || op != wsOpText || string(payload) != "once" {
		t.Fatalf("client read opcode %d %q, %v; want the frame once", op, payload, err)
	}
	cc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, _ := cc.Read(make([]byte, 1)); n != 0 {
		t.Fatal("the frame arrived twice")
	}
}

// Where the kernel refuses io_uring, the hub says so once, at info level,
// and every sender writes with write(2) without asking the kernel again.
func TestSenderLogsRefusalOnce(t *testing.T) {
	var log bytes.Buffer
	h := newHub(slog.New(slog.NewJSONHandler(&log, nil)))
	refusal := fmt.Errorf("%w: io_uring_setup: operation not permitted", uring.ErrUnavailable)
	h.mu.Lock()
	first, second := h.senderWith(nil, refusal), h.newSender()
	h.mu.Unlock()
	if first.ring != nil || second.ring != nil {
		t.Fatal("a sender has a ring after the kernel refused one")
	}
	lines := strings.Split(strings.TrimSpace(log.String()), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], `"level":"INFO"`) ||
		!strings.Contains(lines[0], `"msg":"io_uring unavailable: the stream writes to each subscriber with its own system call"`) ||
		!strings.Contains(lines[0], "operation not permitted") {
		t.Fatalf("log = %q, want one info line saying io_uring is unavailable and why", lines)
	}
}

// ringFDs lists this process's io_uring descriptors.
func ringFDs(t *testing.T) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var fds []int
	for _, e := range entries {
		if target, _ := os.Readlink("/proc/self/fd/" + e.Name()); target == "anon_inode:[io_uring]" {
			fd, _ := strconv.Atoi(e.Name())
			fds = append(fds, fd)
		}
	}
	return fds
}

// testSender returns a sender that writes through io_uring, or with
// write(2) when ring is false. Where the kernel refuses io_uring it returns
// nil for ring: the server then uses write(2), which is tested either way.
func testSender(t *testing.T, ring bool) *sender {
	t.Helper()
	h := newHub(slog.New(slog.DiscardHandler))
	if !ring {
		useWriteSyscall(h)
	}
	out := h.newSender()
	t.Cleanup(out.close)
	if ring && out.ring == nil {
		if !errors.Is(h.noRing, uring.ErrUnavailable) {
			t.Fatalf("no io_uring ring: %v; want one, or the kernel's refusal", h.noRing)
		}
		t.Logf("io_uring is refused here (%v): the write(2) path is what runs", h.noRing)
		return nil
	}
	return out
}

func testPartialWrite(t *testing.T, out *sender) {
	sc, cc := tcpPair(t)
	conn := newWSConn(sc, time.Minute)
	sub := newSubscriber(streamFilter{}, principal{}, conn)
	frame := func(i int) []byte {
		return wsFrame(wsOpText, []byte(fmt.Sprintf("%05d%s", i, strings.Repeat("x", 64<<10))))
	}
	direct := func(wire []byte) writeResult {
		if !conn.claim() {
			return wroteNone
		}
		writes := []directWrite{{sub: sub, b: batch{wire: wire}}}
		out.send(writes)
		return conn.wrote(wire, writes[0].n)
	}
	// Larger than both socket buffers together: a direct write can only
	// begin it.
	shared := frame(0)
	if got := direct(shared); got != wrotePart {
		t.Fatalf("direct write of a frame larger than the socket's buffers = %d, want wrotePart", got)
	}
	if !bytes.Equal(shared, frame(0)) {
		t.Fatal("the direct write changed the frames it was given, which every subscriber shares")
	}
	if direct(frame(1)) != wroteNone {
		t.Fatal("a direct write went out while a frame was unfinished")
	}

	// From now on the client reads everything, so the socket has room and
	// only the frame lock can hold the library's pong back.
	received := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(cc)
		received <- b
	}()
	pongDone := make(chan error, 1)
	go func() {
		_, err := conn.Write(wsFrame(0xA, []byte("pong")))
		pongDone <- err
	}()
	select {
	case err := <-pongDone:
		t.Fatalf("the library wrote in the middle of a frame (err %v)", err)
	case <-time.After(200 * time.Millisecond):
	}

	// The writer finishes the frame, then writes its own; then the pong.
	if err := conn.write(frame(1)); err != nil {
		t.Fatal(err)
	}
	if err := <-pongDone; err != nil {
		t.Fatal(err)
	}
	if conn.rest != nil || !conn.frameMu.TryLock() {
		t.Fatal("the frame lock is still held after the rest was written")
	}
	sc.CloseWrite()
	client := &rawWS{conn: cc, br: bufio.NewReader(bytes.NewReader(<-received))}
	var got []string
	for {
		op, payload, err := client.readFrame(time.Second)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %q: %v", got, err)
		}
		got = append(got, fmt.Sprintf("%d:%.5s", op, payload))
	}
	if want := []string{"1:00000", "1:00001", "10:pong"}; !slices.Equal(got, want) {
		t.Fatalf("client got frames %q, want %q", got, want)
	}
}

// The library's pong to a client that reads nothing gives up after the
// write timeout, so it cannot hold the frame lock, and the writer behind
// it, for ever.
func TestWSPongToStalledClientTimesOut(t *testing.T) {
	sc, _ := tcpPair(t)
	conn := newWSConn(sc, 200*time.Millisecond)
	sc.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	sc.Write(make([]byte, 1<<20)) // fills the socket
	sc.SetWriteDeadline(time.Time{})
	pongDone := make(chan error, 1)
	go func() {
		_, err := conn.Write(wsFrame(0xA, []byte("pong")))
		pongDone <- err
	}()
	time.Sleep(50 * time.Millisecond)
	writerDone := make(chan error, 1)
	go func() { writerDone <- conn.write(wsFrame(wsOpText, []byte("event"))) }()
	for name, done := range map[string]chan error{"pong": pongDone, "writer": writerDone} {
		select {
		case err := <-done:
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("%s: %v, want the write timeout", name, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s still blocked 5 s after a 200 ms write timeout", name)
		}
	}
}

// A client that resumes with since ahead of this replica's feed (it got the
// events from another replica) does not get them again when the feed here
// catches up, whether publish or the writer delivers them.
func TestWSResumeAheadOfReplica(t *testing.T) {
	ts := newTestServer(t)
	for i := range 3 {
		ts.createIncident(t, fmt.Sprint("seen elsewhere ", i), "low")
	}
	ts.waitStream(t)
	newest := ts.srv.hub.currentPosition()
	// Make this replica's feed look three events behind.
	ts.srv.hub.setPosition(newest - 3)
	c, resp := dialRaw(t, ts, fmt.Sprintf("/api/v1/ws?since=%d", newest))
	if c == nil {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if hello := c.readMessage(t); hello.Seq != newest-3 {
		t.Fatalf("hello seq %d, want this replica's position %d", hello.Seq, newest-3)
	}
	waitFor(t, "the subscriber", func() bool { return ts.srv.hub.count() == 1 })
	time.Sleep(50 * time.Millisecond) // the writer is waiting: publish writes directly

	// The feed catches up with what the client already has, then goes on.
	stored, err := ts.st.EventsAfter(context.Background(), newest-3, newest, 10)
	if err != nil || len(stored) != 3 {
		t.Fatalf("events: %d, %v", len(stored), err)
	}
	var behind []*streamEvent
	for _, e := range stored {
		behind = append(behind, newStreamEvent(e))
	}
	ts.srv.hub.publish(behind, newest)
	ts.createIncident(t, "new", "low")
	c.expectSeqs(t, []int64{newest + 1})
}

// End to end: a subscriber that stops reading while events arrive, and
// pings meanwhile, then reads again, gets every event whole and in order,
// and its pongs, whether direct writes go through io_uring or write(2).
func TestWSSlowReaderGetsWholeFrames(t *testing.T) {
	for _, ring := range []bool{true, false} {
		t.Run(fmt.Sprintf("io_uring=%v", ring), func(t *testing.T) { testSlowReader(t, ring) })
	}
}

// useWriteSyscall makes h write with write(2), as where the kernel
// refuses io_uring.
func useWriteSyscall(h *hub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, out := range h.senders {
		out.close()
	}
	h.senders, h.noRing = nil, errors.New("write(2) asked for")
}

// dialSmallBuffers opens the server's only WebSocket subscriber with a
// client read buffer of readBuffer bytes and a server send buffer of 4 KiB,
// far smaller than the events the tests send, so the socket fills. It
// returns the client, the hello's seq and the subscriber.
func dialSmallBuffers(t *testing.T, ts *testServer, readBuffer int) (*rawWS, int64, *subscriber) {
	t.Helper()
	ts.waitStream(t)
	c, resp := dialRaw(t, ts, "/api/v1/ws")
	if c == nil {
		t.Fatalf("status %d", resp.StatusCode)
	}
	c.conn.(*net.TCPConn).SetReadBuffer(readBuffer)
	hello := c.readMessage(t).Seq
	ts.srv.hub.mu.Lock()
	defer ts.srv.hub.mu.Unlock()
	if len(ts.srv.hub.subs) != 1 {
		t.Fatalf("%d subscribers, want this one", len(ts.srv.hub.subs))
	}
	sub := ts.srv.hub.subs[0]
	sub.direct.Conn.(*net.TCPConn).SetWriteBuffer(4096)
	return c, hello, sub
}

func testSlowReader(t *testing.T, ring bool) {
	ts := newTestServer(t)
	ts.srv.hub.writeTimeout = time.Minute
	if !ring {
		useWriteSyscall(ts.srv.hub)
	}
	inc := ts.createIncident(t, "big", "high")
	c, hello, sub := dialSmallBuffers(t, ts, 64<<10)

	// One event per transaction, so they reach an idle writer and publish
	// writes them itself until the socket is full (often ending with a
	// frame begun and not finished), then they queue for the writer.
	const n = 100
	inc.Description = strings.Repeat("y", 10000)
	for i := range n {
		ts.appendEvents(t, inc, 1)
		if i%20 == 0 {
			c.writeFrame(wsOpPing, []byte(fmt.Sprint(i)))
		}
	}
	ts.waitStream(t)
	sub.mu.Lock()
	queued, direct := len(sub.pending), sub.sent
	sub.mu.Unlock()
	if direct <= hello || queued == 0 {
		t.Fatalf("publish wrote up to seq %d itself (hello %d) and %d events wait behind a full socket; the test needs both", direct, hello, queued)
	}
	ts.srv.hub.mu.Lock()
	usedRing := ts.srv.hub.senders[0].ring != nil
	refused := ts.srv.hub.noRing
	ts.srv.hub.mu.Unlock()
	if usedRing != ring && !(ring && errors.Is(refused, uring.ErrUnavailable)) {
		t.Fatalf("direct writes through io_uring: %v (%v), want %v", usedRing, refused, ring)
	}
	pongs := 0
	for i := int64(1); i <= n || pongs < n/20; {
		op, payload, err := c.readFrame(10 * time.Second)
		if err != nil {
			t.Fatalf("after event %d and %d pongs: %v", i-1, pongs, err)
		}
		switch op {
		case 0xA:
			pongs++
		case wsOpText:
			var m received
			if err := json.Unmarshal(payload, &m); err != nil {
				t.Fatalf("event %d is not JSON (%d bytes): %v", i, len(payload), err)
			}
			if m.Seq != hello+i || !bytes.Contains(m.Data, []byte(inc.Description)) {
				t.Fatalf("event %d: seq %d, want %d", i, m.Seq, hello+i)
			}
			i++
		default:
			t.Fatalf("opcode %d", op)
		}
	}
}

// A client that reads slowly but steadily keeps its stream, however long
// its backlog takes to send: the write deadline is for each chunk, so only
// a client that stops reading is cut off.
func TestWSSlowSteadyReaderKeepsItsStream(t *testing.T) {
	ts := newTestServer(t)
	ts.srv.hub.writeTimeout = time.Second
	inc := ts.createIncident(t, "big", "high")
	c, hello, _ := dialSmallBuffers(t, ts, 16<<10)

	// About 2.5 MB in one transaction: the writer gets it as one batch,
	// which the client takes at about 1 MB/s, over twice the write timeout
	// for the batch and a fifteenth of it for each chunk.
	const n = 250
	inc.Description = strings.Repeat("z", 10000)
	ts.appendEvents(t, inc, n)
	for i := range int64(n) {
		time.Sleep(10 * time.Millisecond)
		op, payload, err := c.readFrame(5 * time.Second)
		if err != nil || op != wsOpText {
			t.Fatalf("event %d of %d: opcode %d %.80q, %v; want the stream to go on", i+1, n, op, payload, err)
		}
		var m received
		if err := json.Unmarshal(payload, &m); err != nil || m.Seq != hello+1+i {
			t.Fatalf("event %d: seq %d (%v), want %d", i+1, m.Seq, err, hello+1+i)
		}
	}
}

// chunks cuts a batch into runs of sendChunk bytes, every byte once and in
// order, whatever the sizes of its messages.
func TestChunks(t *testing.T) {
	var msgs [][]byte
	var want []byte
	for i, size := range []int{10, sendChunk, sendChunk + 5, 0, 3, 2 * sendChunk} {
		m := bytes.Repeat([]byte{byte('a' + i)}, size)
		msgs, want = append(msgs, m), append(want, m...)
	}
	var got []byte
	var sizes []int
	for run := range chunks(msgs) {
		size := 0
		for _, b := range run {
			got, size = append(got, b...), size+len(b)
		}
		sizes = append(sizes, size)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("chunks carry %d bytes, not the %d of the messages in order", len(got), len(want))
	}
	for i, size := range sizes {
		if size > sendChunk || (i < len(sizes)-1 && size != sendChunk) || size == 0 {
			t.Errorf("run sizes %v: want full runs of %d and a shorter last one", sizes, sendChunk)
			break
		}
	}
	for range chunks(nil) {
		t.Error("chunks of nothing yielded a run")
	}
}

// A batch goes on while its reader takes each chunk within the write
// timeout, but not past batchTimeouts of them: meanwhile the connection's
// writer can neither answer a ping nor end the stream.
func TestWriteChunksCapsABatch(t *testing.T) {
	const timeout = 400 * time.Millisecond
	const pace = 100 * time.Millisecond // per chunk, well within the timeout
	ours, theirs := net.Pipe()
	defer ours.Close()
	defer theirs.Close()
	go func() {
		buf := make([]byte, sendChunk)
		for {
			time.Sleep(pace)
			if _, err := io.ReadFull(theirs, buf); err != nil {
				return
			}
		}
	}()
	// Forty chunks take this reader 4 s, against a cap of 2.4 s.
	msgs := [][]byte{make([]byte, 40*sendChunk)}
	start := time.Now()
	sent, err := writeChunks(msgs, timeout, ours.SetWriteDeadline, writevTo(ours))
	took := time.Since(start)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("writeChunks = %d bytes, %v; want the batch cut off by its deadline", sent, err)
	}
	if limit := (batchTimeouts + 1) * timeout; took > limit {
		t.Errorf("the batch ran %v; want at most %d write timeouts (%v)", took, batchTimeouts, batchTimeouts*timeout)
	}
	// One deadline for the whole batch would stop it within the first four
	// chunks; a fresh one for each lets about twenty through.
	if sent < 8*sendChunk {
		t.Errorf("%d bytes went out before the cut; a reader that takes each chunk within the timeout should get at least 8 chunks", sent)
	}
}

// publish shares a large fan-out among goroutines that claim subscribers
// as they go: each subscriber gets each event once and in order, whether
// written to its socket by publish or queued for its writer, and a full
// queue ends only its owner.
func TestPublishSharesTheFanOut(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4)) // four goroutines, whatever the machine
	h := newHub(slog.New(slog.DiscardHandler))
	t.Cleanup(h.shutdown)
	subs := make([]*subscriber, 4*fanoutShard+52) // not a whole number of claims
	clients := map[*subscriber]net.Conn{}
	for i := range subs {
		if i%10 == 3 {
			// A WebSocket whose writer waits: publish writes to it itself.
			sc, cc := tcpPair(t)
			subs[i] = newSubscriber(streamFilter{}, principal{}, newWSConn(sc, time.Minute))
			subs[i].waiting(0)
			clients[subs[i]] = cc
		} else {
			subs[i] = newSubscriber(streamFilter{}, principal{}, nil)
		}
		if _, err := h.subscribe(subs[i]); err != nil {
			t.Fatal(err)
		}
	}
	full := subs[1000]
	full.pending = make([]*streamEvent, h.maxPending)
	event := func(seq int64) *streamEvent {
		return &streamEvent{seq: seq, wsFrame: wsFrame(wsOpText, []byte(strconv.FormatInt(seq, 10)))}
	}
	h.publish([]*streamEvent{event(1), event(2)}, 2)
	h.publish([]*streamEvent{event(3)}, 3)

	var want []byte
	for seq := range int64(3) {
		want = append(want, event(seq+1).wsFrame...)
	}
	for i, sub := range subs {
		if cc := clients[sub]; cc != nil {
			got := make([]byte, len(want))
			cc.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadFull(cc, got); err != nil || !bytes.Equal(got, want) || len(sub.pending) != 0 {
				t.Fatalf("WebSocket subscriber %d read %q (%v) with %d events queued; want the three frames %q, written by publish", i, got, err, len(sub.pending), want)
			}
			continue
		}
		if sub == full {
			continue
		}
		var seqs []int64
		for _, ev := range sub.pending {
			seqs = append(seqs, ev.seq)
		}
		if !slices.Equal(seqs, []int64{1, 2, 3}) {
			t.Fatalf("subscriber %d got seqs %v, want [1 2 3]", i, seqs)
		}
	}
	if _, _, reason := full.take(); reason != endOverflow || full.slot != -1 {
		t.Errorf("the full subscriber ends with reason %d, slot %d; want endOverflow, out of the hub", reason, full.slot)
	}
	if n := h.count(); n != len(subs)-1 {
		t.Errorf("%d subscribers left, want %d", n, len(subs)-1)
	}
}

// After shutdown publish delivers nothing, and makes no sender: shutdown
// released the rings, and nothing would release a new one.
func TestPublishAfterShutdown(t *testing.T) {
	h := newHub(slog.New(slog.DiscardHandler))
	sub := newSubscriber(streamFilter{}, principal{}, nil)
	if _, err := h.subscribe(sub); err != nil {
		t.Fatal(err)
	}
	h.shutdown()
	h.publish([]*streamEvent{{seq: 1, wsFrame: wsFrame(wsOpText, []byte("{}"))}}, 1)
	if len(h.senders) != 0 || len(sub.pending) != 0 {
		t.Errorf("after shutdown publish made %d senders and queued %d events; want none", len(h.senders), len(sub.pending))
	}
}

// A stream whose history cannot be read says so and where to resume,
// rather than leave a gap: the WebSocket closes with 1013, SSE ends with a
// final close event (EventSource then reconnects by itself).
func TestStreamHistoryUnavailable(t *testing.T) {
	ts := newTestServer(t)
	ts.createIncident(t, "before the outage", "low")
	ts.createIncident(t, "also before", "low")
	ts.waitStream(t)
	since := eventSeqs(t, ts, 0)[0] // where the client left off: one event to replay
	ts.st.db.Close()                // every query of the requests' pool fails from here on

	c, _ := mustDial(t, ts, fmt.Sprintf("/api/v1/ws?since=%d", since))
	op, payload, err := c.readFrame(10 * time.Second)
	if err != nil || op != wsOpClose || len(payload) < 2 {
		t.Fatalf("WebSocket after a failed replay: opcode %d %q, %v; want a close frame with a code", op, payload, err)
	}
	want := fmt.Sprintf("could not read history; resume with since=%d", since)
	if code := binary.BigEndian.Uint16(payload); code != closeTryAgainLater || string(payload[2:]) != want {
		t.Errorf("WebSocket closed with %d %q; want %d %q", code, payload[2:], closeTryAgainLater, want)
	}

	sse := openSSE(t, ts, fmt.Sprintf("/api/v1/events?since=%d", since))
	if ev, ok := sse.next(t); !ok || ev.event != "hello" {
		t.Fatalf("first SSE event %+v, %v; want the hello", ev, ok)
	}
	ev, ok := sse.next(t)
	var bye struct {
		Type   string `json:"type"`
		Since  *int64 `json:"since"`
		Reason string `json:"reason"`
	}
	if !ok || ev.event != "close" || json.Unmarshal([]byte(ev.data), &bye) != nil || bye.Type != "close" || bye.Since == nil || *bye.Since != since || bye.Reason != want {
		t.Fatalf("SSE after a failed replay: %+v, %v; want a close event with since %d and %q", ev, ok, since, want)
	}
	if ev, ok := sse.next(t); ok {
		t.Errorf("SSE went on after its close event: %+v", ev)
	}
}
