package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/lib/pq"
)

// storedStep is a step as the steps column holds it: the delay in seconds,
// which the escalation query reads.
type storedStep struct {
	AfterS   int64   `json:"after_s"`
	Webhooks []int64 `json:"webhooks"`
}

const escalationPolicyColumns = `id, name, min_severity, labels, steps, repeat_every_s, repeat_times, created_at, updated_at`

func scanEscalationPolicy(row interface{ Scan(...any) error }) (escalationPolicy, error) {
	var (
		p             escalationPolicy
		labels, steps []byte
		every         int64
		times         int
	)
	err := row.Scan(&p.ID, &p.Name, &p.Match.MinSeverity, &labels, &steps, &every, &times, &p.CreatedAt, &p.UpdatedAt)
	if err != nil {
		return p, err
	}
	p.CreatedAt, p.UpdatedAt = p.CreatedAt.UTC(), p.UpdatedAt.UTC()
	if err := json.Unmarshal(labels, &p.Match.Labels); err != nil {
		return p, err
	}
	var stored []storedStep
	if err := json.Unmarshal(steps, &stored); err != nil {
		return p, err
	}
	for _, s := range stored {
		after := time.Duration(s.AfterS) * time.Second
		p.Steps = append(p.Steps, escalationStep{After: formatDelay(after), Webhooks: s.Webhooks, after: after})
	}
	if times > 0 {
		d := time.Duration(every) * time.Second
		p.Repeat = &escalationRepeat{Every: formatDelay(d), Times: times, every: d}
	}
	return p, nil
}

// policyColumns are the values of escalationPolicyColumns' settings, from
// $2 on in a statement whose $1 is the id (or unused).
func (p escalationPolicy) columns() ([]any, error) {
	labels, err := marshalJSON(p.Match.Labels)
	if err != nil {
		return nil, err
	}
	stored := make([]storedStep, len(p.Steps))
	for i, s := range p.Steps {
		stored[i] = storedStep{AfterS: int64(s.after / time.Second), Webhooks: s.Webhooks}
	}
	steps, err := marshalJSON(stored)
	if err != nil {
		return nil, err
	}
	var every int64
	var times int
	if p.Repeat != nil {
		every, times = int64(p.Repeat.every/time.Second), p.Repeat.Times
	}
	return []any{p.Name, p.Match.MinSeverity, labels, steps, every, times}, nil
}

// savePolicyWebhooks records which webhooks policy p notifies, after
// checking that they exist: the key-share lock keeps them until commit.
// An *unknownWebhooksError names those that do not.
func (st *store) savePolicyWebhooks(ctx context.Context, tx *sql.Tx, p escalationPolicy) error {
	var ids []int64
	for _, s := range p.Steps {
		ids = append(ids, s.Webhooks...)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	rows, err := tx.QueryContext(ctx, `SELECT id FROM webhooks WHERE id = ANY($1) FOR KEY SHARE`, pq.Array(ids))
	found, err := scanAll(st, rows, err, func(rows *sql.Rows) (int64, error) {
		var id int64
		return id, rows.Scan(&id)
	})
	if err != nil {
		return err
	}
	unknown := slices.DeleteFunc(ids, func(id int64) bool { return slices.Contains(found, id) })
	if len(unknown) > 0 {
		return &unknownWebhooksError{ids: unknown}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM escalation_policy_webhooks WHERE policy_id = $1`, p.ID); err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO escalation_policy_webhooks (policy_id, webhook_id) SELECT $1, unnest($2::bigint[])`, p.ID, pq.Array(found))
	return err
}

// CreateEscalationPolicy stores p. errConflict when the name is taken; an
// *unknownWebhooksError when a step names a webhook that does not exist.
func (st *store) CreateEscalationPolicy(ctx context.Context, p escalationPolicy, e auditEntry, now time.Time) (escalationPolicy, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	cols, err := p.columns()
	if err != nil {
		return escalationPolicy{}, err
	}
	var created escalationPolicy
	err = st.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		created, err = scanEscalationPolicy(tx.QueryRowContext(ctx, `INSERT INTO escalation_policies
			(name, min_severity, labels, steps, repeat_every_s, repeat_times, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
			RETURNING `+escalationPolicyColumns, append(cols, now)...))
		if err != nil {
			return err
		}
		if err := st.savePolicyWebhooks(ctx, tx, created); err != nil {
			return err
		}
		e.Target, e.Details = fmt.Sprintf("escalation_policy:%d", created.ID), map[string]any{"name": created.Name}
		return insertAudit(ctx, tx, e, now)
	})
	return created, err
}

// EscalationPolicies lists every escalation policy, oldest first.
func (st *store) EscalationPolicies(ctx context.Context) ([]escalationPolicy, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	rows, err := st.db.QueryContext(ctx, `SELECT `+escalationPolicyColumns+` FROM escalation_policies ORDER BY id`)
	return scanAll(st, rows, err, func(rows *sql.Rows) (escalationPolicy, error) { return scanEscalationPolicy(rows) })
}

// EscalationPolicy reads one escalation policy.
func (st *store) EscalationPolicy(ctx context.Context, id int64) (escalationPolicy, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	p, err := scanEscalationPolicy(st.db.QueryRowContext(ctx, `SELECT `+escalationPolicyColumns+` FROM escalation_policies WHERE id = $1::bigint`, id))
	return p, st.mapErr(err)
}

// UpdateEscalationPolicy applies change to policy id and stores it, with
// the row locked from read to write, so that two updates at once both
// count.
func (st *store) UpdateEscalationPolicy(ctx context.Context, id int64, change func(*escalationPolicy) error, e auditEntry, now time.Time) (escalationPolicy, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	var updated escalationPolicy
	err := st.inTx(ctx, func(tx *sql.Tx) error {
		p, err := scanEscalationPolicy(tx.QueryRowContext(ctx, `SELECT `+escalationPolicyColumns+` FROM escalation_policies
			WHERE id = $1::bigint FOR UPDATE`, id))
		if err != nil {
			return err
		}
		if err := change(&p); err != nil {
			return err
		}
		cols, err := p.columns()
		if err != nil {
			return err
		}
		updated, err = scanEscalationPolicy(tx.QueryRowContext(ctx, `UPDATE escalation_policies SET
			name = $2, min_severity = $3, labels = $4, steps = $5, repeat_every_s = $6, repeat_times = $7, updated_at = $8
			WHERE id = $1 RETURNING `+escalationPolicyColumns, append(append([]any{id}, cols...), now)...))
		if err != nil {
			return err
		}
		if err := st.savePolicyWebhooks(ctx, tx, updated); err != nil {
			return err
		}
		e.Target = fmt.Sprintf("escalation_policy:%d", id)
		return insertAudit(ctx, tx, e, now)
	})
	return updated, err
}

// escalationBatch bounds the notices one run of Escalate sends.
const escalationBatch = 100

// dueEscalationsSQL finds open incidents with a notice due at $1 under a
// policy they match: the next step once its delay has passed since the
// incident opened, or the next repeat of the last step once its interval
// has passed since the notice before. The incidents are locked, so that
// an acknowledgement waits for the notice or the notice for it; a replica
// skips those another holds. Progress from an earlier time the incident
// was open counts as none.
const dueEscalationsSQL = `SELECT i.id, i.opened_at, p.id, p.name, p.steps, coalesce(g.sent, 0)
	FROM incidents i
	JOIN escalation_policies p ON severity_rank(i.severity) >= severity_rank(p.min_severity) AND i.labels @> p.labels
	LEFT JOIN escalation_progress g ON g.incident_id = i.id AND g.policy_id = p.id AND g.opened_at = i.opened_at
	WHERE i.status = 'open' AND i.opened_at <= $1 AND CASE
		WHEN coalesce(g.sent, 0) < jsonb_array_length(p.steps)
			THEN i.opened_at + make_interval(secs => (p.steps -> coalesce(g.sent, 0) ->> 'after_s')::bigint) <= $1
		ELSE g.sent < jsonb_array_length(p.steps) + p.repeat_times AND g.sent_at + make_interval(secs => p.repeat_every_s) <= $1
	END
	ORDER BY i.opened_at, i.id, p.id
	LIMIT $2
	FOR UPDATE OF i SKIP LOCKED`

// Escalate sends the escalation notices due at now, up to
// escalationBatch: each one an escalated event on its incident, which the
// webhooks' delivery sends to the step's webhooks. It returns how many it
// sent; a full batch means more may be due.
func (st *store) Escalate(ctx context.Context, now time.Time) (int, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	sent := 0
	err := st.inTx(ctx, func(tx *sql.Tx) error {
		type due struct {
			incidentID, policyID int64
			openedAt             time.Time
			policy               string
			steps                []storedStep
			sent                 int
		}
		find, err := st.prepared(ctx, tx, dueEscalationsSQL)
		if err != nil {
			return err
		}
		rows, err := find.QueryContext(ctx, now, escalationBatch)
		list, err := scanAll(st, rows, err, func(rows *sql.Rows) (due, error) {
			var d due
			var steps []byte
			if err := rows.Scan(&d.incidentID, &d.openedAt, &d.policyID, &d.policy, &steps, &d.sent); err != nil {
				return d, err
			}
			return d, json.Unmarshal(steps, &d.steps)
		})
		if err != nil {
			return err
		}
		sent = len(list)
		for _, d := range list {
			// Counted only if the progress is still what the query saw: a
			// replica that sent this notice and committed after the query's
			// snapshot, but before the lock, leaves nothing to do.
			var ok bool
			err := tx.QueryRowContext(ctx, `INSERT INTO escalation_progress AS g (incident_id, policy_id, opened_at, sent, sent_at)
				VALUES ($1, $2, $3, $4 + 1, $5)
				ON CONFLICT (incident_id, policy_id) DO UPDATE SET opened_at = EXCLUDED.opened_at, sent = EXCLUDED.sent, sent_at = EXCLUDED.sent_at
				WHERE (g.opened_at = EXCLUDED.opened_at AND g.sent = $4) OR (g.opened_at <> EXCLUDED.opened_at AND $4 = 0)
				RETURNING true`, d.incidentID, d.policyID, d.openedAt, d.sent, now).Scan(&ok)
			if errors.Is(err, sql.ErrNoRows) {
				sent--
				continue
			}
			if err != nil {
				return err
			}
			notice := escalationNotice{PolicyID: d.policyID, Policy: d.policy, Step: d.sent + 1}
			if last := len(d.steps); d.sent >= last {
				notice.Step, notice.Repeat = last, d.sent-last+1
			}
			notice.Webhooks = d.steps[notice.Step-1].Webhooks
			inc, err := scanIncident(tx.QueryRowContext(ctx, incidentSelect("incidents")+` WHERE i.id = $1`, d.incidentID))
			if err != nil {
				return err
			}
			if err := st.appendEvent(ctx, tx, "escalated", inc, actorRef{}, eventDetail{escalation: &notice}, now); err != nil {
				return err
			}
		}
		return nil
	})
	return sent, err
}
