package main

import (
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// TestReadersEndToEnd connects subscribers to a WebSocket server that sends
// a hello, then events with a ping among them, and checks that the reader
// loops deliver every event and stop when closed. The last event is larger
// than a read's buffer: edge-triggered, a loop must read until the socket
// is empty.
func TestReadersEndToEnd(t *testing.T) {
	const events = 5
	// The events wait until the loops run.
	start := make(chan struct{})
	var startOnce sync.Once
	begin := func() { startOnce.Do(func() { close(start) }) }
	srv := httptest.NewServer(websocket.Handler(func(ws *websocket.Conn) {
		send := func(op byte, msg string) {
			ws.PayloadType = op
			if _, err := ws.Write([]byte(msg)); err != nil {
				t.Errorf("server write: %v", err)
			}
		}
		send(websocket.TextFrame, `{"type":"hello","seq":1}`)
		<-start
		for id := 1; id <= events; id++ {
			if id == 3 {
				send(websocket.PingFrame, "")
			}
			title := strings.Repeat("t", 50*id) // from 126 bytes on, a 16-bit length
			if id == events {
				title = strings.Repeat("t", 100<<10) // a 64-bit length, and more than one read either way
			}
			send(websocket.TextFrame, fmt.Sprintf(`{"type":"added","seq":%d,"data":{"id":%d,"title":%q}}`, id+1, id, title))
		}
		// Hold the connection until the client closes it.
		var msg string
		websocket.Message.Receive(ws, &msg)
	}))
	defer srv.Close()
	defer begin()

	tr := newTestTracker()
	var subs []*subscriber
	for range 3 {
		s, err := dial("ws"+strings.TrimPrefix(srv.URL, "http"), srv.URL, 5*time.Second)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		s.seen = make([]uint64, 1)
		subs = append(subs, s)
	}
	var down failures
	// The pause lets the large event arrive whole before a loop reads it.
	rd, err := startReaders(subs, 2, 50*time.Millisecond, tr, &down)
	if err != nil {
		t.Fatalf("startReaders: %v", err)
	}
	begin()
	want := int64(events * len(subs))
	for deadline := time.Now().Add(5 * time.Second); tr.delivered.Load() < want && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	tr.stopping.Store(true)
	if !closeAll(subs, rd) {
		t.Fatal("closeAll: the reader loops did not stop")
	}
	if got := tr.delivered.Load(); got != want {
		t.Errorf("delivered %d, want %d", got, want)
	}
	for i, s := range subs {
		if s.lastSeq != events+1 || s.duplicates != 0 || s.outOfOrder != 0 || s.fallbacks != 0 || len(s.delays) != events {
			t.Errorf("subscriber %d: last seq %d, %d duplicates, %d out of order, %d fallbacks, %d delays; want %d, 0, 0, 0, %d",
				i, s.lastSeq, s.duplicates, s.outOfOrder, s.fallbacks, len(s.delays), events+1, events)
		}
	}
	if n := down.count(); n != 0 {
		t.Errorf("%d disconnects (%q), want 0", n, down.first)
	}
}
