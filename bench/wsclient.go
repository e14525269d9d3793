package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"
)

// wsConn is a minimal client side of a WebSocket, enough for the handshake
// and the hello. After the hello the subscriber takes the socket over and
// the reader loops parse the server's frames from it with parseFrame (see
// the package comment for why).
type wsConn struct {
	conn net.Conn
	br   *bufio.Reader
}

// WebSocket opcodes (RFC 6455, section 5.2).
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA
)

// maxFrame bounds a frame's payload, so a corrupt length fails at once
// rather than leaving the reader waiting for gigabytes.
const maxFrame = 1 << 24

// errClosed is a close frame from the server.
var errClosed = errors.New("close frame from the server")

// dialWS opens a WebSocket (RFC 6455) to a ws:// URL. There is no wss://:
// the reader loops read the socket itself, below any TLS layer.
func dialWS(ctx context.Context, wsURL, origin string) (*wsConn, error) {
	u, err := url.Parse(wsURL)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "ws" {
		return nil, fmt.Errorf("%s: only ws:// URLs are supported", wsURL)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "80")
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline)
	}
	c, err := handshake(conn, u, origin)
	if err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return c, nil
}

func handshake(conn net.Conn, u *url.URL, origin string) (*wsConn, error) {
	var nonce [16]byte
	rand.Read(nonce[:])
	key := base64.StdEncoding.EncodeToString(nonce[:])
	req := "GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key +
		"\r\nOrigin: " + origin + "\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(conn, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return nil, fmt.Errorf("handshake: %s: %s", resp.Status, body)
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		return nil, errors.New("handshake: wrong Sec-WebSocket-Accept")
	}
	return &wsConn{conn: conn, br: br}, nil
}

// readHello returns the first message, the server's hello, and leaves
// what follows it in br for the reader loop. The hello is one short frame
// before anything else, so the frame parser of the loops serves here too.
func (c *wsConn) readHello() ([]byte, error) {
	for {
		b, _ := c.br.Peek(c.br.Buffered())
		f, n, err := parseFrame(b)
		switch {
		case err != nil:
			return nil, err
		case n > 0 && f.op == opClose:
			return nil, errClosed
		case n > 0:
			payload := bytes.Clone(f.payload)
			c.br.Discard(n)
			return payload, nil
		}
		if _, err := c.br.Peek(len(b) + 1); err != nil { // wait for more bytes
			return nil, err
		}
	}
}

// maskedFrame builds a final frame as a client must send it, masked, of at
// most 125 bytes: a pong or a close.
func maskedFrame(op byte, payload []byte) []byte {
	var mask [4]byte
	rand.Read(mask[:])
	frame := append([]byte{0x80 | op, 0x80 | byte(len(payload))}, mask[:]...)
	for i, b := range payload {
		frame = append(frame, b^mask[i%4])
	}
	return frame
}

// frame is one frame from the server.
type frame struct {
	op      byte
	payload []byte // a part of parseFrame's input
}

// parseFrame parses the frame at the start of b and returns it and its
// length in b, or a length of 0 when b holds only the start of a frame.
// The server sends every message as one unmasked, final frame, so
// fragmented messages are an error rather than something to reassemble.
func parseFrame(b []byte) (frame, int, error) {
	if len(b) < 2 {
		return frame{}, 0, nil
	}
	fin, op := b[0]&0x80 != 0, b[0]&0x0f
	if b[1]&0x80 != 0 {
		return frame{}, 0, errors.New("masked frame from the server")
	}
	if !fin || op == opContinuation {
		return frame{}, 0, errors.New("fragmented message from the server: not supported")
	}
	n, head := uint64(b[1]&0x7f), 2
	switch n {
	case 126:
		if len(b) < 4 {
			return frame{}, 0, nil
		}
		n, head = uint64(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if len(b) < 10 {
			return frame{}, 0, nil
		}
		n, head = binary.BigEndian.Uint64(b[2:]), 10
	}
	if n > maxFrame {
		return frame{}, 0, fmt.Errorf("frame of %d bytes", n)
	}
	if op&0x8 != 0 && n > 125 {
		// writeFrame echoes a ping's payload in one short frame.
		return frame{}, 0, fmt.Errorf("control frame of %d bytes", n)
	}
	end := head + int(n)
	if len(b) < end {
		return frame{}, 0, nil
	}
	return frame{op: op, payload: b[head:end]}, end, nil
}
