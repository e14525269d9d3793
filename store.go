package main

import (
	"context"
	"database/sql"
	"database/sql/driver"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/lib/pq"
)

//go:embed schema.sql
var schemaSQL string

// Sentinel errors of the store; writeError maps them to statuses and
// handlers turn them into messages that name what was not found.
var (
	errNotFound    = errors.New("not found")
	errConflict    = errors.New("conflict")
	errUnavailable = errors.New("database unavailable")
)

// schemaLockID is the advisory lock that serializes schema application when
// several replicas start at once. Any constant works; this one spells "inc".
const schemaLockID = 0x696e63

// store is the only place that speaks SQL.
type store struct {
	db      *sql.DB
	timeout time.Duration
}

// openStore connects to the database and applies the schema.
func openStore(ctx context.Context, databaseURL string, timeout time.Duration) (*store, error) {
	db, err := sql.Open("postgres", databaseURL)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	db.SetMaxOpenConns(40)
	db.SetMaxIdleConns(20)
	db.SetConnMaxIdleTime(5 * time.Minute)
	st := &store{db: db, timeout: timeout}
	if err := st.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return st, nil
}

// Close closes the connection pool.
func (st *store) Close() error { return st.db.Close() }

// migrate applies schema.sql under an advisory lock, in one transaction.
func (st *store) migrate(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return st.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, schemaLockID); err != nil {
			return fmt.Errorf("lock schema: %w", err)
		}
		if _, err := tx.ExecContext(ctx, schemaSQL); err != nil {
			return fmt.Errorf("apply schema.sql: %w", err)
		}
		return nil
	})
}

// Ping tells whether the database answers.
func (st *store) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, st.timeout)
	defer cancel()
	return st.mapErr(st.db.PingContext(ctx))
}

// inTx runs fn in a transaction, committing when it returns nil.
func (st *store) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := st.db.BeginTx(ctx, nil)
	if err != nil {
		return st.mapErr(err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return st.mapErr(err)
	}
	return st.mapErr(tx.Commit())
}

// mapErr turns driver errors into the store's sentinels. Errors that mean
// the database cannot be reached become errUnavailable, a 503.
func (st *store) mapErr(err error) error {
	var pqErr *pq.Error
	var netErr net.Error
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errNotFound), errors.Is(err, errConflict), errors.Is(err, errUnavailable):
		return err
	case errors.Is(err, sql.ErrNoRows):
		return errNotFound
	case errors.As(err, &pqErr):
		code := string(pqErr.Code)
		switch {
		case code == "23505":
			return fmt.Errorf("%w: %s", errConflict, pqErr.Constraint)
		case strings.HasPrefix(code, "08"), code == "57P01", code == "57P02", code == "57P03", code == "53300":
			return fmt.Errorf("%w: %v", errUnavailable, err)
		}
		return err
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr), errors.Is(err, driver.ErrBadConn),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, sql.ErrConnDone):
		return fmt.Errorf("%w: %v", errUnavailable, err)
	}
	return err
}

// withTimeout bounds one store call, so an unreachable database is a 503
// within seconds instead of a hung request.
func (st *store) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, st.timeout)
}

// user is an account.
type user struct {
	ID           int64
	Username     string
	PasswordHash string
	CreatedAt    time.Time
}

const userColumns = `id, username, password_hashed, created_at`

func scanUser(row interface{ Scan(...any) error }) (user, error) {
	var u user
	err := row.Scan(&u.ID, &u.Username, &u.PasswordHash, &u.CreatedAt)
	u.CreatedAt = u.CreatedAt.UTC()
	return u, err
}

// CreateUser inserts a user; errConflict when the name is taken in any case.
func (st *store) CreateUser(ctx context.Context, username, passwordHash string, now time.Time) (user, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	u, err := scanUser(st.db.QueryRowContext(ctx,
		`INSERT INTO users (username, password_hashed, created_at) VALUES ($1, $2, $3) RETURNING `+userColumns,
		username, passwordHash, now))
	return u, st.mapErr(err)
}

// UserByUsername finds a user by name, ignoring case.
func (st *store) UserByUsername(ctx context.Context, username string) (user, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	u, err := scanUser(st.db.QueryRowContext(ctx,
		`SELECT `+userColumns+` FROM users WHERE lower(username) = lower($1)`, username))
	return u, st.mapErr(err)
}

// UserByID finds a user by id.
func (st *store) UserByID(ctx context.Context, id int64) (user, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	u, err := scanUser(st.db.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE id = $1::bigint`, id))
	return u, st.mapErr(err)
}

// incident is an incident as the API returns it, in REST responses and in
// stream events alike.
type incident struct {
	ID          int64      `json:"id"`
	Title       string     `json:"title"`
	Description string     `json:"description"`
	Severity    string     `json:"severity"`
	Status      string     `json:"status"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
	ResolvedAt  *time.Time `json:"resolved_at"`
	ResolvedBy  *string    `json:"resolved_by"`
}

// incidentSelect reads incidents from source (the table, or a CTE that
// changed rows) under the alias i, with the usernames the API shows.
func incidentSelect(source string) string {
	return `SELECT i.id, i.title, i.description, i.severity, i.status, i.created_at, i.updated_at,
		i.resolved_at, resolver.username
	FROM ` + source + ` i
	LEFT JOIN users resolver ON resolver.id = i.resolved_by`
}

func scanIncident(row interface{ Scan(...any) error }) (incident, error) {
	var (
		inc        incident
		resolvedAt sql.NullTime
		resolvedBy sql.NullString
	)
	err := row.Scan(&inc.ID, &inc.Title, &inc.Description, &inc.Severity, &inc.Status, &inc.CreatedAt, &inc.UpdatedAt,
		&resolvedAt, &resolvedBy)
	inc.CreatedAt = inc.CreatedAt.UTC()
	inc.UpdatedAt = inc.UpdatedAt.UTC()
	if resolvedAt.Valid {
		t := resolvedAt.Time.UTC()
		inc.ResolvedAt = &t
	}
	if resolvedBy.Valid {
		inc.ResolvedBy = &resolvedBy.String
	}
	return inc, err
}

// newIncident is what a report carries.
type newIncident struct {
	Title       string
	Description string
	Severity    string
}

// CreateIncident inserts an incident and its "added" event.
func (st *store) CreateIncident(ctx context.Context, in newIncident, now time.Time) (incident, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	var inc incident
	err := st.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		inc, err = scanIncident(tx.QueryRowContext(ctx, `WITH created AS (
			INSERT INTO incidents (title, description, severity, status, created_at, updated_at)
			VALUES ($1, $2, $3, 'open', $4, $4) RETURNING *)
			`+incidentSelect("created"), in.Title, in.Description, in.Severity, now))
		if err != nil {
			return fmt.Errorf("insert incident: %w", err)
		}
		return appendEvent(ctx, tx, "added", inc, nil, now)
	})
	return inc, err
}

// appendEvent records a change to inc, with inc as it is after the change.
func appendEvent(ctx context.Context, tx *sql.Tx, eventType string, inc incident, actorID *int64, now time.Time) error {
	data, err := json.Marshal(inc)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO incident_events (incident_id, type, actor_id, created_at, data)
		VALUES ($1, $2, $3, $4, $5)`, inc.ID, eventType, actorID, now, data)
	if err != nil {
		return fmt.Errorf("append %s event: %w", eventType, err)
	}
	return nil
}

// Incident reads one incident.
func (st *store) Incident(ctx context.Context, id int64) (incident, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	inc, err := scanIncident(st.db.QueryRowContext(ctx, incidentSelect("incidents")+` WHERE i.id = $1::bigint`, id))
	return inc, st.mapErr(err)
}

// incidentFilter selects a page of the incident list.
type incidentFilter struct {
	Statuses   []string
	Severities []string
	Before     int64 // 0: from the newest
	Limit      int
}

// ListIncidents returns one page, newest first, and whether more follow.
// Keyset pagination on the primary key keeps every page as cheap as the
// first, however large the table.
func (st *store) ListIncidents(ctx context.Context, f incidentFilter) ([]incident, bool, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if len(f.Statuses) > 0 {
		where = append(where, "i.status = ANY("+arg(pq.Array(f.Statuses))+")")
	}
	if len(f.Severities) > 0 {
		where = append(where, "i.severity = ANY("+arg(pq.Array(f.Severities))+")")
	}
	if f.Before > 0 {
		where = append(where, "i.id < "+arg(f.Before)+"::bigint")
	}
	q := incidentSelect("incidents")
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY i.id DESC LIMIT " + arg(f.Limit+1)
	rows, err := st.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, false, st.mapErr(err)
	}
	defer rows.Close()
	list := []incident{}
	for rows.Next() {
		inc, err := scanIncident(rows)
		if err != nil {
			return nil, false, st.mapErr(err)
		}
		list = append(list, inc)
	}
	if err := rows.Err(); err != nil {
		return nil, false, st.mapErr(err)
	}
	more := len(list) > f.Limit
	if more {
		list = list[:f.Limit]
	}
	return list, more, nil
}

// ResolveIncident resolves an incident that is not resolved yet: errNotFound
// for an unknown id, errConflict when it already is. The row lock makes two
// concurrent resolves produce one change and one event.
func (st *store) ResolveIncident(ctx context.Context, id, actorID int64, now time.Time) (incident, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	var inc incident
	err := st.inTx(ctx, func(tx *sql.Tx) error {
		var status string
		err := tx.QueryRowContext(ctx, `SELECT status FROM incidents WHERE id = $1::bigint FOR UPDATE`, id).Scan(&status)
		if err != nil {
			return err
		}
		if status == "resolved" {
			return errConflict
		}
		inc, err = scanIncident(tx.QueryRowContext(ctx, `WITH changed AS (
			UPDATE incidents SET status = 'resolved', resolved_at = $2, resolved_by = $3, updated_at = $2
			WHERE id = $1 RETURNING *)
			`+incidentSelect("changed"), id, now, actorID))
		if err != nil {
			return fmt.Errorf("resolve incident: %w", err)
		}
		return appendEvent(ctx, tx, "resolved", inc, &actorID, now)
	})
	return inc, err
}

// storedEvent is one row of incident_events: a change to an incident, with
// the incident as it was after the change.
type storedEvent struct {
	Seq        int64
	IncidentID int64
	Type       string
	Actor      *string // username; nil for the system or a deleted user
	CreatedAt  time.Time
	Data       json.RawMessage
}

// LatestEventSeq returns the newest event's sequence number, 0 when none.
func (st *store) LatestEventSeq(ctx context.Context) (int64, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	var seq int64
	err := st.db.QueryRowContext(ctx, `SELECT coalesce(max(id), 0) FROM incident_events`).Scan(&seq)
	return seq, st.mapErr(err)
}

// EventsAfter returns up to limit events with after < seq <= upTo (upTo 0:
// no bound), in sequence order.
func (st *store) EventsAfter(ctx context.Context, after, upTo int64, limit int) ([]storedEvent, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	if upTo <= 0 {
		upTo = 1<<63 - 1
	}
	rows, err := st.db.QueryContext(ctx, `SELECT e.id, e.incident_id, e.type, actor.username, e.created_at, e.data
		FROM incident_events e LEFT JOIN users actor ON actor.id = e.actor_id
		WHERE e.id > $1 AND e.id <= $2 ORDER BY e.id LIMIT $3`, after, upTo, limit)
	if err != nil {
		return nil, st.mapErr(err)
	}
	defer rows.Close()
	var events []storedEvent
	for rows.Next() {
		var (
			e     storedEvent
			actor sql.NullString
		)
		if err := rows.Scan(&e.Seq, &e.IncidentID, &e.Type, &actor, &e.CreatedAt, &e.Data); err != nil {
			return nil, st.mapErr(err)
		}
		if actor.Valid {
			e.Actor = &actor.String
		}
		e.CreatedAt = e.CreatedAt.UTC()
		events = append(events, e)
	}
	return events, st.mapErr(rows.Err())
}
