package main

import (
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"incidents/internal/uring"
)

// TestReadersEndToEnd connects subscribers to a WebSocket server that sends
// a hello, then events with a ping among them, and checks that the reader
// loops deliver every event and stop when closed: reading with io_uring,
// with read(2), and with io_uring that fails before the first event, when
// the loops must go on with read(2). The last event is larger than a read's
// buffer: edge-triggered, a loop must read until the socket is empty.
func TestReadersEndToEnd(t *testing.T) {
	kernelURing := kernelHasURing(t)
	for _, tt := range []struct {
		name                string
		useURing, breakRing bool
	}{
		{"io_uring", true, false},
		{"read", false, false},
		{"io_uring fails", true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.breakRing && !kernelURing {
				t.Log("no io_uring here to fail; the read(2) case covers these loops")
				return
			}
			testReaders(t, tt.useURing, tt.useURing && kernelURing, tt.breakRing)
		})
	}
}

// breakRings makes every io_uring instance of this process unusable: its
// descriptor now names a pipe, so io_uring_enter fails, as it would if the
// kernel gave up on the ring.
func breakRings(t *testing.T) {
	t.Helper()
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(p[0])
	defer syscall.Close(p[1])
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	broken := 0
	for _, e := range entries {
		if target, _ := os.Readlink("/proc/self/fd/" + e.Name()); target == "anon_inode:[io_uring]" {
			fd, _ := strconv.Atoi(e.Name())
			if err := syscall.Dup3(p[0], fd, syscall.O_CLOEXEC); err != nil {
				t.Fatalf("dup3: %v", err)
			}
			broken++
		}
	}
	if broken == 0 {
		t.Fatal("no io_uring instance to break")
	}
}

// kernelHasURing reports whether this kernel lets the tool use io_uring. A
// kernel that refuses it (too old, kernel.io_uring_disabled, a seccomp
// filter) must refuse it in io_uring_setup; the loops then read(2).
func kernelHasURing(t *testing.T) bool {
	u, err := uring.New(uringBatch)
	if err != nil {
		if !errors.Is(err, uring.ErrUnavailable) {
			t.Fatalf("uring.New: %v; want a ring, or the kernel's refusal", err)
		}
		t.Logf("io_uring is refused here (%v); the loops read(2) and that is what gets tested", err)
		return false
	}
	u.Close()
	return true
}

func testReaders(t *testing.T, useURing, wantURing, breakRing bool) {
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
	rd, err := startReaders(subs, 2, 50*time.Millisecond, useURing, tr, &down)
	if err != nil {
		t.Fatalf("startReaders: %v", err)
	}
	if got := rd.noURing == nil; got != wantURing {
		t.Errorf("reading with io_uring: %v (%v), want %v", got, rd.noURing, wantURing)
	}
	if breakRing {
		breakRings(t)
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
	for i, l := range rd.loops {
		if failed := l.ringErr != nil; failed != breakRing {
			t.Errorf("loop %d: io_uring failed: %v (%v), want %v", i, failed, l.ringErr, breakRing)
		}
	}
	if n := down.count(); n != 0 {
		t.Errorf("%d disconnects (%q), want 0", n, down.first)
	}
}
