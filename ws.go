package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/net/websocket"
)

// WebSocket close codes (RFC 6455 section 7.4).
const (
	closeNormal        = 1000
	closeGoingAway     = 1001
	closeProtocol      = 1002
	closeInvalidData   = 1007
	closePolicy        = 1008
	closeTooBig        = 1009
	closeTryAgainLater = 1013
)

// wsMaxFrame is the largest frame a client may send; clients have nothing
// to say, so their frames are read and dropped.
const wsMaxFrame = 4096

// wsCloseCodes close a stream the server ends.
var wsCloseCodes = map[endReason]int{
	endOverflow: closeTryAgainLater,
	endShutdown: closeGoingAway,
	endRevoked:  closePolicy,
	endHistory:  closeTryAgainLater,
}

// handleWS handles GET /api/v1/ws.
func (s *server) handleWS(w http.ResponseWriter, r *http.Request) error {
	req, err := parseStreamRequest(r.URL.Query(), "")
	if err != nil {
		return err
	}
	if err := checkWSHandshake(r.Header); err != nil {
		return err
	}
	if !s.originAllowed(r) {
		return errOriginNotAllowed
	}
	hijacked := &hijackedConn{ResponseWriter: w, writeTimeout: s.hub.writeTimeout}
	who := principalOf(r)
	websocket.Server{
		// The origin was checked above; the library's default handshake
		// would refuse clients without an Origin header (scripts, bots).
		Handshake: func(cfg *websocket.Config, r *http.Request) error {
			cfg.Origin, _ = websocket.Origin(cfg, r)
			return nil
		},
		Handler: func(ws *websocket.Conn) {
			// The connection's own goroutines take it over, so this
			// request's goroutine, and net/http's state for it, can go: an
			// idle subscriber then costs a few KiB.
			hijacked.conn.detached.Store(true)
			go s.serveWS(ws, hijacked.conn, req, who)
		},
	}.ServeHTTP(hijacked, r)
	return nil
}

// checkWSHandshake refuses upgrade requests that RFC 6455 (section 4.2.1)
// calls invalid, in the API's error shape: the library would answer some
// of them in plain text and take others.
func checkWSHandshake(h http.Header) error {
	bad := func(detail string) error { return &httpError{status: http.StatusBadRequest, detail: detail} }
	key, err := base64.StdEncoding.DecodeString(h.Get("Sec-WebSocket-Key"))
	switch {
	case !strings.EqualFold(h.Get("Upgrade"), "websocket"):
		return bad("Expected a WebSocket upgrade request")
	case !hasToken(h.Get("Connection"), "upgrade"): // the first line only, as the library reads it
		return bad("Expected a WebSocket upgrade request: Connection must include Upgrade")
	case h.Get("Sec-WebSocket-Version") != "13":
		return &httpError{status: http.StatusUpgradeRequired, detail: "Unsupported WebSocket version: this server speaks 13",
			header: http.Header{"Sec-Websocket-Version": {"13"}}}
	case err != nil || len(key) != 16:
		return bad("Sec-WebSocket-Key must be 16 bytes in base64")
	}
	return nil
}

// hasToken tells whether the comma-separated header value v holds token.
func hasToken(v, token string) bool {
	for _, t := range strings.Split(v, ",") {
		if strings.EqualFold(strings.TrimSpace(t), token) {
			return true
		}
	}
	return false
}

// originAllowed accepts requests without Origin (not a browser), the
// server's own origin, and ALLOWED_ORIGINS.
func (s *server) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || slices.Contains(s.cfg.allowedOrigins, origin) {
		return true
	}
	u, err := url.Parse(origin)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && strings.EqualFold(u.Host, r.Host)
}

// hijackedConn gives the WebSocket library a connection with small buffers
// (it only reads client frames and writes control frames through them;
// event frames go to the connection directly), which the subscription can
// keep after the HTTP handler returns.
type hijackedConn struct {
	http.ResponseWriter
	writeTimeout time.Duration
	conn         *wsConn
}

func (h *hijackedConn) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	// The library keeps a pointer into its Server value for the life of the
	// connection, and with it this wrapper: let go of net/http's response
	// and the buffers it holds.
	h.ResponseWriter = nil
	// Bytes the client sent right after its handshake may already sit in
	// net/http's buffer; they come first.
	early, _ := rw.Reader.Peek(rw.Reader.Buffered())
	h.conn = &wsConn{Conn: conn, timeout: h.writeTimeout}
	reader := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(early)), conn), 512)
	// 256 bytes hold any control frame whole, so each of the library's
	// frames reaches wsConn.Write in one call.
	return h.conn, bufio.NewReadWriter(reader, bufio.NewWriterSize(h.conn, 256)), nil
}

// wsConn is a WebSocket connection after the handshake. Two goroutines
// write to it: the subscription's writer (event frames, directly; pings and
// close frames through the library) and the library's reader (pongs, close
// replies). mu keeps their frames whole on the wire.
type wsConn struct {
	net.Conn
	timeout time.Duration // for every write
	mu      sync.Mutex
	// detached makes Close a no-op: the library closes the connection when
	// its handler returns, but the subscription keeps it.
	detached atomic.Bool
	// closeSent: a close frame went out (the library's, answering a
	// protocol error, or ours), so no other may follow.
	closeSent atomic.Bool
}

// Write is the library's path to the connection: one whole frame per call.
func (c *wsConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(p) > 0 && p[0] == 0x80|websocket.CloseFrame { // not the handshake's "HTTP/1.1 101"

		c.closeSent.Store(true)
	}
	c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	return c.Conn.Write(p)
}

// writeFrames writes pre-encoded frames, in one system call where there
// are several. net.Buffers consumes the slice it writes: frames must be
// the caller's own slice (its elements may be shared).
func (c *wsConn) writeFrames(frames [][]byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	if len(frames) == 1 {
		_, err := c.Conn.Write(frames[0]) // write(2): a one-element writev costs more
		return err
	}
	bufs := net.Buffers(frames)
	_, err := bufs.WriteTo(c.Conn)
	return err
}

func (c *wsConn) Close() error {
	if c.detached.Load() {
		return nil
	}
	return c.Conn.Close()
}

// closeWS sends a close frame with code and reason, through the library,
// unless one was sent already. The reason is cut to fit a control frame.
func closeWS(ws *websocket.Conn, conn *wsConn, code int, reason string) {
	if conn.closeSent.Load() {
		return
	}
	if len(reason) > 123 {
		reason = reason[:123]
	}
	ws.PayloadType = websocket.CloseFrame
	ws.Write(append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...))
}

// serveWS is one WebSocket subscriber: this goroutine writes, a second
// reads and drops what the client sends (the library answers its pings).
func (s *server) serveWS(ws *websocket.Conn, conn *wsConn, req streamRequest, who principal) {
	defer conn.Conn.Close()
	sub, err := s.subscribe(req, who)
	if err != nil {
		reason := "database unavailable; try again"
		if errors.Is(err, errShuttingDown) {
			reason = "server shutting down"
		}
		closeWS(ws, conn, closeTryAgainLater, reason)
		return
	}
	defer sub.close()
	defer s.metrics.streamOpened("websocket")()
	gone, code := make(chan struct{}), 0
	go func() {
		code = readClient(ws)
		close(gone)
	}()
	if sub.run(gone, wsOut{ws: ws, conn: conn}) && code != 0 {
		// Answer a close frame, or end a connection that broke the
		// protocol, with a close frame of our own.
		closeWS(ws, conn, code, "")
	}
}

// wsOut carries the stream as WebSocket frames.
type wsOut struct {
	ws   *websocket.Conn
	conn *wsConn
}

func (o wsOut) frame(ev *streamEvent) []byte { return ev.wsFrame }
func (wsOut) encode(ev *streamEvent, _ storedEvent, msg []byte) {
	ev.wsFrame = wsFrame(wsOpText, msg)
}
func (o wsOut) hello(pos int64) []byte    { return wsFrame(wsOpText, helloMessage(pos)) }
func (o wsOut) write(msgs [][]byte) error { return o.conn.writeFrames(msgs) }

func (o wsOut) keepalive() error {
	o.ws.PayloadType = websocket.PingFrame
	_, err := o.ws.Write(nil)
	return err
}

func (o wsOut) goodbye(reason endReason, _ int64, hint string) {
	closeWS(o.ws, o.conn, wsCloseCodes[reason], hint)
}

// Client frames that end the connection.
var (
	errReservedOpcode = errors.New("reserved opcode")
	errInvalidUTF8    = errors.New("text frame is not UTF-8")
)

// clientFrame checks one client frame as the library hands it over: its
// payload and opcode (a continuation frame comes with its message's).
// partial carries an unfinished UTF-8 sequence from the end of one text
// frame into the next, where a fragmented message may finish it.
type clientFrame struct{ partial []byte }

var clientFrames = websocket.Codec{Unmarshal: func(data []byte, payloadType byte, v any) error {
	f := v.(*clientFrame)
	switch payloadType {
	case websocket.BinaryFrame:
		return nil
	case websocket.TextFrame:
		text := append(f.partial, data...)
		f.partial = nil
		// Keep at most 3 trailing bytes that may begin a character.
		for cut := len(text) - 1; cut >= 0 && cut >= len(text)-3; cut-- {
			if utf8.RuneStart(text[cut]) {
				if !utf8.FullRune(text[cut:]) {
					f.partial, text = bytes.Clone(text[cut:]), text[:cut]
				}
				break
			}
		}
		if !utf8.Valid(text) {
			return errInvalidUTF8
		}
		return nil
	}
	return errReservedOpcode
}}

// readClient reads and drops client frames until the connection ends, and
// returns the close code to answer with (0 for none). A frame too large or
// one that breaks RFC 6455 ends only this connection. The library does not
// show the RSV bits, the FIN bit, or a control frame's full length, so
// those are not checked; it answers an unmasked frame with 1002 itself.
func readClient(ws *websocket.Conn) int {
	ws.MaxPayloadBytes = wsMaxFrame
	var f clientFrame
	for {
		err := clientFrames.Receive(ws, &f)
		switch {
		case err == nil:
		case errors.Is(err, websocket.ErrFrameTooLarge):
			return closeTooBig
		case errors.Is(err, errReservedOpcode):
			return closeProtocol
		case errors.Is(err, errInvalidUTF8):
			return closeInvalidData
		case errors.Is(err, io.EOF):
			return closeNormal // a close frame, or a protocol error the library answered itself
		default:
			return 0
		}
	}
}
