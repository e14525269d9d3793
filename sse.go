package main

import (
	"net/http"
	"strconv"
	"time"
)

// sseKeepalive is the comment an idle SSE stream gets, so proxies keep it.
var sseKeepalive = []byte(": keepalive\n\n")

// handleSSE handles GET /api/v1/events: the same stream as Server-Sent
// Events, for curl, scripts and EventSource.
func (s *server) handleSSE(w http.ResponseWriter, r *http.Request) error {
	req, err := parseStreamRequest(r.URL.Query(), r.Header.Get("Last-Event-ID"))
	if err != nil {
		return err
	}
	sub, err := s.subscribe(req, principalOf(r))
	if err != nil {
		return err
	}
	defer sub.close()
	defer s.metrics.streamOpened("sse")()

	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no") // nginx would buffer the stream
	w.WriteHeader(http.StatusOK)
	sub.run(r.Context().Done(), sseOut{w: w, rc: http.NewResponseController(w), timeout: s.hub.writeTimeout})
	return nil
}

// sseOut carries the stream as Server-Sent Events, flushed per write.
type sseOut struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (o sseOut) frame(ev *streamEvent) []byte { return ev.sse }
func (sseOut) encode(ev *streamEvent, e storedEvent, msg []byte) {
	ev.sse = sseMessage(strconv.FormatInt(e.Seq, 10), e.Type, msg)
}
func (o sseOut) hello(pos int64) []byte { return sseMessage("", "hello", helloMessage(pos)) }
func (o sseOut) keepalive() error       { return o.write([][]byte{sseKeepalive}) }

func (o sseOut) goodbye(_ endReason, since int64, hint string) {
	bye, _ := marshalJSON(map[string]any{"type": "close", "since": since, "reason": hint})
	o.write([][]byte{sseMessage("", "close", bye)})
}

func (o sseOut) write(msgs [][]byte) error {
	o.rc.SetWriteDeadline(time.Now().Add(o.timeout))
	for _, m := range msgs {
		if _, err := o.w.Write(m); err != nil {
			return err
		}
	}
	return o.rc.Flush()
}
