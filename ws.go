package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"iter"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/websocket"

	"incidents/internal/uring"
)

// Stream tuning.
const (
	// defaultMaxPending is how many events may wait for one subscriber; a
	// subscriber that falls further behind is disconnected and told where
	// to resume, so it never holds up the others. It is several feed pages,
	// so a burst alone does not drop a healthy subscriber; the queue only
	// takes memory while it holds events.
	defaultMaxPending = 8 * feedPageSize
	// defaultStreamWriteTimeout bounds every write to a subscriber.
	defaultStreamWriteTimeout = 10 * time.Second
	// wsMaxFrame is the largest frame a client may send; clients have
	// nothing to say, so their frames are read and dropped.
	wsMaxFrame = 4096
	// backlogPage is how many stored events a resuming subscriber reads at a
	// time.
	backlogPage = 500
)

// WebSocket close codes (RFC 6455 section 7.4).
const (
	closeNormal        = 1000
	closeGoingAway     = 1001
	closeProtocol      = 1002
	closePolicy        = 1008
	closeTooBig        = 1009
	closeTryAgainLater = 1013
)

// hub fans events out to this process's subscribers. publish never blocks:
// each subscriber has its own bounded queue and its own writer.
type hub struct {
	maxPending   int
	writeTimeout time.Duration

	mu       sync.Mutex
	subs     []*subscriber // each knows its index, for removal
	position int64         // the newest sequence number published
	closed   bool
	active   sync.WaitGroup // subscriptions not yet closed, for shutdown
	// senders make publish's direct writes, one per fan-out goroutine, made
	// on first use.
	senders []*sender
	// noRing is why the senders write(2) instead of using io_uring; nil
	// until a sender is made.
	noRing error
	log    *slog.Logger
}

func newHub(logger *slog.Logger) *hub {
	return &hub{maxPending: defaultMaxPending, writeTimeout: defaultStreamWriteTimeout, log: logger}
}

// currentPosition is the newest sequence number published.
func (h *hub) currentPosition() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.position
}

// setPosition sets where the stream starts.
func (h *hub) setPosition(seq int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.position = seq
}

var errShuttingDown = &httpError{status: http.StatusServiceUnavailable, detail: "Server is shutting down"}

// subscribe adds sub and returns the position it starts from: sub receives
// every event after it. Reading history up to that position from the table
// and then the queue gives a stream with no gap and no duplicate.
func (h *hub) subscribe(sub *subscriber) (int64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return 0, errShuttingDown
	}
	sub.slot = len(h.subs)
	h.subs = append(h.subs, sub)
	h.active.Add(1)
	return h.position, nil
}

// unsubscribe removes sub when its connection is done; call it once per
// successful subscribe.
func (h *hub) unsubscribe(sub *subscriber) {
	h.mu.Lock()
	h.remove(sub)
	h.mu.Unlock()
	h.active.Done()
}

// remove takes sub out of the list if it is still there; h.mu is held.
func (h *hub) remove(sub *subscriber) {
	i := sub.slot
	if i < 0 {
		return
	}
	last := len(h.subs) - 1
	h.subs[i] = h.subs[last]
	h.subs[i].slot = i
	h.subs[last] = nil
	h.subs = h.subs[:last]
	sub.slot = -1
}

// count is the number of subscribers receiving events.
func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// fanoutShard is the fewest subscribers worth a goroutine of their own in
// publish: direct writes spread over the cores.
const fanoutShard = 512

// publish hands events to every subscriber that wants them and advances
// the position to seq.
func (h *hub) publish(events []*streamEvent, seq int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		// Every stream has been told to resume elsewhere, and shutdown
		// released the senders' rings: nothing is delivered from here on.
		return
	}
	shards := max(1, min(runtime.GOMAXPROCS(0), len(h.subs)/fanoutShard))
	behind := make([][]*subscriber, shards)
	b := newBatch(events)
	for len(h.senders) < shards {
		h.senders = append(h.senders, h.newSender())
	}
	var wg sync.WaitGroup
	var claimed atomic.Int64
	for i := range shards {
		deliver := func() { behind[i] = h.deliver(h.subs, &claimed, b, h.senders[i]) }
		if i == shards-1 {
			deliver()
		} else {
			wg.Go(deliver)
		}
	}
	wg.Wait()
	h.distrustRings()
	for _, subs := range behind {
		for _, sub := range subs {
			// Too far behind: it gets nothing more and is told to resume
			// from where it is.
			h.remove(sub)
			sub.end(endOverflow)
		}
	}
	h.position = max(h.position, seq)
}

// deliver offers b to the subscribers it claims from subs, directBatch at a
// time, has out send what may go straight to their sockets, and returns
// the subscribers whose queue is full. The fan-out's goroutines claim
// from one count rather than each taking a fixed share: a goroutine the
// scheduler holds back then leaves its work to the others instead of
// making the whole event wait for it (BENCHMARKS.md).
func (h *hub) deliver(subs []*subscriber, claimed *atomic.Int64, b batch, out *sender) (behind []*subscriber) {
	writes := out.writes[:0]
	flush := func() {
		out.send(writes)
		for _, w := range writes {
			if !w.sub.wrote(w.b, w.n, h.maxPending) {
				behind = append(behind, w.sub)
			}
		}
		clear(writes) // keeps no subscriber or batch alive until the next publish
		writes = writes[:0]
	}
	for {
		first := int(claimed.Add(directBatch)) - directBatch
		if first >= len(subs) {
			break
		}
		for _, sub := range subs[first:min(first+directBatch, len(subs))] {
			direct, ok := sub.offer(b, h.maxPending)
			switch {
			case !ok:
				behind = append(behind, sub)
			case direct.events != nil:
				writes = append(writes, directWrite{sub: sub, b: direct})
				if len(writes) == directBatch {
					flush()
				}
			}
		}
	}
	flush()
	return behind
}

// shutdown tells every subscriber to close with "going away" and refuses new
// ones. It is registered with http.Server.RegisterOnShutdown, because
// Shutdown does not wait for hijacked connections.
func (h *hub) shutdown() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for _, sub := range h.subs {
		sub.end(endShutdown)
	}
	for _, out := range h.senders {
		out.close()
	}
	h.senders = nil
}

// recheck ends the streams of user userID (every user's, for 0) whose
// credentials allowed no longer says are good. allowed may query the
// database, so it runs outside the hub's lock.
func (h *hub) recheck(userID int64, allowed func(principal) bool) {
	h.mu.Lock()
	var subs []*subscriber
	for _, sub := range h.subs {
		if sub.who.user != nil && (userID == 0 || sub.who.user.ID == userID) {
			subs = append(subs, sub)
		}
	}
	h.mu.Unlock()
	// After a reconnect every stream is checked: ask once per credential.
	type credential struct{ user, key, version int64 }
	verdicts := map[credential]bool{}
	for _, sub := range subs {
		c := credential{user: sub.who.user.ID, version: sub.who.user.TokenVersion}
		if sub.who.key != nil {
			c.key = sub.who.key.ID
		}
		ok, seen := verdicts[c]
		if !seen {
			ok = allowed(sub.who)
			verdicts[c] = ok
		}
		if !ok {
			sub.end(endRevoked)
		}
	}
}

// wait waits until every subscriber has said goodbye, or ctx ends.
func (h *hub) wait(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		h.active.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// endReason says why the server ends a subscription.
type endReason int

const (
	endNone endReason = iota
	endOverflow
	endShutdown
	endRevoked // the credentials it opened with no longer work
	endHistory // the stored events could not be read
	// endInterrupted: a direct write's outcome is unknown (io_uring failed):
	// the connection may have ended mid-frame, so it closes without another
	// byte, as after a network error, and the client resumes from the last
	// event it has.
	endInterrupted
)

// subscriber is one WebSocket or SSE connection's view of the hub.
type subscriber struct {
	filter streamFilter
	who    principal // as authenticated when the stream opened; anonymous: no user

	// direct, for a WebSocket, lets publish write an event itself while the
	// writer waits with nothing queued: waking a goroutine per subscriber
	// and event costs more than the write.
	direct *wsConn
	slot   int // index in the hub's list, -1 when out; guarded by the hub's mutex

	mu      sync.Mutex
	pending []*streamEvent
	reason  endReason
	idle    bool          // the writer waits and nothing is queued: publish may write directly
	floor   int64         // while idle: the stream has every event up to here
	sent    int64         // the newest event publish wrote directly
	wake    chan struct{} // signalled when pending grows or the subscription ends
}

func newSubscriber(f streamFilter, who principal, direct *wsConn) *subscriber {
	return &subscriber{filter: f, who: who, direct: direct, slot: -1, wake: make(chan struct{}, 1)}
}

// offer hands sub the events of b it wants. While its writer waits with
// nothing queued and nothing else is writing to the connection, offer
// returns them to be written straight to the socket, and sub.mu and the
// connection's frameMu stay held until wrote: waking a goroutine per
// subscriber and event costs more than the write. Otherwise it queues
// them for the writer; ok is false when the queue already holds limit.
func (sub *subscriber) offer(b batch, limit int) (direct batch, ok bool) {
	if b = b.only(sub.filter); len(b.events) == 0 {
		return batch{}, true
	}
	sub.mu.Lock()
	if sub.idle {
		// Only while the writer waits, so events leave in order and the
		// writer never writes at the same time. A stream that resumed
		// ahead of this replica skips what it has, as next does.
		if b = b.after(sub.floor); len(b.events) == 0 {
			sub.mu.Unlock()
			return batch{}, true
		}
		sub.idle = false
		if sub.direct.claim() {
			return b.joined(), true
		}
	}
	return batch{}, sub.enqueue(b.events, limit)
}

// wrote finishes what offer began: n bytes of b went out (-1: none,
// uring.Unknown: nobody knows).
func (sub *subscriber) wrote(b batch, n int, limit int) bool {
	result := sub.direct.wrote(b.wire, n)
	switch {
	case n == uring.Unknown:
		// The frames may be on the wire or not: repeating them could
		// corrupt the stream, so it ends and the client resumes from what
		// it has. The reason is set here because the caller ends it as if
		// it were behind.
		if sub.reason == endNone {
			sub.reason = endInterrupted
		}
		sub.mu.Unlock()
		return false
	case result == wroteAll:
		sub.idle = true
		sub.sent = b.last()
		sub.mu.Unlock()
		return true
	case result == wrotePart:
		// The writer sends the rest before anything else.
		sub.sent = b.last()
		sub.mu.Unlock()
		sub.signal()
		return true
	}
	return sub.enqueue(b.events, limit)
}

// enqueue queues events for the writer and unlocks sub.mu; false when the
// queue already holds limit events.
func (sub *subscriber) enqueue(events []*streamEvent, limit int) bool {
	if len(sub.pending) >= limit {
		sub.mu.Unlock()
		return false
	}
	sub.pending = append(sub.pending, events...)
	sub.mu.Unlock()
	sub.signal()
	return true
}

// batch is events in sequence order as publish hands them to every
// subscriber, with their WebSocket frames joined once for all, so that
// one write sends them.
type batch struct {
	events []*streamEvent
	wire   []byte // nil until joined: for a subset, only once it is written
}

func newBatch(events []*streamEvent) batch {
	return batch{events: events}.joined()
}

// joined is b with its wire. One event's frame is used as it is.
func (b batch) joined() batch {
	if b.wire != nil {
		return b
	}
	if len(b.events) == 1 {
		b.wire = b.events[0].wsFrame
		return b
	}
	for _, ev := range b.events {
		b.wire = append(b.wire, ev.wsFrame...)
	}
	return b
}

// only is the part of b that f passes.
func (b batch) only(f streamFilter) batch {
	if f.wantsAll(b.events) {
		return b
	}
	return batch{events: slices.DeleteFunc(slices.Clone(b.events), func(ev *streamEvent) bool { return !f.wants(ev) })}
}

// after is the part of b past seq.
func (b batch) after(seq int64) batch {
	i := firstAfter(b.events, seq)
	if b.wire == nil || i == 0 {
		return batch{events: b.events[i:], wire: b.wire}
	}
	skip := 0
	for _, ev := range b.events[:i] {
		skip += len(ev.wsFrame)
	}
	return batch{events: b.events[i:], wire: b.wire[skip:]}
}

func (b batch) last() int64 { return b.events[len(b.events)-1].seq }

// firstAfter is the index of the first of events, in sequence order, past
// seq.
func firstAfter(events []*streamEvent, seq int64) int {
	i, _ := slices.BinarySearchFunc(events, seq+1, func(ev *streamEvent, seq int64) int { return cmp.Compare(ev.seq, seq) })
	return i
}

// end asks the subscriber's writer to close the connection.
func (sub *subscriber) end(reason endReason) {
	sub.mu.Lock()
	if sub.reason == endNone {
		sub.reason = reason
	}
	sub.idle = false // not one more event past the end
	sub.mu.Unlock()
	sub.signal()
}

func (sub *subscriber) signal() {
	select {
	case sub.wake <- struct{}{}:
	default:
	}
}

// waiting tells publish that the writer is about to wait, and that the stream
// has every event up to seen: with nothing queued, publish may write later
// events itself until the writer takes again.
func (sub *subscriber) waiting(seen int64) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	sub.idle = sub.direct != nil && len(sub.pending) == 0 && sub.reason == endNone
	sub.floor = seen
}

// take returns the queued events, the newest event publish wrote directly,
// and why the subscription ends if it does. Publish writes nothing more until
// the writer waits again.
func (sub *subscriber) take() ([]*streamEvent, int64, endReason) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	sub.idle = false
	events := sub.pending
	sub.pending = nil
	return events, sub.sent, sub.reason
}

// streamFilter is what a subscriber asked to receive; empty sets mean all.
type streamFilter struct {
	severities []string
	statuses   []string
}

// wantsAll is whether f passes every one of events.
func (f streamFilter) wantsAll(events []*streamEvent) bool {
	for _, ev := range events {
		if !f.wants(ev) {
			return false
		}
	}
	return true
}

func (f streamFilter) wants(ev *streamEvent) bool {
	return (len(f.severities) == 0 || slices.Contains(f.severities, ev.severity)) &&
		(len(f.statuses) == 0 || slices.Contains(f.statuses, ev.status))
}

// streamRequest is a validated subscription request.
type streamRequest struct {
	filter streamFilter
	since  int64 // -1: live only
}

// parseStreamRequest reads since and the filters; lastEventID is the SSE
// header, which wins over ?since because EventSource resends the original
// URL on reconnect.
func parseStreamRequest(q url.Values, lastEventID string) (streamRequest, error) {
	req := streamRequest{since: -1}
	var problems []fieldError
	req.filter.severities, problems = queryEnum(problems, q, "severity", severities)
	req.filter.statuses, problems = queryEnum(problems, q, "status", statuses)
	loc, raw := []string{"query", "since"}, q.Get("since")
	if lastEventID != "" {
		loc, raw = []string{"header", "last-event-id"}, lastEventID
	}
	if raw != "" {
		n, perr := parseIntParam(loc, raw, 0, 1<<63-1)
		if perr != nil {
			problems = append(problems, *perr)
		}
		req.since = n
	}
	return req, invalid(problems...)
}

// subscription is one subscriber's side of the stream: history first, then
// live events.
type subscription struct {
	s    *server
	sub  *subscriber
	seen int64 // every event up to here was sent or filtered out
}

// startSubscription subscribes and returns the hub position, which the
// hello message reports.
func (s *server) startSubscription(req streamRequest, who principal, direct *wsConn) (*subscription, int64, error) {
	sub := newSubscriber(req.filter, who, direct)
	pos, err := s.hub.subscribe(sub)
	if err != nil {
		return nil, 0, err
	}
	seen := pos
	if req.since >= 0 {
		seen = req.since
	}
	if seen > pos {
		// Ahead of this replica: either another replica's feed is ahead of
		// ours (the events up to since exist; skip them as they come, so
		// none repeats), or since names no event at all: then live only.
		newest, err := s.store.LatestEventSeq(context.Background())
		if err != nil {
			s.hub.unsubscribe(sub)
			return nil, 0, err
		}
		if seen > newest {
			seen = pos
		}
	}
	return &subscription{s: s, sub: sub, seen: seen}, pos, nil
}

// replay sends the stored events after since up to the hub position the
// subscription started at, a page per write; the queue holds everything
// after that.
func (c *subscription) replay(ctx context.Context, upTo int64, out streamOut) error {
	for c.seen < upTo {
		events, err := c.s.store.EventsAfter(ctx, c.seen, upTo, backlogPage)
		if err != nil {
			return err
		}
		if len(events) == 0 {
			break // the rest were ids that never committed
		}
		var msgs [][]byte
		for _, e := range events {
			if ev := newStreamEvent(e); c.sub.filter.wants(ev) {
				msgs = append(msgs, out.frame(ev))
			}
		}
		if err := out.write(msgs...); err != nil {
			return err
		}
		c.seen = events[len(events)-1].Seq
	}
	c.seen = max(c.seen, upTo)
	return nil
}

// wakeup is what a subscription's writer has to do next.
type wakeup struct {
	events    []*streamEvent // queued events not yet seen, in order
	reason    endReason      // the server ends the subscription after events
	keepalive bool           // nothing to send for a while: ping
	gone      bool           // the client went away
}

// next waits for queued events, the keepalive tick or the client leaving.
func (c *subscription) next(gone <-chan struct{}, tick <-chan time.Time) wakeup {
	var w wakeup
	c.sub.waiting(c.seen)
	select {
	case <-c.sub.wake:
	case <-gone:
		w.gone = true
	case <-tick:
		w.keepalive = true
	}
	// Take even when not woken for events: from here on publish queues, so
	// this goroutine alone writes.
	events, sent, reason := c.sub.take()
	c.seen = max(c.seen, sent)
	if w.gone {
		return w
	}
	w.reason = reason
	if reason == endRevoked {
		return w // not one more event
	}
	// The queue is in sequence order: what replay already sent is a prefix.
	w.events = events[firstAfter(events, c.seen):]
	return w
}

func (c *subscription) close() { c.s.hub.unsubscribe(c.sub) }

// endings say why the server ends a stream, as the client is told.
var endings = map[endReason]string{
	endOverflow: "too slow;",
	endShutdown: "server shutting down;",
	endRevoked:  "access revoked; authenticate again to",
	endHistory:  "could not read history;",
}

// resumeHint tells a client why the server ends its stream and where to
// pick up.
func (c *subscription) resumeHint(reason endReason) string {
	return endings[reason] + " resume with since=" + strconv.FormatInt(c.seen, 10)
}

// streamOut is how one kind of connection carries the stream: WebSocket
// frames or Server-Sent Events.
type streamOut interface {
	frame(ev *streamEvent) []byte
	hello(pos int64) []byte
	keepalive() []byte
	// goodbye is the last message when the server ends the stream.
	goodbye(reason endReason, since int64, hint string) []byte
	// write sends whole messages with the write deadline.
	write(msgs ...[]byte) error
}

// run sends the hello, the history after since, then live events, until
// the client goes (ctx ends) or the server ends the stream. It reports
// whether the client went.
func (c *subscription) run(ctx context.Context, pos int64, out streamOut) (clientGone bool) {
	if out.write(out.hello(pos)) != nil {
		return false
	}
	if err := c.replay(ctx, pos, out); err != nil {
		if ctx.Err() != nil {
			return true
		}
		c.s.log.Warn("stream replay", "error", err)
		out.write(out.goodbye(endHistory, c.seen, c.resumeHint(endHistory)))
		return false
	}
	ping := time.NewTicker(c.s.pingInterval)
	defer ping.Stop()
	for {
		next := c.next(ctx.Done(), ping.C)
		if next.gone {
			return true
		}
		if next.reason == endInterrupted {
			return false // not one byte more: it could land inside a frame
		}
		msgs := make([][]byte, 0, len(next.events)+1)
		for _, ev := range next.events {
			msgs = append(msgs, out.frame(ev))
		}
		if next.keepalive {
			msgs = append(msgs, out.keepalive())
		}
		if out.write(msgs...) != nil {
			return false
		}
		if len(next.events) > 0 {
			c.seen = next.events[len(next.events)-1].seq
		}
		if next.reason != endNone {
			out.write(out.goodbye(next.reason, c.seen, c.resumeHint(next.reason)))
			return false
		}
	}
}

// helloMessage is the first message of every stream: where it starts.
func helloMessage(pos int64) []byte {
	b, _ := marshalJSON(streamMessage{Type: "hello", Seq: pos})
	return b
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
		return &httpError{status: http.StatusForbidden, detail: "Origin not allowed"}
	}
	hijacked := &hijackedConn{ResponseWriter: w, writeTimeout: s.hub.writeTimeout}
	websocket.Server{
		// The origin was checked above; the library's default handshake
		// would refuse clients without an Origin header (scripts, bots).
		Handshake: func(cfg *websocket.Config, r *http.Request) error {
			cfg.Origin, _ = websocket.Origin(cfg, r)
			return nil
		},
		Handler: func(ws *websocket.Conn) {
			// The subscriber's own goroutines take the connection over, so
			// this request's goroutine, and net/http's state for it, can go:
			// an idle subscriber then costs a few KiB.
			hijacked.conn.detached.Store(true)
			go s.serveWS(ws, hijacked.conn, req, principalOf(r))
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
// (the library only reads client frames and writes control frames through
// them; event frames go to the connection directly), which the subscriber
// can keep after the HTTP handler returns.
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
	h.conn = newWSConn(conn, h.writeTimeout)
	reader := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(early)), conn), 512)
	return h.conn, bufio.NewReadWriter(reader, bufio.NewWriterSize(h.conn, 256)), nil
}

// wsConn is a WebSocket connection after the handshake. Frames must not
// interleave on it: ours (from the subscriber's writer, or from publish while
// the writer waits) and the library's (pongs and close replies, written
// from the reading goroutine) each hold frameMu from their first byte on
// the wire to their last.
type wsConn struct {
	net.Conn
	fd      int           // the socket, for writes that must not wait; -1 if not a socket
	timeout time.Duration // for every write of ours
	// detached makes Close a no-op: the WebSocket library closes the
	// connection when its handler returns, but the subscriber keeps it.
	detached atomic.Bool

	frameMu sync.Mutex
	// rest is what a direct write left after it began a frame.
	// frameMu stays held for it, and the next write sends it first. The
	// subscriber's mutex hands it from publish to the writer.
	rest []byte
	// libraryClosed: the library answered a protocol error with a close
	// frame of its own, so we send none after it.
	libraryClosed atomic.Bool
}

func newWSConn(conn net.Conn, timeout time.Duration) *wsConn {
	c := &wsConn{Conn: conn, timeout: timeout, fd: -1}
	// The descriptor stays valid until release: publish only writes to
	// subscribers in the hub, and release comes after leaving it.
	if sc, ok := conn.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			raw.Control(func(fd uintptr) { c.fd = int(fd) })
		}
	}
	return c
}

// Write is the library's path to the connection (pongs, close replies),
// with our deadline: a client that sends pings and reads nothing must not
// hold frameMu, and with it our writer, for longer than that.
func (c *wsConn) Write(p []byte) (int, error) {
	c.frameMu.Lock()
	defer c.frameMu.Unlock()
	if len(p) > 0 && p[0] == 0x80|wsOpClose {
		c.libraryClosed.Store(true)
	}
	return c.send(p)
}

func (c *wsConn) Close() error {
	if c.detached.Load() {
		return nil
	}
	return c.Conn.Close()
}

// release closes a detached connection for good, after the subscriber left
// the hub, and frees a frame publish left unfinished.
func (c *wsConn) release() {
	c.Conn.Close()
	if c.rest != nil {
		c.rest = nil
		c.frameMu.Unlock()
	}
}

type writeResult int

const (
	wroteNone writeResult = iota
	wrotePart
	wroteAll
)

// claim takes the connection for a write that must not wait; false if it
// is not a socket or another frame is on its way.
func (c *wsConn) claim() bool {
	return c.fd >= 0 && c.frameMu.TryLock()
}

// wrote finishes a claimed write of wire, of which n bytes went out (-1:
// none, or uring.Unknown). After wrotePart, frameMu stays held and rest
// holds what is left.
func (c *wsConn) wrote(wire []byte, n int) writeResult {
	switch {
	case n == uring.Unknown:
		// Part of a frame may have left: not one byte more may follow,
		// from us or from the library. Shutdown, not close, keeps the
		// descriptor's number from being reused while publish holds it.
		syscall.Shutdown(c.fd, syscall.SHUT_RDWR)
		c.frameMu.Unlock()
		return wroteNone
	case n <= 0:
		c.frameMu.Unlock()
		return wroteNone
	case n >= len(wire):
		c.frameMu.Unlock()
		return wroteAll
	}
	c.rest = wire[n:]
	return wrotePart
}

// write sends whole frames, after the rest of one direct write began.
func (c *wsConn) write(frames ...[]byte) error {
	if len(frames) == 0 && c.rest == nil {
		return nil
	}
	if c.rest != nil {
		frames = append([][]byte{c.rest}, frames...) // frameMu is already held for it
		c.rest = nil
	} else {
		c.frameMu.Lock()
	}
	defer c.frameMu.Unlock()
	_, err := c.send(frames...)
	return err
}

// send writes frames, then clears the deadline, so that no later write
// meets an expired one; frameMu is held. The deadline is for each
// sendChunk bytes: a client that reads slowly but steadily is not cut off
// for the size of its backlog, only one that stops reading.
func (c *wsConn) send(frames ...[]byte) (int, error) {
	defer c.Conn.SetWriteDeadline(time.Time{})
	if len(frames) == 1 && len(frames[0]) <= sendChunk {
		c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
		return c.Conn.Write(frames[0]) // write(2); a one-element writev costs more
	}
	return writeChunks(frames, c.timeout, c.Conn.SetWriteDeadline, writevTo(c.Conn))
}

// writevTo writes a chunk to w, with one writev where w is a socket.
func writevTo(w io.Writer) func([][]byte) (int, error) {
	return func(chunk [][]byte) (int, error) {
		bufs := net.Buffers(chunk)
		n, err := bufs.WriteTo(w)
		return int(n), err
	}
}

// sendChunk is how many bytes one write with a fresh deadline carries.
const sendChunk = 64 << 10

// batchTimeouts bounds a whole batch to this many write timeouts, however
// steadily it goes: meanwhile the connection's writer can neither answer a
// ping nor end the stream (a revoked credential, a shutdown).
const batchTimeouts = 6

// writeChunks hands msgs to write a sendChunk at a time, each with a fresh
// deadline of timeout, the whole within batchTimeouts of them: the one way
// both transports write a batch. It reports the bytes write reported.
func writeChunks(msgs [][]byte, timeout time.Duration, setDeadline func(time.Time) error, write func([][]byte) (int, error)) (int, error) {
	sent, stop := 0, time.Now().Add(batchTimeouts*timeout)
	for chunk := range chunks(msgs) {
		deadline := time.Now().Add(timeout)
		if deadline.After(stop) {
			deadline = stop
		}
		setDeadline(deadline)
		n, err := write(chunk)
		sent += n
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

// chunks splits the bytes of msgs, in order, into runs of sendChunk bytes
// (the last may be shorter); a message may straddle two runs.
func chunks(msgs [][]byte) iter.Seq[[][]byte] {
	return func(yield func([][]byte) bool) {
		var run [][]byte
		size := 0
		for _, m := range msgs {
			for len(m) > 0 {
				take := min(len(m), sendChunk-size)
				run, size, m = append(run, m[:take]), size+take, m[take:]
				if size == sendChunk {
					if !yield(run) {
						return
					}
					run, size = nil, 0
				}
			}
		}
		if len(run) > 0 {
			yield(run)
		}
	}
}

// serveWS is one WebSocket subscriber. This goroutine writes our frames,
// or lets publish write them while it waits; a second goroutine reads and
// drops what the client sends (the library answers pings from it).
func (s *server) serveWS(ws *websocket.Conn, conn *wsConn, req streamRequest, who principal) {
	defer conn.release()
	c, pos, err := s.startSubscription(req, who, conn)
	if err != nil {
		reason := "database unavailable; try again"
		if errors.Is(err, errShuttingDown) {
			reason = "server shutting down"
		}
		conn.write(wsCloseFrame(closeTryAgainLater, reason))
		return
	}
	defer c.close()

	// The reader ends ctx when the client closes or breaks the connection.
	ctx, cancel := context.WithCancel(context.Background())
	closeCode := make(chan int, 1)
	go func() {
		defer cancel()
		closeCode <- readClient(ws)
	}()
	if c.run(ctx, pos, wsOut{conn}) {
		// Answer a close frame with one of our own, as RFC 6455 asks.
		if code := <-closeCode; code != 0 && !conn.libraryClosed.Load() {
			conn.write(wsCloseFrame(code, ""))
		}
	}
}

// wsOut carries the stream as WebSocket frames, written straight to the
// connection.
type wsOut struct{ conn *wsConn }

// wsCloseCodes close a stream the server ends.
var wsCloseCodes = map[endReason]int{
	endOverflow: closeTryAgainLater,
	endShutdown: closeGoingAway,
	endRevoked:  closePolicy,
	endHistory:  closeTryAgainLater,
}

func (o wsOut) frame(ev *streamEvent) []byte { return ev.wsFrame }
func (o wsOut) hello(pos int64) []byte       { return wsFrame(wsOpText, helloMessage(pos)) }
func (o wsOut) keepalive() []byte            { return wsPingFrame }
func (o wsOut) goodbye(reason endReason, _ int64, hint string) []byte {
	return wsCloseFrame(wsCloseCodes[reason], hint)
}

func (o wsOut) write(msgs ...[]byte) error { return o.conn.write(msgs...) }

// readClient reads and drops client frames until the connection ends, and
// returns the close code to answer with (0 for none). Oversized frames end
// only this connection.
func readClient(ws *websocket.Conn) int {
	ws.MaxPayloadBytes = wsMaxFrame
	for {
		var msg []byte
		err := websocket.Message.Receive(ws, &msg)
		switch {
		case err == nil:
			continue
		case errors.Is(err, websocket.ErrFrameTooLarge):
			return closeTooBig
		case errors.Is(err, io.EOF):
			return closeNormal // a close frame, or a protocol error the library answered itself
		default:
			return 0
		}
	}
}

// WebSocket opcodes the server sends.
const (
	wsOpText  = 0x1
	wsOpClose = 0x8
	wsOpPing  = 0x9
)

var wsPingFrame = wsFrame(wsOpPing, nil)

// sseKeepalive is the comment an idle SSE stream gets, so proxies keep it.
var sseKeepalive = []byte(": keepalive\n\n")

// wsFrame builds an unmasked, final server frame.
func wsFrame(opcode byte, payload []byte) []byte {
	n := len(payload)
	var b []byte
	switch {
	case n < 126:
		b = make([]byte, 2, 2+n)
		b[1] = byte(n)
	case n <= 0xFFFF:
		b = make([]byte, 4, 4+n)
		b[1] = 126
		binary.BigEndian.PutUint16(b[2:], uint16(n))
	default:
		b = make([]byte, 10, 10+n)
		b[1] = 127
		binary.BigEndian.PutUint64(b[2:], uint64(n))
	}
	b[0] = 0x80 | opcode
	return append(b, payload...)
}

// wsCloseFrame builds a close frame; the reason is cut to fit the 125-byte
// control frame limit.
func wsCloseFrame(code int, reason string) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	payload := binary.BigEndian.AppendUint16(nil, uint16(code))
	return wsFrame(wsOpClose, append(payload, reason...))
}

// handleSSE handles GET /api/v1/events: the same stream as Server-Sent
// Events, for curl, scripts and EventSource.
func (s *server) handleSSE(w http.ResponseWriter, r *http.Request) error {
	req, err := parseStreamRequest(r.URL.Query(), r.Header.Get("Last-Event-ID"))
	if err != nil {
		return err
	}
	c, pos, err := s.startSubscription(req, principalOf(r), nil)
	if err != nil {
		return err
	}
	defer c.close()

	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no") // nginx would buffer the stream
	w.WriteHeader(http.StatusOK)
	c.run(r.Context(), pos, sseOut{w: w, rc: http.NewResponseController(w), timeout: s.hub.writeTimeout})
	return nil
}

// sseOut carries the stream as Server-Sent Events, flushed per write.
type sseOut struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (o sseOut) frame(ev *streamEvent) []byte { return ev.sse }
func (o sseOut) hello(pos int64) []byte       { return sseMessage("", "hello", helloMessage(pos)) }
func (o sseOut) keepalive() []byte            { return sseKeepalive }
func (o sseOut) goodbye(_ endReason, since int64, hint string) []byte {
	bye, _ := marshalJSON(map[string]any{"type": "close", "since": since, "reason": hint})
	return sseMessage("", "close", bye)
}

func (o sseOut) write(msgs ...[]byte) error {
	_, err := writeChunks(msgs, o.timeout, o.rc.SetWriteDeadline, func(chunk [][]byte) (int, error) {
		for _, m := range chunk {
			if _, err := o.w.Write(m); err != nil {
				return 0, err
			}
		}
		return 0, o.rc.Flush()
	})
	return err
}
