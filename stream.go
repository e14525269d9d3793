package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
	"time"

	"github.com/lib/pq"
)

// notifyChannel is the PostgreSQL channel the incident_events trigger
// notifies on.
const notifyChannel = "incident_events"

// accessChannel carries the id of a user whose credentials changed (disabled,
// password changed, a key revoked): every replica re-checks that user's open
// streams.
const accessChannel = "access_changed"

// feedPageSize is how many events the feed reads per query.
const feedPageSize = 500

// eventFeed moves committed events from incident_events to the local hub,
// in sequence order, each exactly once. It is the only path live events
// take to subscribers, on one replica or many (a resuming subscriber reads
// its history from the table itself): a notification (or a poll, or a
// listener reconnect) only says "read the table", and the table is the truth.
type eventFeed struct {
	store *store
	hub   *hub
	log   *slog.Logger
	dsn   string

	// gapWait is how long the feed waits at least for a missing sequence
	// number: a transaction that took it may not have committed yet (ids
	// are handed out before commit), or it rolled back and the id never
	// appears. Past it, see gapSettled; gapMaxWait bounds the whole wait, as
	// a transaction left open must not stop the stream.
	gapWait, gapMaxWait time.Duration
	// pollInterval is the safety net for a lost notification.
	pollInterval time.Duration

	lastSeen int64 // every event up to here went to the hub or was a gap
	gap      gap   // the wait at lastSeen+1; zero when not waiting

	// accessChanged is called with a user id from accessChannel, and with 0
	// (everyone) after the listener reconnects, since it may have missed one.
	accessChanged func(userID int64)
}

// gap is what the feed knows of a missing sequence number it waits for.
type gap struct {
	since   time.Time // when the feed first waited for it
	writers []string  // past gapWait: the transactions that may hold it
	checked bool      // writers was read
	ended   bool      // they have all ended: one more read of the table decides
}

func newEventFeed(st *store, h *hub, logger *slog.Logger, dsn string) *eventFeed {
	return &eventFeed{store: st, hub: h, log: logger, dsn: dsn, gapWait: time.Second, gapMaxWait: 10 * time.Second, pollInterval: 2 * time.Second}
}

// start positions the feed at the newest event: live subscribers get what
// happens from now on, and history is read from the table on request.
func (f *eventFeed) start(ctx context.Context) error {
	seq, err := f.store.LatestEventSeq(ctx)
	if err != nil {
		return err
	}
	f.lastSeen = seq
	f.hub.setPosition(seq)
	return nil
}

// run feeds the hub until ctx ends.
func (f *eventFeed) run(ctx context.Context) {
	// The feed reads on its own connection so that a burst of requests
	// holding the shared pool cannot delay delivery to every subscriber.
	if own, err := f.store.withOwnPool(ctx, f.dsn, 1); err == nil {
		defer own.Close()
		f.store = own
	}
	listener := pq.NewListener(f.dsn, 100*time.Millisecond, 5*time.Second, func(ev pq.ListenerEventType, err error) {
		switch ev {
		case pq.ListenerEventDisconnected, pq.ListenerEventConnectionAttemptFailed:
			f.log.Warn("event listener lost its connection; polling until it is back", "event", ev.String(), "error", err)
		case pq.ListenerEventReconnected:
			f.log.Info("event listener reconnected; catching up from the table")
		}
	})
	defer listener.Close()
	go func() {
		// Listen blocks until the first connection succeeds; polling covers
		// the wait, so run must not block on it.
		for _, channel := range []string{notifyChannel, accessChannel} {
			if err := listener.Listen(channel); err != nil && ctx.Err() == nil {
				f.log.Error("listen for events", "channel", channel, "error", err)
			}
		}
	}()

	poll := time.NewTicker(f.pollInterval)
	defer poll.Stop()
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case n := <-listener.Notify:
			// A nil notification follows a reconnect: the table tells what
			// was missed while the listener was down.
			f.dispatch(n)
		case <-poll.C:
		case <-retry.C:
		}
		f.drain(listener.Notify)
		waitFor, err := f.catchUp(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			f.log.Warn("read new events", "error", err)
			waitFor = f.pollInterval / 4
		}
		if waitFor > 0 {
			retry.Reset(waitFor)
		}
	}
}

// drain empties the notification channel: one read of the table serves
// every event notification that arrived meanwhile.
func (f *eventFeed) drain(ch <-chan *pq.Notification) {
	for {
		select {
		case n := <-ch:
			f.dispatch(n)
		default:
			return
		}
	}
}

// dispatch acts on an access notification; event notifications need
// nothing but the read of the table that follows.
func (f *eventFeed) dispatch(n *pq.Notification) {
	if f.accessChanged == nil {
		return
	}
	switch {
	case n == nil:
		f.accessChanged(0)
	case n.Channel == accessChannel:
		if id, err := strconv.ParseInt(n.Extra, 10, 64); err == nil {
			f.accessChanged(id)
		}
	}
}

// catchUp reads every committed event after lastSeen and publishes them in
// order. It stops at a missing sequence number until it appears or the gap
// settles (see gapSettled); then the id is taken for a rollback and
// skipped. It returns how soon to look again while waiting on a gap.
func (f *eventFeed) catchUp(ctx context.Context) (time.Duration, error) {
	for {
		events, err := f.store.EventsAfter(ctx, f.lastSeen, 0, feedPageSize)
		if err != nil {
			return 0, err
		}
		var ready []*streamEvent
		waiting, reread := false, false
		for _, e := range events {
			if e.Seq != f.lastSeen+1 {
				verdict, err := f.gapSettled(ctx, e.Seq)
				if err != nil {
					return 0, err
				}
				if verdict != gapSkip {
					waiting, reread = verdict == gapWaiting, verdict == gapReread
					break
				}
			}
			ready = append(ready, newStreamEvent(e))
			f.lastSeen = e.Seq
			f.gap = gap{}
		}
		if len(ready) > 0 {
			// Nothing new (a notification whose rows an earlier read took,
			// a poll) must not walk every subscriber.
			f.hub.publish(ready, f.lastSeen)
		}
		switch {
		case reread:
			continue
		case waiting:
			next := f.gapWait / 10
			if until := time.Until(f.gap.since.Add(f.gapWait)); until > 0 {
				next = min(next, until+time.Millisecond)
			}
			return next, nil
		case len(events) < feedPageSize:
			return 0, nil
		}
	}
}

// gapVerdict is what the feed does at a missing sequence number.
type gapVerdict int

const (
	gapWaiting gapVerdict = iota // look again later
	gapReread                    // read the table again now, then decide
	gapSkip                      // take the ids for a rollback
)

// gapSettled decides about the sequence numbers after lastSeen and before
// next. Past gapWait it waits on while a transaction that was writing
// events then still runs, since it may hold them; once they have all
// ended, one more read of the table decides (one may have committed just
// after the last read). Past gapMaxWait, or if PostgreSQL cannot say, it
// skips them.
func (f *eventFeed) gapSettled(ctx context.Context, next int64) (gapVerdict, error) {
	if f.gap.since.IsZero() {
		f.gap.since = time.Now()
	}
	waited := time.Since(f.gap.since)
	switch {
	case waited < f.gapWait:
		return gapWaiting, nil // most gaps fill by now: a commit was a moment late
	case f.gap.ended:
		f.log.Debug("skipping sequence numbers that never committed", "from", f.lastSeen+1, "to", next-1)
		return gapSkip, nil
	}
	var writing bool
	var err error
	if !f.gap.checked {
		// A transaction holding the ids has held its write lock since it
		// wrote them, so if it still runs it is among these.
		f.gap.writers, err = f.store.EventWriters(ctx)
		f.gap.checked, writing = err == nil, len(f.gap.writers) > 0
	} else {
		writing, err = f.store.StillWriting(ctx, f.gap.writers)
	}
	switch {
	case err == nil && !writing:
		f.gap.ended = true
		return gapReread, nil
	case waited < f.gapMaxWait:
		return gapWaiting, err
	}
	attrs := []any{"from", f.lastSeen + 1, "to", next - 1, "waited", waited.Round(time.Millisecond)}
	if err != nil {
		attrs = append(attrs, "error", err)
	}
	f.log.Warn("skipping sequence numbers whose transactions did not end in time; should they commit, their events reach only clients that resume with since", attrs...)
	return gapSkip, nil
}

// streamEvent is an event ready to send. A live event is encoded once by the
// feed and the same bytes go to every subscriber; a replayed one is encoded
// for the subscriber that reads it.
type streamEvent struct {
	seq      int64
	severity string
	status   string
	wsFrame  []byte // a complete WebSocket text frame
	sse      []byte // a complete Server-Sent Events message
}

// streamMessage is a control message of the stream (hello).
type streamMessage struct {
	Type string `json:"type"`
	Seq  int64  `json:"seq"`
}

// eventView is an event as subscribers and the timeline see it. Clients
// must ignore types they do not know; more are added over time.
type eventView struct {
	Type      string          `json:"type"`
	Seq       int64           `json:"seq"`
	Actor     *actorView      `json:"actor"`
	CreatedAt time.Time       `json:"created_at"`
	Data      json.RawMessage `json:"data"` // the incident right after the event
	Note      *note           `json:"note,omitempty"`
}

// actorView is who caused an event; null in JSON for the system and
// anonymous reports. APIKey names the key the user acted through.
type actorView struct {
	User   string `json:"user"`
	APIKey string `json:"api_key,omitempty"`
}

func newEventView(e storedEvent) eventView {
	v := eventView{Type: e.Type, Seq: e.Seq, CreatedAt: e.CreatedAt, Data: e.Data, Note: e.Note}
	if e.Actor != nil {
		v.Actor = &actorView{User: *e.Actor}
		if e.ActorKey != nil {
			v.Actor.APIKey = *e.ActorKey
		}
	}
	return v
}

func newStreamEvent(e storedEvent) *streamEvent {
	var fields struct {
		Severity string `json:"severity"`
		Status   string `json:"status"`
	}
	_ = json.Unmarshal(e.Data, &fields)
	msg, _ := marshalJSON(newEventView(e))
	return &streamEvent{
		seq:      e.Seq,
		severity: fields.Severity,
		status:   fields.Status,
		wsFrame:  wsFrame(wsOpText, msg),
		sse:      sseMessage(strconv.FormatInt(e.Seq, 10), e.Type, msg),
	}
}

// sseMessage formats one Server-Sent Events message; id may be empty.
func sseMessage(id, event string, data []byte) []byte {
	b := make([]byte, 0, len(data)+len(id)+len(event)+24)
	if id != "" {
		b = append(b, "id: "+id+"\n"...)
	}
	b = append(b, "event: "+event+"\ndata: "...)
	b = append(b, data...)
	return append(b, "\n\n"...)
}
