package main

import (
	"cmp"
	"context"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Stream tuning.
const (
	// defaultLogEvents and defaultLogBytes bound the log of recent events.
	// A subscriber whose cursor falls out of it reads the table instead.
	defaultLogEvents = 4096
	defaultLogBytes  = 16 << 20
	// defaultStreamWriteTimeout bounds every write to a subscriber.
	defaultStreamWriteTimeout = 10 * time.Second
	// defaultCatchUpPages is how many pages of history a live subscriber
	// that fell out of the log may read from the table to catch up; past
	// that it cannot keep up, and is told to resume later.
	defaultCatchUpPages = 4
	// historyPage is how many stored events a subscriber reads at a time
	// (fewer when they pass pageBudget bytes).
	historyPage = 500
	// batchBytes is about the most one write sends, so that the writer
	// notices the end of its stream between writes.
	batchBytes = 256 << 10
)

// eventLog is the window of recent events that every subscriber reads
// through its own cursor. The feed appends; readers load the current state
// and wait on its changed channel, so an append costs the same however
// many subscribers there are.
type eventLog struct {
	maxEvents, maxBytes int
	mu                  sync.Mutex // appends
	state               atomic.Pointer[logState]
}

// logState is one immutable version of the log: it holds every event with
// start < seq <= position that committed (ids that never did are missing).
type logState struct {
	events   []*streamEvent // in sequence order; never changed once published
	bytes    int
	start    int64
	position int64
	changed  chan struct{} // closed when a newer state replaces this one
}

func newEventLog(maxEvents, maxBytes int) *eventLog {
	l := &eventLog{maxEvents: maxEvents, maxBytes: maxBytes}
	l.state.Store(&logState{changed: make(chan struct{})})
	return l
}

func (l *eventLog) current() *logState { return l.state.Load() }

// begin positions an empty log at seq: the stream starts after it.
func (l *eventLog) begin(seq int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	old := l.state.Load()
	l.state.Store(&logState{start: seq, position: seq, changed: make(chan struct{})})
	close(old.changed)
}

// append adds events (after the position, in order) and moves the position
// to seq, dropping the oldest events past the log's bounds.
func (l *eventLog) append(events []*streamEvent, seq int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	old := l.state.Load()
	if seq <= old.position && len(events) == 0 {
		return
	}
	next := &logState{start: old.start, position: max(old.position, seq), changed: make(chan struct{}), bytes: old.bytes}
	// Appending past the old slice's length never changes what its readers
	// see; the dropped head is freed when append next reallocates.
	next.events = append(old.events, events...)
	for _, ev := range events {
		next.bytes += ev.size()
	}
	drop := 0
	for drop < len(next.events) && (len(next.events)-drop > l.maxEvents || next.bytes > l.maxBytes) {
		next.bytes -= next.events[drop].size()
		next.start = next.events[drop].seq
		drop++
	}
	next.events = next.events[drop:]
	l.state.Store(next)
	close(old.changed)
}

// after returns the events after seq, which must not be before start.
func (st *logState) after(seq int64) []*streamEvent { return st.events[firstAfter(st.events, seq):] }

// hub is this process's stream: the event log and the subscriptions that
// read it. The log never waits for a subscriber; the hub only knows them to
// end them (shutdown, revoked credentials).
type hub struct {
	log          *eventLog
	writeTimeout time.Duration
	catchUpPages int

	mu     sync.Mutex
	subs   map[*subscription]struct{}
	closed bool
	active sync.WaitGroup // subscriptions not yet done, for shutdown
}

func newHub() *hub {
	return &hub{
		log:          newEventLog(defaultLogEvents, defaultLogBytes),
		writeTimeout: defaultStreamWriteTimeout,
		catchUpPages: defaultCatchUpPages,
		subs:         map[*subscription]struct{}{},
	}
}

// shutdown ends every subscription with "going away" and refuses new ones.
// It is registered with http.Server.RegisterOnShutdown, because Shutdown
// does not wait for hijacked connections.
func (h *hub) shutdown() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for sub := range h.subs {
		sub.end(endShutdown)
	}
}

// recheck ends the streams of user userID (every user's, for 0) whose
// credentials allowed no longer says are good. allowed may query the
// database, so it runs outside the hub's lock.
func (h *hub) recheck(userID int64, allowed func(principal) bool) {
	h.mu.Lock()
	var subs []*subscription
	for sub := range h.subs {
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

// wait waits until every subscription is done, or ctx ends.
func (h *hub) wait(ctx context.Context) { waitDone(ctx, &h.active) }

// waitDone waits for wg until ctx ends; false if ctx ended first.
func waitDone(ctx context.Context, wg *sync.WaitGroup) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// endReason says why the server ends a subscription.
type endReason int32

const (
	endNone endReason = iota
	endOverflow
	endShutdown
	endRevoked // the credentials it opened with no longer work
	endHistory // the stored events could not be read
)

// endings say why the server ends a stream, as the client is told.
var endings = map[endReason]string{
	endOverflow: "too slow;",
	endShutdown: "server shutting down;",
	endRevoked:  "access revoked; authenticate again to",
	endHistory:  "could not read history;",
}

// streamFilter is what a subscriber asked to receive; empty sets mean all.
type streamFilter struct {
	severities []string
	statuses   []string
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

// subscription is one WebSocket or SSE connection's stream: a cursor into
// the event log (or, behind it, the table), read by the connection's one
// writer goroutine.
type subscription struct {
	s      *server
	filter streamFilter
	who    principal // as authenticated when the stream opened; anonymous: no user
	start  int64     // the log's position when it opened, which hello reports
	cursor int64     // every event up to here was sent or filtered out

	reason atomic.Int32  // an endReason, once the server ends it
	ended  chan struct{} // closed with the first end
	once   sync.Once
}

// subscribe opens a subscription for req. A since ahead of this replica's
// log is kept when another replica's feed is ahead (those events exist: the
// log skips them as they come); one that names no event at all means live
// only.
func (s *server) subscribe(req streamRequest, who principal) (*subscription, error) {
	h := s.hub
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, errShuttingDown
	}
	pos := h.log.current().position
	sub := &subscription{s: s, filter: req.filter, who: who, start: pos, cursor: pos, ended: make(chan struct{})}
	h.subs[sub] = struct{}{}
	h.active.Add(1)
	h.mu.Unlock()
	if req.since >= 0 {
		sub.cursor = req.since
	}
	if sub.cursor > pos {
		newest, err := s.store.LatestEventSeq(context.Background())
		if err != nil {
			sub.close()
			return nil, err
		}
		if sub.cursor > newest {
			sub.cursor = pos
		}
	}
	return sub, nil
}

// close removes the subscription from the hub; once per subscribe.
func (sub *subscription) close() {
	h := sub.s.hub
	h.mu.Lock()
	delete(h.subs, sub)
	h.mu.Unlock()
	h.active.Done()
}

// end asks the subscription's writer to close the stream, for the first
// reason given.
func (sub *subscription) end(reason endReason) {
	sub.once.Do(func() {
		sub.reason.Store(int32(reason))
		close(sub.ended)
	})
}

// resumeHint tells a client why the server ends its stream and where to
// pick up.
func (sub *subscription) resumeHint(reason endReason) string {
	return endings[reason] + " resume with since=" + strconv.FormatInt(sub.cursor, 10)
}

// streamOut is how one kind of connection carries the stream: WebSocket
// frames or Server-Sent Events.
type streamOut interface {
	frame(ev *streamEvent) []byte
	// encode frames event e, whose message is msg, into ev for this
	// transport only.
	encode(ev *streamEvent, e storedEvent, msg []byte)
	hello(pos int64) []byte
	keepalive() error
	// goodbye sends the last message when the server ends the stream.
	goodbye(reason endReason, since int64, hint string)
	// write sends whole messages with the write deadline.
	write(msgs [][]byte) error
}

// run sends the hello, then every event after the cursor, from the table
// while the cursor is older than the log and from the log after that, until
// the client goes (gone closes) or the server ends the stream. It reports
// whether the client went.
func (sub *subscription) run(gone <-chan struct{}, out streamOut) (clientGone bool) {
	if out.write([][]byte{out.hello(sub.start)}) != nil {
		return false
	}
	ping := time.NewTicker(sub.s.pingInterval)
	defer ping.Stop()
	live, catchUp := false, 0
	for {
		if reason := endReason(sub.reason.Load()); reason != endNone {
			out.goodbye(reason, sub.cursor, sub.resumeHint(reason))
			sub.s.metrics.streamEnded(reason)
			return false
		}
		st := sub.s.hub.log.current()
		var err error
		switch {
		case sub.cursor < st.start:
			if live && catchUp == sub.s.hub.catchUpPages {
				sub.end(endOverflow)
				continue
			}
			if live {
				catchUp++
			}
			err = sub.history(st.position, out)
		case sub.cursor < st.position:
			live, catchUp = true, 0
			err = sub.send(st.after(sub.cursor), st.position, out)
		default:
			live = true
			select {
			case <-st.changed:
			case <-sub.ended:
			case <-ping.C:
				err = out.keepalive()
			case <-gone:
				return true
			}
		}
		if err != nil {
			sub.s.metrics.streamEnded(endNone) // the write failed
			return false
		}
	}
}

// send writes the events the filter wants, batchBytes at a time, moving the
// cursor past them; position is where the cursor goes once all are sent.
func (sub *subscription) send(events []*streamEvent, position int64, out streamOut) error {
	var msgs [][]byte
	size := 0
	for i, ev := range events {
		if sub.filter.wants(ev) {
			msgs = append(msgs, out.frame(ev))
			size += len(msgs[len(msgs)-1])
		}
		if size >= batchBytes && i < len(events)-1 {
			position = ev.seq
			break
		}
	}
	if len(msgs) > 0 {
		if err := out.write(msgs); err != nil {
			return err
		}
		sub.s.metrics.delivered.Add(uint64(len(msgs)))
	}
	sub.cursor = position
	return nil
}

// history reads a page of stored events after the cursor, up to upTo, and
// sends them. A page with none left means the rest were ids that never
// committed.
func (sub *subscription) history(upTo int64, out streamOut) error {
	stored, _, err := sub.s.store.EventsAfter(context.Background(), sub.cursor, upTo, historyPage)
	if err != nil {
		sub.s.log.Warn("stream history", "error", err)
		sub.end(endHistory)
		return nil
	}
	if len(stored) == 0 {
		sub.cursor = upTo
		return nil
	}
	events := make([]*streamEvent, len(stored))
	for i, e := range stored {
		events[i] = streamFields(e)
		if sub.filter.wants(events[i]) {
			out.encode(events[i], e, eventMessage(e))
		}
	}
	for len(events) > 0 {
		last := events[len(events)-1].seq
		if err := sub.send(events, last, out); err != nil {
			return err
		}
		events = events[firstAfter(events, sub.cursor):]
	}
	return nil
}

// firstAfter is the index of the first of events, in sequence order, past
// seq.
func firstAfter(events []*streamEvent, seq int64) int {
	i, _ := slices.BinarySearchFunc(events, seq+1, func(ev *streamEvent, seq int64) int { return cmp.Compare(ev.seq, seq) })
	return i
}
