package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"
)

// integration is a monitoring tool that reports through a hook of its own
// format. Its key is never stored, only a SHA-256 of it; its HMAC secret
// (Grafana) is stored, since checking a signature needs it, and never
// shown.
type integration struct {
	ID              int64             `json:"id"`
	Name            string            `json:"name"`
	Type            string            `json:"type"`
	DefaultSeverity string            `json:"default_severity"`
	Labels          map[string]string `json:"labels"`
	GroupBy         string            `json:"group_by"`
	HMACSecret      string            `json:"-"`
	HasHMACSecret   bool              `json:"hmac_secret_set"`
	TimestampHeader string            `json:"timestamp_header"`
	Enabled         bool              `json:"enabled"`
	CreatedAt       time.Time         `json:"created_at"`
	UpdatedAt       time.Time         `json:"updated_at"`
}

const integrationColumns = `id, name, type, default_severity, labels, group_by, coalesce(hmac_secret, ''),
	coalesce(timestamp_header, ''), enabled, created_at, updated_at`

func scanIntegration(row interface{ Scan(...any) error }) (integration, error) {
	var (
		ig     integration
		labels []byte
	)
	err := row.Scan(&ig.ID, &ig.Name, &ig.Type, &ig.DefaultSeverity, &labels, &ig.GroupBy, &ig.HMACSecret,
		&ig.TimestampHeader, &ig.Enabled, &ig.CreatedAt, &ig.UpdatedAt)
	if err != nil {
		return ig, err
	}
	ig.CreatedAt, ig.UpdatedAt = ig.CreatedAt.UTC(), ig.UpdatedAt.UTC()
	ig.HasHMACSecret = ig.HMACSecret != ""
	return ig, json.Unmarshal(labels, &ig.Labels)
}

// CreateIntegration stores ig with the hash of its key; errConflict when
// the name is taken.
func (st *store) CreateIntegration(ctx context.Context, ig integration, hash []byte, e auditEntry, now time.Time) (integration, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	labels, err := marshalJSON(ig.Labels)
	if err != nil {
		return integration{}, err
	}
	var created integration
	err = st.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		created, err = scanIntegration(tx.QueryRowContext(ctx, `INSERT INTO integrations
			(name, type, default_severity, labels, group_by, hmac_secret, timestamp_header, key_hash, enabled, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, nullif($6, ''), nullif($7, ''), $8, $9, $10, $10)
			RETURNING `+integrationColumns, ig.Name, ig.Type, ig.DefaultSeverity, labels, ig.GroupBy, ig.HMACSecret,
			ig.TimestampHeader, hash, ig.Enabled, now))
		if err != nil {
			return err
		}
		e.Target, e.Details = fmt.Sprintf("integration:%d", created.ID), map[string]any{"name": created.Name, "type": created.Type}
		return insertAudit(ctx, tx, e, now)
	})
	return created, err
}

// Integrations lists every integration, oldest first.
func (st *store) Integrations(ctx context.Context) ([]integration, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	rows, err := st.db.QueryContext(ctx, `SELECT `+integrationColumns+` FROM integrations ORDER BY id`)
	return scanAll(st, rows, err, func(rows *sql.Rows) (integration, error) { return scanIntegration(rows) })
}

// Integration reads one integration.
func (st *store) Integration(ctx context.Context, id int64) (integration, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	ig, err := scanIntegration(st.db.QueryRowContext(ctx, `SELECT `+integrationColumns+` FROM integrations WHERE id = $1::bigint`, id))
	return ig, st.mapErr(err)
}

// RotateIntegrationKey replaces integration id's key hash, and nothing
// else, so that it cannot undo a change made meanwhile.
func (st *store) RotateIntegrationKey(ctx context.Context, id int64, hash []byte, e auditEntry, now time.Time) (integration, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	var updated integration
	err := st.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		updated, err = scanIntegration(tx.QueryRowContext(ctx, `UPDATE integrations SET key_hash = $2, updated_at = $3
			WHERE id = $1::bigint RETURNING `+integrationColumns, id, hash, now))
		if err != nil {
			return err
		}
		e.Target = fmt.Sprintf("integration:%d", id)
		return insertAudit(ctx, tx, e, now)
	})
	return updated, err
}

// IntegrationByKey finds the integration whose key hashes to hash.
func (st *store) IntegrationByKey(ctx context.Context, hash []byte) (integration, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	ig, err := scanIntegration(st.db.QueryRowContext(ctx, `SELECT `+integrationColumns+` FROM integrations WHERE key_hash = $1`, hash))
	return ig, st.mapErr(err)
}

// UpdateIntegration applies change to integration id and stores its
// settings, auditing the change, with the row locked from read to write so
// that concurrent changes all count.
func (st *store) UpdateIntegration(ctx context.Context, id int64, change func(*integration) error, e auditEntry, now time.Time) (integration, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	var updated integration
	err := st.inTx(ctx, func(tx *sql.Tx) error {
		ig, err := scanIntegration(tx.QueryRowContext(ctx, `SELECT `+integrationColumns+` FROM integrations WHERE id = $1::bigint FOR UPDATE`, id))
		if err != nil {
			return err
		}
		if err := change(&ig); err != nil {
			return err
		}
		labels, err := marshalJSON(ig.Labels)
		if err != nil {
			return err
		}
		updated, err = scanIntegration(tx.QueryRowContext(ctx, `UPDATE integrations SET
			name = $2, default_severity = $3, labels = $4, group_by = $5, hmac_secret = nullif($6, ''),
			timestamp_header = nullif($7, ''), enabled = $8, updated_at = $9
			WHERE id = $1::bigint RETURNING `+integrationColumns, ig.ID, ig.Name, ig.DefaultSeverity, labels, ig.GroupBy,
			ig.HMACSecret, ig.TimestampHeader, ig.Enabled, now))
		if err != nil {
			return err
		}
		e.Target = fmt.Sprintf("integration:%d", ig.ID)
		return insertAudit(ctx, tx, e, now)
	})
	return updated, err
}

// TransitionByKey applies a to the unresolved incident with dedup key key
// in scope: how a sender that only knows its own key acknowledges or
// resolves. errNotFound when there is none; *transitionError when its
// status does not allow a.
func (st *store) TransitionByKey(ctx context.Context, scope int64, key string, a action, by actorRef, now time.Time) (incident, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	var inc incident
	err := st.inTx(ctx, func(tx *sql.Tx) (err error) {
		inc, err = st.transitionByKey(ctx, tx, scope, key, a, by, now)
		return err
	})
	return inc, err
}

// transitionByKey is TransitionByKey's work inside tx.
func (st *store) transitionByKey(ctx context.Context, tx *sql.Tx, scope int64, key string, a action, by actorRef, now time.Time) (incident, error) {
	var id int64
	err := tx.QueryRowContext(ctx, `SELECT id FROM incidents WHERE dedup_scope = $1 AND dedup_key = $2 AND status <> 'resolved'`,
		scope, key).Scan(&id)
	if err != nil {
		return incident{}, err
	}
	return st.applyTransition(ctx, tx, id, a, by, nil, "", now, "")
}
