package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// serverFrame builds an unmasked, final frame as the server sends them.
func serverFrame(op byte, payload string) []byte {
	b := []byte{0x80 | op}
	switch n := len(payload); {
	case n < 126:
		b = append(b, byte(n))
	case n < 1<<16:
		b = append(b, 126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, payload...)
}

func TestParseFrame(t *testing.T) {
	long := strings.Repeat("x", 300)   // 16-bit length
	huge := strings.Repeat("y", 70000) // 64-bit length
	for _, tt := range []struct {
		name    string
		in      []byte
		wantOp  byte
		want    string
		wantN   int
		wantErr bool
	}{
		{"empty", nil, 0, "", 0, false},
		{"one byte", []byte{0x81}, 0, "", 0, false},
		{"text", serverFrame(opText, "hi"), opText, "hi", 4, false},
		{"text and more", append(serverFrame(opText, "hi"), 0x81, 5), opText, "hi", 4, false},
		{"empty ping", serverFrame(opPing, ""), opPing, "", 2, false},
		{"16-bit length", serverFrame(opText, long), opText, long, 304, false},
		{"16-bit length cut in the length", serverFrame(opText, long)[:3], 0, "", 0, false},
		{"16-bit length cut in the payload", serverFrame(opText, long)[:200], 0, "", 0, false},
		{"64-bit length", serverFrame(opBinary, huge), opBinary, huge, 70010, false},
		{"64-bit length cut in the length", serverFrame(opBinary, huge)[:9], 0, "", 0, false},
		{"masked", []byte{0x81, 0x82, 1, 2, 3, 4, 'h' ^ 1, 'i' ^ 2}, 0, "", 0, true},
		{"not final", []byte{0x01, 0x02, 'h', 'i'}, 0, "", 0, true},
		{"continuation", []byte{0x80, 0x02, 'h', 'i'}, 0, "", 0, true},
		{"too large", []byte{0x82, 127, 0, 0, 0, 0, 0x10, 0, 0, 0}, 0, "", 0, true},
		{"long ping", serverFrame(opPing, long), 0, "", 0, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f, n, err := parseFrame(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseFrame error = %v, want error %v", err, tt.wantErr)
			}
			if f.op != tt.wantOp || string(f.payload) != tt.want || n != tt.wantN {
				t.Errorf("parseFrame = op %#x, %d payload bytes, length %d; want op %#x, %d payload bytes, length %d",
					f.op, len(f.payload), n, tt.wantOp, len(tt.want), tt.wantN)
			}
		})
	}
}

// newTestTracker returns a tracker for ids 1 to 64, all posted at time 1.
func newTestTracker() *tracker {
	tr := &tracker{t0: time.Now(), posted: make([]atomic.Int64, 64)}
	for i := range tr.posted {
		tr.posted[i].Store(1)
	}
	return tr
}

// newTestSubscriber returns a subscriber on one end of a socket pair, and
// the other end, where its pongs arrive.
func newTestSubscriber(t *testing.T, tr *tracker) (*subscriber, int) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	t.Cleanup(func() {
		syscall.Close(fds[0])
		syscall.Close(fds[1])
	})
	return &subscriber{fd: fds[0], seen: make([]uint64, (len(tr.posted)+63)/64)}, fds[1]
}

// TestSubscriberHandle feeds a stream to handle in every split into two
// reads and one byte per read: the frames must come out the same.
func TestSubscriberHandle(t *testing.T) {
	long := fmt.Sprintf(`{"type":"added","seq":3,"data":{"id":2,"title":%q}}`, strings.Repeat("t", 200))
	var stream []byte
	stream = append(stream, serverFrame(opText, `{"type":"added","seq":2,"data":{"id":1}}`)...)
	stream = append(stream, serverFrame(opPing, "p")...)
	stream = append(stream, serverFrame(opText, long)...) // 16-bit length
	stream = append(stream, serverFrame(opPong, "")...)
	stream = append(stream, serverFrame(opClose, "\x03\xe8")...)

	var splits [][][]byte
	for i := 1; i < len(stream); i++ {
		splits = append(splits, [][]byte{stream[:i], stream[i:]})
	}
	var bytewise [][]byte
	for i := range stream {
		bytewise = append(bytewise, stream[i:i+1])
	}
	splits = append(splits, bytewise)

	for _, reads := range splits {
		tr := newTestTracker()
		s, peer := newTestSubscriber(t, tr)
		// Like the loop's buffer, reused and overwritten between reads.
		buf := make([]byte, len(stream))
		var err error
		for i, r := range reads {
			if err != nil {
				t.Fatalf("reads of %d bytes: read %d of %d: handle error %v, want one only after the last", len(reads[0]), i, len(reads), err)
			}
			n := copy(buf, r)
			err = s.handle(buf[:n], int64(i+2), tr)
			for j := range buf {
				buf[j] = 0xff
			}
		}
		if !errors.Is(err, errClosed) {
			t.Fatalf("reads of %d bytes: last handle error = %v, want %v", len(reads[0]), err, errClosed)
		}
		if got := tr.delivered.Load(); got != 2 || s.lastSeq != 3 || s.fallbacks != 0 || len(s.delays) != 2 {
			t.Errorf("reads of %d bytes: delivered %d, last seq %d, %d fallbacks, %d delays; want 2, 3, 0, 2",
				len(reads[0]), got, s.lastSeq, s.fallbacks, len(s.delays))
		}
		if got := unmask(t, readAll(t, peer)); got.op != opPong || string(got.payload) != "p" {
			t.Errorf("reads of %d bytes: wrote op %#x %q, want a pong %q", len(reads[0]), got.op, got.payload, "p")
		}
	}
}

// readAll returns what is waiting on the non-blocking socket fd.
func readAll(t *testing.T, fd int) []byte {
	t.Helper()
	var b []byte
	buf := make([]byte, 512)
	for {
		n, err := syscall.Read(fd, buf)
		if errors.Is(err, syscall.EAGAIN) {
			return b
		}
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		b = append(b, buf[:n]...)
	}
}

// unmask parses the single masked frame a client wrote.
func unmask(t *testing.T, b []byte) frame {
	t.Helper()
	if len(b) < 6 || b[1]&0x80 == 0 || int(b[1]&0x7f) != len(b)-6 {
		t.Fatalf("written % x, want one short masked frame", b)
	}
	payload := bytes.Clone(b[6:])
	for i := range payload {
		payload[i] ^= b[2+i%4]
	}
	return frame{op: b[0] & 0x0f, payload: payload}
}
