package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// heartbeat is a dead man's switch: a job pings it at least every
// Interval; a ping overdue by Grace more opens an incident.
type heartbeat struct {
	ID         int64             `json:"id"`
	Name       string            `json:"name"`
	Interval   int64             `json:"interval"` // seconds
	Grace      int64             `json:"grace"`    // seconds
	Severity   string            `json:"severity"`
	Labels     map[string]string `json:"labels"`
	State      string            `json:"state"` // new, up, down or paused
	LastPingAt *time.Time        `json:"last_ping_at"`
	Deadline   *time.Time        `json:"next_deadline"` // when it goes down without a ping; null unless up
	CreatedAt  time.Time         `json:"created_at"`
	UpdatedAt  time.Time         `json:"updated_at"`
}

// heartbeatScope is the dedup scope of heartbeats' incidents, which no
// integration (ids from 1) and no REST report (0) shares.
const heartbeatScope = -1

const heartbeatColumns = `id, name, interval_s, grace_s, severity, labels, state, last_ping_at, deadline, created_at, updated_at`

func scanHeartbeat(row interface{ Scan(...any) error }) (heartbeat, error) {
	var (
		hb             heartbeat
		labels         []byte
		ping, deadline sql.NullTime
	)
	err := row.Scan(&hb.ID, &hb.Name, &hb.Interval, &hb.Grace, &hb.Severity, &labels, &hb.State, &ping, &deadline, &hb.CreatedAt, &hb.UpdatedAt)
	if err != nil {
		return hb, err
	}
	hb.LastPingAt, hb.Deadline = utcOrNil(ping), utcOrNil(deadline)
	hb.CreatedAt, hb.UpdatedAt = hb.CreatedAt.UTC(), hb.UpdatedAt.UTC()
	return hb, json.Unmarshal(labels, &hb.Labels)
}

// CreateHeartbeat stores hb, in state new, with the hash of its ping token.
func (st *store) CreateHeartbeat(ctx context.Context, hb heartbeat, hash []byte, e auditEntry, now time.Time) (heartbeat, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	labels, err := marshalJSON(hb.Labels)
	if err != nil {
		return heartbeat{}, err
	}
	var created heartbeat
	err = st.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		created, err = scanHeartbeat(tx.QueryRowContext(ctx, `INSERT INTO heartbeats
			(name, interval_s, grace_s, severity, labels, token_hash, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
			RETURNING `+heartbeatColumns, hb.Name, hb.Interval, hb.Grace, hb.Severity, labels, hash, now))
		if err != nil {
			return err
		}
		e.Target, e.Details = fmt.Sprintf("heartbeat:%d", created.ID), map[string]any{"name": created.Name}
		return insertAudit(ctx, tx, e, now)
	})
	return created, err
}

// Heartbeats lists every heartbeat, oldest first.
func (st *store) Heartbeats(ctx context.Context) ([]heartbeat, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	rows, err := st.db.QueryContext(ctx, `SELECT `+heartbeatColumns+` FROM heartbeats ORDER BY id`)
	return scanAll(st, rows, err, func(rows *sql.Rows) (heartbeat, error) { return scanHeartbeat(rows) })
}

// Heartbeat reads one heartbeat.
func (st *store) Heartbeat(ctx context.Context, id int64) (heartbeat, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	hb, err := scanHeartbeat(st.db.QueryRowContext(ctx, `SELECT `+heartbeatColumns+` FROM heartbeats WHERE id = $1::bigint`, id))
	return hb, st.mapErr(err)
}

// UpdateHeartbeat applies change to heartbeat id and stores its settings,
// with the row locked from read to write so that concurrent changes all
// count. Pausing clears the deadline; unpausing starts a fresh period from
// now (or waits for the first ping).
func (st *store) UpdateHeartbeat(ctx context.Context, id int64, change func(*heartbeat) (paused *bool, err error), e auditEntry, now time.Time) (heartbeat, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	var updated heartbeat
	err := st.inTx(ctx, func(tx *sql.Tx) error {
		hb, err := scanHeartbeat(tx.QueryRowContext(ctx, `SELECT `+heartbeatColumns+` FROM heartbeats WHERE id = $1::bigint FOR UPDATE`, id))
		if err != nil {
			return err
		}
		paused, err := change(&hb)
		if err != nil {
			return err
		}
		labels, err := marshalJSON(hb.Labels)
		if err != nil {
			return err
		}
		updated, err = scanHeartbeat(tx.QueryRowContext(ctx, `UPDATE heartbeats SET
			name = $2, interval_s = $3, grace_s = $4, severity = $5, labels = $6, updated_at = $7,
			state = CASE WHEN $8::boolean THEN 'paused'
				WHEN NOT $8::boolean AND state = 'paused' THEN CASE WHEN last_ping_at IS NULL THEN 'new' ELSE 'up' END
				ELSE state END,
			deadline = CASE WHEN $8::boolean THEN NULL
				WHEN NOT $8::boolean AND state = 'paused' AND last_ping_at IS NOT NULL THEN $7::timestamptz + make_interval(secs => $3::bigint + $4::bigint)
				WHEN state = 'up' AND (interval_s <> $3 OR grace_s <> $4)
					THEN coalesce(last_ping_at, $7::timestamptz) + make_interval(secs => $3::bigint + $4::bigint)
				ELSE deadline END
			WHERE id = $1::bigint RETURNING `+heartbeatColumns,
			hb.ID, hb.Name, hb.Interval, hb.Grace, hb.Severity, labels, now, paused))
		if err != nil {
			return err
		}
		e.Target = fmt.Sprintf("heartbeat:%d", hb.ID)
		return insertAudit(ctx, tx, e, now)
	})
	return updated, err
}

// HeartbeatSignal records a signal of the heartbeat whose token hashes to hash:
// "ping" (up: a fresh deadline, and the incident resolved if it was down),
// "start" (the job has grace to finish) or "fail" (down now). A paused
// heartbeat only records the time. errNotFound for an unknown token.
func (st *store) HeartbeatSignal(ctx context.Context, hash []byte, signal string, reopenWindow time.Duration, now time.Time) (heartbeat, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	var hb heartbeat
	err := st.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		if hb, err = scanHeartbeat(tx.QueryRowContext(ctx, `SELECT `+heartbeatColumns+` FROM heartbeats WHERE token_hash = $1 FOR UPDATE`, hash)); err != nil {
			return err
		}
		was := hb.State
		next := map[string]string{"ping": "up", "start": "up", "fail": "down"}[signal]
		if was == "paused" || (signal == "start" && was == "down") {
			next = was
		}
		deadline := "NULL"
		switch {
		case next == "up" && signal == "ping":
			deadline = "$2::timestamptz + make_interval(secs => interval_s + grace_s)"
		case next == "up":
			deadline = "$2::timestamptz + make_interval(secs => grace_s)"
		}
		hb, err = scanHeartbeat(tx.QueryRowContext(ctx, `UPDATE heartbeats SET state = $3, updated_at = $2, deadline = `+deadline+`,
			last_ping_at = CASE WHEN $4 THEN $2 ELSE last_ping_at END
			WHERE id = $1 RETURNING `+heartbeatColumns, hb.ID, now, next, signal == "ping"))
		switch {
		case err != nil:
			return err
		case next == "down" && signal == "fail":
			return st.heartbeatDown(ctx, tx, hb, was != "down", "fail", reopenWindow, now)
		case next == "up" && signal == "ping":
			// Whatever it was before (down, or paused and unpaused while
			// down), a ping resolves its incident if one is open.
			_, err = st.transitionByKey(ctx, tx, heartbeatScope, hb.key(), actions["resolve"], actorRef{}, now)
			if errors.Is(err, sql.ErrNoRows) {
				err = nil
			}
			if err != nil || was != "down" {
				return err
			}
			// heartbeat_up goes on its latest incident, resolved now or
			// by hand before; none if that was deleted.
			inc, err := scanIncident(tx.QueryRowContext(ctx, incidentSelect("incidents")+`
				WHERE i.dedup_scope = $1 AND i.dedup_key = $2 ORDER BY i.id DESC LIMIT 1`, heartbeatScope, hb.key()))
			if errors.Is(err, sql.ErrNoRows) {
				return nil
			}
			if err != nil {
				return err
			}
			return st.appendEvent(ctx, tx, "heartbeat_up", inc, actorRef{}, eventDetail{heartbeat: &hb}, now)
		}
		return nil
	})
	return hb, err
}

// OverdueHeartbeats marks down the heartbeats whose deadline has passed
// and opens their incidents, a hundred at a time. On several replicas at
// once, each heartbeat goes down on one of them: the others skip the rows
// it holds, and find them down once it commits.
func (st *store) OverdueHeartbeats(ctx context.Context, reopenWindow time.Duration, now time.Time) ([]heartbeat, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	var down []heartbeat
	err := st.inTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `UPDATE heartbeats SET state = 'down', deadline = NULL, updated_at = $1
			WHERE id IN (SELECT id FROM heartbeats WHERE state = 'up' AND deadline <= $1
				ORDER BY deadline LIMIT 100 FOR UPDATE SKIP LOCKED)
			RETURNING `+heartbeatColumns, now)
		if down, err = scanAll(st, rows, err, func(rows *sql.Rows) (heartbeat, error) { return scanHeartbeat(rows) }); err != nil {
			return err
		}
		for _, hb := range down {
			if err := st.heartbeatDown(ctx, tx, hb, true, "overdue", reopenWindow, now); err != nil {
				return err
			}
		}
		return nil
	})
	return down, err
}

// heartbeatDown reports hb's incident, overdue or because its job said it
// failed, and when hb has just gone down (wentDown), records heartbeat_down
// on the incident.
func (st *store) heartbeatDown(ctx context.Context, tx *sql.Tx, hb heartbeat, wentDown bool, why string, reopenWindow time.Duration, now time.Time) error {
	inc, _, err := st.report(ctx, tx, hb.incident(why, now), reopenWindow, now)
	if err != nil || !wentDown {
		return err
	}
	return st.appendEvent(ctx, tx, "heartbeat_down", inc, actorRef{}, eventDetail{heartbeat: &hb}, now)
}

// key is the dedup key of the heartbeat's incidents.
func (hb heartbeat) key() string { return "heartbeat:" + strconv.FormatInt(hb.ID, 10) }

// incident is the report a heartbeat makes when it goes down, overdue or
// because its job said it failed.
func (hb heartbeat) incident(why string, now time.Time) newIncident {
	labels := map[string]string{}
	for k, v := range hb.Labels {
		labels[k] = v
	}
	labels["heartbeat"] = fitText(hb.Name, maxLabelValueLen)
	in := newIncident{Severity: hb.Severity, DedupKey: hb.key(), Labels: labels, Source: "heartbeat", Scope: heartbeatScope}
	last := "never"
	if hb.LastPingAt != nil {
		last = hb.LastPingAt.Format(time.RFC3339)
	}
	period := fmt.Sprintf("expected every %s, with %s of grace", time.Duration(hb.Interval)*time.Second, time.Duration(hb.Grace)*time.Second)
	if why == "fail" {
		in.Title = fitText(hb.Name+" reported a failure", maxTitleLen)
		in.Description = fmt.Sprintf("The job behind heartbeat %q reported a failure at %s. Last ping: %s (%s).", hb.Name, now.UTC().Format(time.RFC3339), last, period)
	} else {
		in.Title = fitText(hb.Name+" missed its heartbeat", maxTitleLen)
		in.Description = fmt.Sprintf("No ping from heartbeat %q since %s (%s).", hb.Name, last, period)
	}
	return in
}
