package main

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/lib/pq"
)

// delivery is one event queued for one webhook, as a replica claims it to
// send an attempt.
type delivery struct {
	ID        int64
	WebhookID int64
	EventSeq  int64
	Body      []byte
	Attempts  int // counting the one being sent
	webhook   webhook
}

// msgID is the delivery's webhook-id: one per event per endpoint, the same
// on every attempt, so a receiver that dedupes on it sees each event once.
func (d delivery) msgID() string { return fmt.Sprintf("msg_%d_%d", d.WebhookID, d.EventSeq) }

// QueueWebhookEvents moves the cursor of every enabled webhook that is
// behind upTo forward, queueing a delivery for each event it wants, a page
// at a time. upTo must be a position the stream's feed has reached, below
// which every event has committed (or never will): ids are taken before
// commit, so reading to the table's end could pass an id whose transaction
// is still open and skip its event for good. bodies builds what an event
// sends to each of the webhooks it is handed; nil leaves one out.
// Webhooks another replica is queueing are skipped.
func (st *store) QueueWebhookEvents(ctx context.Context, upTo int64, now time.Time, bodies func(storedEvent, []webhook) [][]byte) error {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	return st.inTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT `+webhookColumns+`, cursor_seq FROM webhooks
			WHERE enabled AND cursor_seq < $1 ORDER BY id FOR UPDATE SKIP LOCKED`, upTo)
		type behind struct {
			wh     webhook
			cursor int64
		}
		list, err := scanAll(st, rows, err, func(rows *sql.Rows) (behind, error) {
			var b behind
			var err error
			b.wh, err = scanWebhook(scanExtra{rows, &b.cursor})
			return b, err
		})
		if err != nil {
			return err
		}
		if len(list) == 0 {
			return nil
		}
		// One read serves every endpoint: from the oldest cursor, a page
		// bounded by count and bytes as for the stream.
		from := list[0].cursor
		for _, b := range list {
			from = min(from, b.cursor)
		}
		events, more, err := st.EventsAfter(ctx, from, upTo, feedPageSize)
		if err != nil {
			return err
		}
		read := upTo // every event up to here was read, or never committed
		if more {
			read = events[len(events)-1].Seq
		}
		// Event by event, each handed once with the webhooks whose cursor
		// it is past.
		for _, e := range events {
			if e.Seq > read {
				break
			}
			var hooks []webhook
			for _, b := range list {
				if e.Seq > b.cursor {
					hooks = append(hooks, b.wh)
				}
			}
			for i, msg := range bodies(e, hooks) {
				if msg == nil {
					continue
				}
				if _, err := tx.ExecContext(ctx, `INSERT INTO webhook_deliveries
					(webhook_id, event_seq, event_type, body, next_attempt_at, created_at, updated_at)
					VALUES ($1, $2, $3, $4, $5, $5, $5) ON CONFLICT (webhook_id, event_seq) DO NOTHING`,
					hooks[i].ID, e.Seq, e.Type, string(msg), now); err != nil {
					return err
				}
			}
		}
		for _, b := range list {
			if b.cursor >= read {
				continue
			}
			if _, err := tx.ExecContext(ctx, `UPDATE webhooks SET cursor_seq = $2 WHERE id = $1`, b.wh.ID, read); err != nil {
				return err
			}
		}
		return nil
	})
}

// scanExtra scans a webhook row followed by more columns.
type scanExtra struct {
	rows  *sql.Rows
	extra any
}

func (s scanExtra) Scan(dst ...any) error { return s.rows.Scan(append(dst, s.extra)...) }

// ClaimDeliveries leases at most limit due deliveries, each the first
// pending one of its enabled webhook, so that an endpoint has at most one
// attempt in flight and gets its events in order. The lease is committed
// before anything is sent: no transaction stays open during a request, and
// a replica that dies mid-send leaves a lease that expires, after which the
// attempt is made again.
func (st *store) ClaimDeliveries(ctx context.Context, limit int, lease time.Duration, now time.Time) ([]delivery, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	var claimed []delivery
	err := st.inTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `UPDATE webhook_deliveries d SET attempts = d.attempts + 1,
				lease_until = $1::timestamptz + make_interval(secs => $3), updated_at = $1
			WHERE d.id IN (
				SELECT p.id FROM webhook_deliveries p JOIN webhooks w ON w.id = p.webhook_id
				WHERE w.enabled AND p.status = 'pending' AND p.next_attempt_at <= $1
					AND (p.lease_until IS NULL OR p.lease_until <= $1)
					AND p.event_seq = (SELECT min(q.event_seq) FROM webhook_deliveries q
						WHERE q.webhook_id = p.webhook_id AND q.status = 'pending')
				ORDER BY p.next_attempt_at LIMIT $2 FOR UPDATE OF p SKIP LOCKED)
			RETURNING d.id, d.webhook_id, d.event_seq, d.body, d.attempts`, now, limit, lease.Seconds())
		claimed, err = scanAll(st, rows, err, func(rows *sql.Rows) (delivery, error) {
			var d delivery
			var body string
			err := rows.Scan(&d.ID, &d.WebhookID, &d.EventSeq, &body, &d.Attempts)
			d.Body = []byte(body)
			return d, err
		})
		if err != nil {
			return err
		}
		// The claimed deliveries' webhooks, in one read.
		ids := make([]int64, len(claimed))
		for i, d := range claimed {
			ids[i] = d.WebhookID
		}
		rows, err = tx.QueryContext(ctx, `SELECT `+webhookColumns+` FROM webhooks WHERE id = ANY($1)`, pq.Array(ids))
		hooks, err := scanAll(st, rows, err, func(rows *sql.Rows) (webhook, error) { return scanWebhook(rows) })
		if err != nil {
			return err
		}
		for i := range claimed {
			for _, wh := range hooks {
				if wh.ID == claimed[i].WebhookID {
					claimed[i].webhook = wh
				}
			}
		}
		return nil
	})
	return claimed, err
}

// deliveryOutcome is what an attempt comes to.
type deliveryOutcome struct {
	status  string    // pending (to retry), succeeded or failed
	code    int       // the receiver's status; 0 without an answer
	err     string    // why the attempt failed
	next    time.Time // the next attempt, when pending
	disable string    // when not empty, the webhook is disabled for this reason
}

// RecordDelivery records the outcome of attempt d.Attempts of delivery d.
// An attempt whose lease expired, and that another replica made again
// since, records nothing. Disabling the webhook is audited.
func (st *store) RecordDelivery(ctx context.Context, d delivery, out deliveryOutcome, now time.Time) error {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	return st.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE webhook_deliveries SET status = $3, response_code = nullif($4, 0), error = $5,
				next_attempt_at = CASE WHEN $3 = 'pending' THEN $6 ELSE next_attempt_at END, lease_until = NULL, updated_at = $7
			WHERE id = $1 AND attempts = $2 AND status = 'pending'`, d.ID, d.Attempts, out.status, out.code, out.err, out.next, now)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 || out.disable == "" {
			return err
		}
		res, err = tx.ExecContext(ctx, `UPDATE webhooks SET enabled = false, disabled_reason = $2, updated_at = $3
			WHERE id = $1 AND enabled`, d.WebhookID, out.disable, now)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return err
		}
		return insertAudit(ctx, tx, auditEntry{Action: "webhook.disabled", Target: fmt.Sprintf("webhook:%d", d.WebhookID),
			Details: map[string]any{"reason": out.disable, "event_seq": d.EventSeq, "attempts": d.Attempts}}, now)
	})
}

// deliveryView is a delivery as the deliveries log shows it.
type deliveryView struct {
	ID            int64      `json:"id"`
	EventSeq      int64      `json:"event_seq"`
	Type          string     `json:"type"`
	MessageID     string     `json:"webhook_id"` // the webhook-id header: the same on every attempt
	Status        string     `json:"status"`     // pending, succeeded or failed
	Attempts      int        `json:"attempts"`
	ResponseCode  *int       `json:"response_code"` // the receiver's last status; null when none answered
	Error         string     `json:"error"`         // why the last attempt failed; empty if it did not
	NextAttemptAt *time.Time `json:"next_attempt_at"`
	CreatedAt     time.Time  `json:"created_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
}

const deliveryColumns = `id, webhook_id, event_seq, event_type, status, attempts, response_code, error, next_attempt_at, created_at, updated_at`

func scanDelivery(row interface{ Scan(...any) error }) (deliveryView, error) {
	var (
		d         deliveryView
		webhookID int64
		eventType string
		code      sql.NullInt64
		next      time.Time
	)
	err := row.Scan(&d.ID, &webhookID, &d.EventSeq, &eventType, &d.Status, &d.Attempts, &code, &d.Error, &next, &d.CreatedAt, &d.UpdatedAt)
	d.Type = webhookEventTypes[eventType]
	d.MessageID = delivery{WebhookID: webhookID, EventSeq: d.EventSeq}.msgID()
	if code.Valid {
		n := int(code.Int64)
		d.ResponseCode = &n
	}
	if d.Status == "pending" {
		next = next.UTC()
		d.NextAttemptAt = &next
	}
	d.CreatedAt, d.UpdatedAt = d.CreatedAt.UTC(), d.UpdatedAt.UTC()
	return d, err
}

// Deliveries hands webhook id's deliveries with an id below before (0: no
// bound) to add, newest first, limit+1 at most; errNotFound when there is
// no such webhook.
func (st *store) Deliveries(ctx context.Context, webhookID, before int64, limit int, add func(deliveryView) (bool, error)) error {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	var exists bool
	if err := st.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM webhooks WHERE id = $1::bigint)`, webhookID).Scan(&exists); err != nil {
		return st.mapErr(err)
	}
	if !exists {
		return errNotFound
	}
	rows, err := st.db.QueryContext(ctx, `SELECT `+deliveryColumns+` FROM webhook_deliveries
		WHERE webhook_id = $1::bigint AND ($2::bigint = 0 OR id < $2::bigint) ORDER BY id DESC LIMIT $3`, webhookID, before, limit+1)
	return scanEach(st, rows, err, func(rows *sql.Rows) (deliveryView, error) { return scanDelivery(rows) }, add)
}

// RetryDelivery makes delivery id of webhook webhookID due now, with a
// fresh series of attempts, whatever its status. errNotFound when there is
// no such delivery; errConflict while an attempt of it is in flight.
func (st *store) RetryDelivery(ctx context.Context, webhookID, id int64, e auditEntry, now time.Time) (deliveryView, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	var d deliveryView
	err := st.inTx(ctx, func(tx *sql.Tx) error {
		var leased bool
		err := tx.QueryRowContext(ctx, `SELECT coalesce(lease_until > $3, false) FROM webhook_deliveries
			WHERE id = $1::bigint AND webhook_id = $2::bigint FOR UPDATE`, id, webhookID, now).Scan(&leased)
		if err != nil {
			return err
		}
		if leased {
			return errConflict
		}
		if d, err = scanDelivery(tx.QueryRowContext(ctx, `UPDATE webhook_deliveries SET status = 'pending', attempts = 0,
			next_attempt_at = $2, lease_until = NULL, error = '', updated_at = $2
			WHERE id = $1 RETURNING `+deliveryColumns, id, now)); err != nil {
			return err
		}
		e.Target, e.Details = fmt.Sprintf("webhook:%d", webhookID), map[string]any{"delivery": id, "event_seq": d.EventSeq}
		return insertAudit(ctx, tx, e, now)
	})
	return d, st.mapErr(err)
}
