package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
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

// wsConn is a minimal client side of a WebSocket, enough to read what the
// server sends. Ten thousand of them run in this process next to the
// server under test, so reading a frame must cost little: no allocation per
// frame and no per-message reader objects, which is where a general-purpose
// client spends the CPU the server needs.
type wsConn struct {
	conn net.Conn
	br   *bufio.Reader
	buf  []byte // the last message; reused
}

// errClosed is a close frame from the server.
var errClosed = errors.New("close frame from the server")

// dialWS opens a WebSocket (RFC 6455) to a ws:// or wss:// URL.
func dialWS(ctx context.Context, wsURL, origin string) (*wsConn, error) {
	u, err := url.Parse(wsURL)
	if err != nil {
		return nil, err
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), map[string]string{"ws": "80", "wss": "443"}[u.Scheme])
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	if u.Scheme == "wss" {
		tc := tls.Client(conn, &tls.Config{ServerName: u.Hostname()})
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, err
		}
		conn = tc
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

// readMessage returns the next text or binary message; the slice is valid
// until the next call. Pings are answered; a close frame ends the stream.
func (c *wsConn) readMessage() ([]byte, error) {
	c.buf = c.buf[:0]
	for {
		var head [2]byte
		if _, err := io.ReadFull(c.br, head[:]); err != nil {
			return nil, err
		}
		fin, op := head[0]&0x80 != 0, head[0]&0x0f
		if head[1]&0x80 != 0 {
			return nil, errors.New("masked frame from the server")
		}
		n := uint64(head[1] & 0x7f)
		switch n {
		case 126:
			var ext [2]byte
			if _, err := io.ReadFull(c.br, ext[:]); err != nil {
				return nil, err
			}
			n = uint64(binary.BigEndian.Uint16(ext[:]))
		case 127:
			var ext [8]byte
			if _, err := io.ReadFull(c.br, ext[:]); err != nil {
				return nil, err
			}
			n = binary.BigEndian.Uint64(ext[:])
		}
		if n > 1<<24 {
			return nil, fmt.Errorf("frame of %d bytes", n)
		}
		start := len(c.buf)
		c.buf = append(c.buf, make([]byte, n)...)
		if _, err := io.ReadFull(c.br, c.buf[start:]); err != nil {
			return nil, err
		}
		switch op {
		case 0x8:
			return nil, errClosed
		case 0x9:
			payload := append([]byte(nil), c.buf[start:]...)
			c.buf = c.buf[:start]
			if err := c.writeFrame(0xA, payload); err != nil {
				return nil, err
			}
			continue
		case 0xA:
			c.buf = c.buf[:start]
			continue
		}
		if fin {
			return c.buf, nil
		}
	}
}

// writeFrame sends one masked frame (clients must mask) of at most 125
// bytes: a pong or a close.
func (c *wsConn) writeFrame(op byte, payload []byte) error {
	var mask [4]byte
	rand.Read(mask[:])
	frame := append([]byte{0x80 | op, 0x80 | byte(len(payload))}, mask[:]...)
	for i, b := range payload {
		frame = append(frame, b^mask[i%4])
	}
	_, err := c.conn.Write(frame)
	return err
}

// close sends a normal close frame and closes the connection; the deadline
// bounds the write to a server that stopped reading.
func (c *wsConn) close() {
	c.conn.SetDeadline(time.Now().Add(2 * time.Second))
	c.writeFrame(0x8, []byte{0x03, 0xE8})
	c.conn.Close()
}
