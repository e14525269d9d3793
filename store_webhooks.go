package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"
)

// webhook is an endpoint the server sends incident events to. Its secret
// is stored, since signing needs it, and shown only when it is made.
type webhook struct {
	ID             int64             `json:"id"`
	Name           string            `json:"name"`
	URL            string            `json:"url"`
	Format         string            `json:"format"`
	EventTypes     []string          `json:"event_types"`
	MinSeverity    string            `json:"min_severity"`
	Labels         map[string]string `json:"labels"`
	Enabled        bool              `json:"enabled"`
	DisabledReason string            `json:"disabled_reason"` // why the server disabled it; empty otherwise
	// FailingSince is when the event it is held up on was queued, while
	// that event's attempts fail; null when nothing is failing.
	FailingSince *time.Time `json:"failing_since"`
	CreatedAt    time.Time  `json:"created_at"`
	UpdatedAt    time.Time  `json:"updated_at"`

	secret         string
	previousSecret string // signs too until previousUntil
	previousUntil  time.Time
}

// secrets are the secrets that sign a message at now: the current one,
// and the previous one during the day after a rotation.
func (wh webhook) secrets(now time.Time) []string {
	if wh.previousSecret != "" && now.Before(wh.previousUntil) {
		return []string{wh.secret, wh.previousSecret}
	}
	return []string{wh.secret}
}

const webhookColumns = `id, name, url, format, event_types, min_severity, labels, enabled, disabled_reason,
	created_at, updated_at, secret, coalesce(previous_secret, ''), coalesce(previous_until, 'epoch'::timestamptz),
	(SELECT min(d.created_at) FROM webhook_deliveries d WHERE d.webhook_id = webhooks.id AND d.status = 'pending' AND d.error <> '')`

func scanWebhook(row interface{ Scan(...any) error }) (webhook, error) {
	var (
		wh            webhook
		types, labels []byte
		failing       sql.NullTime
	)
	err := row.Scan(&wh.ID, &wh.Name, &wh.URL, &wh.Format, &types, &wh.MinSeverity, &labels, &wh.Enabled, &wh.DisabledReason,
		&wh.CreatedAt, &wh.UpdatedAt, &wh.secret, &wh.previousSecret, &wh.previousUntil, &failing)
	if err != nil {
		return wh, err
	}
	wh.FailingSince = utcOrNil(failing)
	wh.CreatedAt, wh.UpdatedAt = wh.CreatedAt.UTC(), wh.UpdatedAt.UTC()
	if err := json.Unmarshal(types, &wh.EventTypes); err != nil {
		return wh, err
	}
	return wh, json.Unmarshal(labels, &wh.Labels)
}

// CreateWebhook stores wh; its cursor starts at the newest event, so it is
// sent what happens from now on. errConflict when the name is taken.
func (st *store) CreateWebhook(ctx context.Context, wh webhook, e auditEntry, now time.Time) (webhook, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	types, err := marshalJSON(wh.EventTypes)
	if err != nil {
		return webhook{}, err
	}
	labels, err := marshalJSON(wh.Labels)
	if err != nil {
		return webhook{}, err
	}
	var created webhook
	err = st.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		created, err = scanWebhook(tx.QueryRowContext(ctx, `INSERT INTO webhooks
			(name, url, format, event_types, min_severity, labels, enabled, secret, cursor_seq, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, (SELECT coalesce(max(id), 0) FROM incident_events), $9, $9)
			RETURNING `+webhookColumns, wh.Name, wh.URL, wh.Format, types, wh.MinSeverity, labels, wh.Enabled, wh.secret, now))
		if err != nil {
			return err
		}
		e.Target, e.Details = fmt.Sprintf("webhook:%d", created.ID), map[string]any{"name": created.Name, "url": created.URL}
		return insertAudit(ctx, tx, e, now)
	})
	return created, err
}

// RotateWebhookSecret makes secret webhook id's secret, the current one
// signing too for secretOverlap. It changes nothing else, so it cannot
// undo a change made meanwhile.
func (st *store) RotateWebhookSecret(ctx context.Context, id int64, secret string, e auditEntry, now time.Time) (webhook, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	var updated webhook
	err := st.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		updated, err = scanWebhook(tx.QueryRowContext(ctx, `UPDATE webhooks SET
			previous_secret = secret, previous_until = $2::timestamptz + make_interval(secs => $4), secret = $3, updated_at = $2
			WHERE id = $1::bigint RETURNING `+webhookColumns, id, now, secret, secretOverlap.Seconds()))
		if err != nil {
			return err
		}
		e.Target = fmt.Sprintf("webhook:%d", id)
		return insertAudit(ctx, tx, e, now)
	})
	return updated, err
}

// Webhooks lists every webhook, oldest first.
func (st *store) Webhooks(ctx context.Context) ([]webhook, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	rows, err := st.db.QueryContext(ctx, `SELECT `+webhookColumns+` FROM webhooks ORDER BY id`)
	return scanAll(st, rows, err, func(rows *sql.Rows) (webhook, error) { return scanWebhook(rows) })
}

// Webhook reads one webhook.
func (st *store) Webhook(ctx context.Context, id int64) (webhook, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	wh, err := scanWebhook(st.db.QueryRowContext(ctx, `SELECT `+webhookColumns+` FROM webhooks WHERE id = $1::bigint`, id))
	return wh, st.mapErr(err)
}

// UpdateWebhook applies change to webhook id and stores its settings, with
// the row locked from read to write so that concurrent changes all count.
func (st *store) UpdateWebhook(ctx context.Context, id int64, change func(*webhook) error, e auditEntry, now time.Time) (webhook, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	var updated webhook
	err := st.inTx(ctx, func(tx *sql.Tx) error {
		wh, err := scanWebhook(tx.QueryRowContext(ctx, `SELECT `+webhookColumns+` FROM webhooks WHERE id = $1::bigint FOR UPDATE`, id))
		if err != nil {
			return err
		}
		if err := change(&wh); err != nil {
			return err
		}
		types, err := marshalJSON(wh.EventTypes)
		if err != nil {
			return err
		}
		labels, err := marshalJSON(wh.Labels)
		if err != nil {
			return err
		}
		updated, err = scanWebhook(tx.QueryRowContext(ctx, `UPDATE webhooks SET
			name = $2, url = $3, format = $4, event_types = $5, min_severity = $6, labels = $7, enabled = $8,
			disabled_reason = $9, updated_at = $10
			WHERE id = $1::bigint RETURNING `+webhookColumns, wh.ID, wh.Name, wh.URL, wh.Format, types, wh.MinSeverity, labels,
			wh.Enabled, wh.DisabledReason, now))
		if err != nil {
			return err
		}
		e.Target = fmt.Sprintf("webhook:%d", wh.ID)
		return insertAudit(ctx, tx, e, now)
	})
	return updated, err
}
