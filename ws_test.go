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
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lib/pq"
	"golang.org/x/net/websocket"
)

// limitLog makes the hub's event log hold at most n events, so that tests
// reach what lies behind it.
func limitLog(h *hub, n int) {
	h.log.mu.Lock()
	defer h.log.mu.Unlock()
	h.log.maxEvents = n
}

// WebSocket opcodes the tests read and write.
const (
	wsOpClose = 0x8
	wsOpPing  = 0x9
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

// writeFrame sends one masked final frame, as clients must.
func (c *rawWS) writeFrame(opcode byte, payload []byte) error {
	return c.writeFrameHeader(0x80|opcode, payload)
}

// writeFrameHeader sends one masked frame whose first byte (FIN, RSV bits,
// opcode) is first.
func (c *rawWS) writeFrameHeader(first byte, payload []byte) error {
	b := []byte{first}
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
	b := a.replica(t)

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
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 4<<20) // an event's data line can be large
	return &sseClient{resp: resp, sc: sc}
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
				return ts.st.appendEvent(ctx, tx, "added", inc, actorRef{}, eventDetail{}, time.Now())
			})
		}
	}()
	defer func() { cancel(); <-writerDone }()

	rounds := 200
	if testing.Short() {
		rounds = 20
	}
	for round := range rounds {
		since := ts.srv.hub.log.current().position - int64(round%7)
		c, _ := mustDial(t, ts, fmt.Sprintf("/api/v1/ws?since=%d", since))
		for want := since + 1; want <= since+12; want++ {
			if m := c.readMessage(t); m.Seq != want {
				t.Fatalf("round %d: got seq %d, want %d (since=%d)", round, m.Seq, want, since)
			}
		}
		c.conn.Close()
	}
}

func TestFeedOutOfOrderCommit(t *testing.T) {
	ts := newTestServer(t)
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

	// A rolled-back id is a gap the feed skips as soon as every transaction
	// that could hold it has ended: well before gapMaxWait.
	if waited := skipRolledBack(t, ts.st.db, c, inc.ID); waited > ts.srv.feed.gapMaxWait/4 {
		t.Errorf("a rolled-back id held the stream %v; want it skipped once its transaction ended", waited)
	}

	// A transaction that writes and stays open (here one that writes no
	// event) may hold a gap's decision back, but not past gapMaxWait.
	ts.srv.feed.gapMaxWait = 2 * time.Second
	unrelated, err := ts.st.db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer unrelated.Rollback()
	if _, err := unrelated.Exec(`SELECT pg_current_xact_id()`); err != nil {
		t.Fatal(err)
	}
	if waited := skipRolledBack(t, ts.st.db, c, inc.ID); waited < ts.srv.feed.gapMaxWait || waited > 3*ts.srv.feed.gapMaxWait {
		t.Errorf("with an older transaction open, a rolled-back id held the stream %v; want about gapMaxWait (%v)", waited, ts.srv.feed.gapMaxWait)
	}
	unrelated.Rollback()

	// A transaction left open past gapMaxWait no longer holds the stream up.
	ts.srv.feed.gapMaxWait = 500 * time.Millisecond
	open, _ := begin()
	defer open.Rollback()
	after, afterSeq := begin()
	after.Commit()
	c.expectSeqs(t, []int64{afterSeq})
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

// A client that stops reading holds up only its own stream: its writer
// waits on the full socket until the write timeout ends it, while the
// others go on.
func TestStalledSubscriberDoesNotDelayOthers(t *testing.T) {
	ts := newTestServer(t)
	ts.srv.hub.writeTimeout = time.Second
	ts.sendBuffer.Store(4096)
	inc := ts.createIncident(t, "big", "critical")
	ts.waitStream(t)

	stalled, resp := dialRaw(t, ts, "/api/v1/ws")
	if stalled == nil {
		t.Fatalf("stalled client: status %d", resp.StatusCode)
	}
	stalled.conn.(*net.TCPConn).SetReadBuffer(4096)
	healthy, hello := mustDial(t, ts, "/api/v1/ws")
	waitFor(t, "two subscribers", func() bool { return ts.srv.hub.count() == 2 })

	const n, batch = 600, 100
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

	// Enough large events to fill the stalled client's socket buffers.
	inc.Description = strings.Repeat("x", 10000)
	start := time.Now()
	for sent := 0; sent < n; sent += batch {
		ts.appendEvents(t, inc, batch)
	}
	if err := <-readerDone; err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the healthy subscriber took %v for %d events beside a stalled one; want it undelayed", took, n)
	}
	waitFor(t, "the stalled subscriber to be dropped", func() bool { return ts.srv.hub.count() == 1 })
	ts.createIncident(t, "still flowing", "low")
	healthy.expectSeqs(t, []int64{hello + n + 1})
}

// A client that reads, but too slowly for its cursor to stay in the event
// log, catches up from the table for a few pages; one that cannot is told
// to resume later (1013), with where it got to.
func TestSlowSubscriberFallsOutOfTheLog(t *testing.T) {
	ts := newTestServer(t)
	limitLog(ts.srv.hub, 20)
	ts.srv.hub.catchUpPages = 0
	ts.sendBuffer.Store(4096)
	inc := ts.createIncident(t, "big", "critical")
	ts.waitStream(t)
	slow, resp := dialRaw(t, ts, "/api/v1/ws")
	if slow == nil {
		t.Fatalf("status %d", resp.StatusCode)
	}
	slow.conn.(*net.TCPConn).SetReadBuffer(4096)
	hello := slow.readMessage(t).Seq

	// The writer blocks on the full socket while the log moves on by far
	// more than it holds.
	inc.Description = strings.Repeat("x", 10000)
	ts.appendEvents(t, inc, 200)
	ts.waitStream(t)
	last := hello
	for {
		op, payload, err := slow.readFrame(10 * time.Second)
		if err != nil {
			t.Fatalf("after seq %d: %v; want events, then a close frame", last, err)
		}
		if op == wsOpClose {
			want := fmt.Sprintf("too slow; resume with since=%d", last)
			if code := closeCode(payload); code != closeTryAgainLater || string(payload[2:]) != want {
				t.Fatalf("close %d %q, want %d %q", code, payload[2:], closeTryAgainLater, want)
			}
			break
		}
		var m received
		json.Unmarshal(payload, &m)
		if m.Seq != last+1 {
			t.Fatalf("got seq %d after %d, want %d", m.Seq, last, last+1)
		}
		last = m.Seq
	}
	if last >= hello+200 {
		t.Fatalf("the slow subscriber got all %d events; the test needs it to fall behind", 200)
	}
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

// The library's pong to a client that reads nothing gives up after the
// write timeout, so it cannot hold the connection's lock, and the writer
// behind it, for ever.
func TestWSPongToStalledClientTimesOut(t *testing.T) {
	sc, _ := tcpPair(t)
	conn := &wsConn{Conn: sc, timeout: 200 * time.Millisecond}
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
	go func() { writerDone <- conn.writeFrames([][]byte{wsFrame(wsOpText, []byte("event"))}) }()
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
// catches up.
func TestWSResumeAheadOfReplica(t *testing.T) {
	st := newTestStore(t)
	ts := newTestServerOn(t, st, testConfig()) // no feed: the test moves the log
	for i := range 3 {
		ts.createIncident(t, fmt.Sprint("seen elsewhere ", i), "low")
	}
	newest, err := st.LatestEventSeq(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ts.srv.hub.log.begin(newest - 3) // this replica's feed is three events behind
	c, resp := dialRaw(t, ts, fmt.Sprintf("/api/v1/ws?since=%d", newest))
	if c == nil {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if hello := c.readMessage(t); hello.Seq != newest-3 {
		t.Fatalf("hello seq %d, want this replica's position %d", hello.Seq, newest-3)
	}
	waitFor(t, "the subscriber", func() bool { return ts.srv.hub.count() == 1 })

	// The feed catches up with what the client already has, then goes on.
	publish := func(after, upTo int64) {
		stored, _, err := st.EventsAfter(context.Background(), after, upTo, 10)
		if err != nil || len(stored) != int(upTo-after) {
			t.Fatalf("events: %d, %v", len(stored), err)
		}
		var events []*streamEvent
		for _, e := range stored {
			events = append(events, newStreamEvent(e))
		}
		ts.srv.hub.log.append(events, upTo)
	}
	publish(newest-3, newest)
	ts.createIncident(t, "new", "low")
	publish(newest, newest+1)
	c.expectSeqs(t, []int64{newest + 1})
}

// dialSmallBuffers opens a WebSocket with a client read buffer of
// readBuffer bytes and a server send buffer of 4 KiB, far smaller than the
// events the tests send, so the socket fills. It returns the client and
// the hello's seq.
func dialSmallBuffers(t *testing.T, ts *testServer, readBuffer int) (*rawWS, int64) {
	t.Helper()
	ts.waitStream(t)
	ts.sendBuffer.Store(4096)
	c, resp := dialRaw(t, ts, "/api/v1/ws")
	if c == nil {
		t.Fatalf("status %d", resp.StatusCode)
	}
	c.conn.(*net.TCPConn).SetReadBuffer(readBuffer)
	return c, c.readMessage(t).Seq
}

// A subscriber that stops reading while events arrive, and pings
// meanwhile, then reads again, gets every event whole and in order, and its
// pongs: the library's pongs wait for the frame the writer has begun.
func TestWSSlowReaderGetsWholeFrames(t *testing.T) {
	ts := newTestServer(t)
	ts.srv.hub.writeTimeout = time.Minute
	inc := ts.createIncident(t, "big", "high")
	c, hello := dialSmallBuffers(t, ts, 64<<10)

	const n = 100
	inc.Description = strings.Repeat("y", 10000)
	for i := range n {
		ts.appendEvents(t, inc, 1)
		if i%20 == 0 {
			c.writeFrame(wsOpPing, []byte(fmt.Sprint(i)))
		}
	}
	ts.waitStream(t)
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
	c, hello := dialSmallBuffers(t, ts, 16<<10)

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

// A stream whose history cannot be read says so and where to resume,
// rather than leave a gap: the WebSocket closes with 1013, SSE ends with a
// final close event (EventSource then reconnects by itself).
func TestStreamHistoryUnavailable(t *testing.T) {
	ts := newTestServer(t)
	limitLog(ts.srv.hub, 1) // what the client missed is only in the table
	ts.createIncident(t, "before the outage", "low")
	ts.createIncident(t, "also before", "low")
	ts.createIncident(t, "and the newest", "low")
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

// wsFrame frames as RFC 6455 section 5.2 says a server must: FIN set, no
// RSV bits, unmasked, and the payload length in the shortest of its three
// encodings. The test's own reader (written from the RFC) reads them back.
func TestWSFrameMatchesRFC6455(t *testing.T) {
	for _, tt := range []struct {
		size       int
		wantHeader []byte // after the first byte
	}{
		{0, []byte{0}},
		{125, []byte{125}},
		{126, []byte{126, 0, 126}},
		{0xFFFF, []byte{126, 0xFF, 0xFF}},
		{0x10000, []byte{127, 0, 0, 0, 0, 0, 1, 0, 0}},
	} {
		payload := bytes.Repeat([]byte("é"), tt.size/2)
		payload = append(payload, bytes.Repeat([]byte("x"), tt.size%2)...)
		frame := wsFrame(wsOpText, payload)
		if frame[0] != 0x81 || !bytes.Equal(frame[1:1+len(tt.wantHeader)], tt.wantHeader) || len(frame) != 1+len(tt.wantHeader)+tt.size {
			t.Errorf("wsFrame of %d bytes: header % x, length %d; want 81 % x, length %d",
				tt.size, frame[:min(len(frame), 10)], len(frame), tt.wantHeader, 1+len(tt.wantHeader)+tt.size)
		}
		server, client := net.Pipe()
		go func() { server.Write(frame); server.Close() }()
		c := &rawWS{conn: client, br: bufio.NewReader(client)}
		op, got, err := c.readFrame(5 * time.Second)
		if err != nil || op != wsOpText || !bytes.Equal(got, payload) {
			t.Errorf("reading back %d bytes: opcode %d, %d bytes, %v; want the text frame", tt.size, op, len(got), err)
		}
		client.Close()
	}
}

// A client frame that breaks RFC 6455 where the library shows it (a
// reserved opcode, a text frame that is not UTF-8) closes that connection
// with the code RFC 6455 names; a text message split inside a character
// over two frames is fine.
func TestWSClientProtocolErrors(t *testing.T) {
	ts := newTestServer(t)
	for _, tt := range []struct {
		name   string
		frames [][]byte // a first header byte, then the payload
		want   int
	}{
		{"reserved data opcode", [][]byte{{0x83}, []byte("x")}, closeProtocol},
		{"reserved control opcode", [][]byte{{0x8B}, nil}, closeProtocol},
		{"text not UTF-8", [][]byte{{0x81}, []byte("caf\xe9 au lait")}, closeInvalidData},
		{"lone surrogate", [][]byte{{0x81}, []byte("\xed\xa0\x80")}, closeInvalidData},
		{"character split over frames", [][]byte{{0x01}, []byte("caf\xc3"), {0x80}, []byte("\xa9 au lait")}, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, hello := mustDial(t, ts, "/api/v1/ws")
			for i := 0; i < len(tt.frames); i += 2 {
				c.writeFrameHeader(tt.frames[i][0], tt.frames[i+1])
			}
			if tt.want != 0 {
				if code, _ := c.readClose(t, 5*time.Second); code != tt.want {
					t.Errorf("close code %d, want %d", code, tt.want)
				}
				return
			}
			inc := ts.createIncident(t, "still open", "low")
			if m := c.readMessage(t); m.Seq <= hello || m.Type != "added" {
				t.Errorf("after a split character: %+v, want the next event (incident %d)", m, inc.ID)
			}
		})
	}
}

// A replay that starts in the table and ends in the event log, with events
// large enough that both are read and written in several pieces, delivers
// every event once and in order, on both transports.
func TestReplayFromTableIntoLog(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.rateLimits = false })
	limitLog(ts.srv.hub, 20)
	const n = 60
	for i := range n {
		ts.request(t, "POST", "/api/v1/incidents", fatReport(i, "<")).mustStatus(t, "fat report", http.StatusCreated)
	}
	ts.waitStream(t)
	want := eventSeqs(t, ts, 0)
	c, _ := mustDial(t, ts, "/api/v1/ws?since=0")
	c.expectSeqs(t, want)
	sse := openSSE(t, ts, "/api/v1/events?since=0")
	if ev, ok := sse.next(t); !ok || ev.event != "hello" {
		t.Fatalf("first SSE event %+v, want hello", ev)
	}
	for i, seq := range want {
		ev, ok := sse.next(t)
		if !ok || ev.id != strconv.FormatInt(seq, 10) {
			t.Fatalf("SSE event %d: %+v, %v; want id %d", i, ev.id, ok, seq)
		}
	}
}
