package main

import (
	"context"
	"log/slog"
	"strconv"
	"sync/atomic"
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

// eventFeed moves committed events from incident_events into the hub's log,
// in sequence order, each exactly once. It is the only path live events
// take, on one replica or many: a notification (or a poll, or a listener
// reconnect) only says "read the table", and the table is the truth.
type eventFeed struct {
	store *store
	hub   *hub
	log   *slog.Logger
	dsn   string

	// gapPoll is how often the feed looks again while it waits for a
	// missing sequence number (a commit that ends the wait also notifies);
	// gapMaxWait bounds the wait, as a transaction left open must not stop
	// the stream.
	gapPoll, gapMaxWait time.Duration
	// pollInterval is the safety net for a lost notification.
	pollInterval time.Duration

	lastSeen int64 // every event up to here went to the log or was a gap
	gap      gap   // the wait at lastSeen+1; zero when not waiting
	// behindSince is when the feed last failed to catch up (a read that
	// failed, a gap it waits on), in Unix nanoseconds; 0 once it has read
	// everything. /metrics reports it as the feed's lag.
	behindSince atomic.Int64

	// accessChanged is called with a user id from accessChannel, and with 0
	// (everyone) after the listener reconnects, since it may have missed one.
	accessChanged func(userID int64)
}

// gap is a missing sequence number the feed waits for. Ids come from a
// sequence before commit, so a later id can commit first, and a rolled-back
// transaction leaves its id unused for good. A transaction has a
// transaction id before it takes an event's id (next_event_id in
// schema.sql), and ids are taken in order, so the holder of a missing id
// had started before the snapshot the feed takes on seeing a later one:
// once the oldest running transaction is past that snapshot's xmax, the
// holder has ended. A long transaction that writes (any, in the cluster)
// holds that back; gapMaxWait bounds the wait.
type gap struct {
	since  time.Time // when the feed first waited for it
	xmax   int64     // pg_snapshot_xmax when it was seen; 0 if unknown
	reread bool      // the holder has ended: one more read of the table decides
}

func newEventFeed(st *store, h *hub, logger *slog.Logger, dsn string) *eventFeed {
	return &eventFeed{store: st, hub: h, log: logger, dsn: dsn,
		gapPoll: 50 * time.Millisecond, gapMaxWait: 10 * time.Second, pollInterval: 2 * time.Second}
}

// start positions the feed at the newest event: live subscribers get what
// happens from now on, and history is read from the table on request.
func (f *eventFeed) start(ctx context.Context) error {
	seq, err := f.store.LatestEventSeq(ctx)
	if err != nil {
		return err
	}
	f.lastSeen = seq
	f.hub.log.begin(seq)
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
		f.noteLag(err == nil && waitFor == 0)
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

// noteLag records whether the last catch-up read everything.
func (f *eventFeed) noteLag(caughtUp bool) {
	switch {
	case caughtUp:
		f.behindSince.Store(0)
	case f.behindSince.Load() == 0:
		f.behindSince.Store(time.Now().UnixNano())
	}
}

// lag is how long the feed has been behind the table at now; 0 when its
// last read found nothing more.
func (f *eventFeed) lag(now time.Time) time.Duration {
	since := f.behindSince.Load()
	if since == 0 {
		return 0
	}
	return max(0, now.Sub(time.Unix(0, since)))
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

// catchUp reads every committed event after lastSeen and appends them to
// the log in order. It stops at a missing sequence number until it appears
// or gapSettled gives it up. It returns how soon to look again while
// waiting on a gap.
func (f *eventFeed) catchUp(ctx context.Context) (time.Duration, error) {
	for {
		events, more, err := f.store.EventsAfter(ctx, f.lastSeen, 0, feedPageSize)
		if err != nil {
			return 0, err
		}
		var ready []*streamEvent
		waiting := false
		for _, e := range events {
			if e.Seq != f.lastSeen+1 {
				skip, err := f.gapSettled(ctx, e.Seq)
				if err != nil {
					return 0, err
				}
				if !skip {
					waiting = true
					break
				}
			}
			ready = append(ready, newStreamEvent(e))
			f.lastSeen = e.Seq
			f.gap = gap{}
		}
		if len(ready) > 0 {
			f.hub.log.append(ready, f.lastSeen)
		}
		switch {
		case waiting && f.gap.reread:
			continue // the holder has ended: read once more, then skip
		case waiting:
			return f.gapPoll, nil
		case !more:
			return 0, nil
		}
	}
}

// gapSettled decides whether to skip the sequence numbers after lastSeen
// and before next: once every transaction that could hold them has ended
// and one more read did not find them, or after gapMaxWait, or when
// PostgreSQL cannot say.
func (f *eventFeed) gapSettled(ctx context.Context, next int64) (skip bool, err error) {
	switch {
	case f.gap.since.IsZero():
		f.gap.since = time.Now()
		// Unknown (0) if PostgreSQL cannot say: then only gapMaxWait ends it.
		_, f.gap.xmax, _ = f.store.Snapshot(ctx)
		return false, nil // most gaps fill at once: a commit was a moment late
	case f.gap.reread:
		f.log.Debug("skipping sequence numbers that never committed", "from", f.lastSeen+1, "to", next-1)
		return true, nil
	}
	waited := time.Since(f.gap.since)
	if f.gap.xmax > 0 && waited < f.gapMaxWait {
		xmin, _, err := f.store.Snapshot(ctx)
		if err == nil && xmin >= f.gap.xmax {
			f.gap.reread = true
		}
		return false, nil
	}
	if waited < f.gapMaxWait {
		return false, nil
	}
	f.log.Warn("skipping sequence numbers whose transactions did not end in time; should they commit, their events reach only clients that resume with since",
		"from", f.lastSeen+1, "to", next-1, "waited", waited.Round(time.Millisecond))
	return true, nil
}
