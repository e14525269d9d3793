package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/lib/pq"
)

// usersLockID serializes registrations, so exactly one first user becomes
// admin and closed registration still lets exactly one bootstrap.
const usersLockID = 0x696e6375

var (
	errRegistrationClosed = errors.New("registration is closed")
	errLastAdmin          = errors.New("last active admin")
)

// user is an account.
type user struct {
	ID           int64
	Username     string
	PasswordHash string
	CreatedAt    time.Time
	Role         string
	Disabled     bool
	TokenVersion int64
}

const userColumns = `id, username, password_hashed, created_at, role, disabled, token_version`

func scanUser(row interface{ Scan(...any) error }) (user, error) {
	var u user
	err := row.Scan(u.dest()...)
	u.CreatedAt = u.CreatedAt.UTC()
	return u, err
}

// dest is where a row of userColumns is scanned.
func (u *user) dest() []any {
	return []any{&u.ID, &u.Username, &u.PasswordHash, &u.CreatedAt, &u.Role, &u.Disabled, &u.TokenVersion}
}

// auditEntry is one row of the audit log.
type auditEntry struct {
	ID      int64          `json:"id"`
	At      time.Time      `json:"at"`
	ActorID *int64         `json:"-"`
	Actor   *string        `json:"actor"` // username; nil for anonymous or a deleted user
	Action  string         `json:"action"`
	Target  string         `json:"target"`
	IP      string         `json:"ip"`
	Details map[string]any `json:"details"`
}

// execer is a *sql.DB or a *sql.Tx.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func insertAudit(ctx context.Context, db execer, e auditEntry, now time.Time) error {
	details, err := marshalJSON(e.Details)
	if err != nil {
		return err
	}
	if e.Details == nil {
		details = []byte("{}")
	}
	_, err = db.ExecContext(ctx, `INSERT INTO audit_log (at, actor_id, action, target, ip, details) VALUES ($1, $2, $3, $4, $5, $6)`,
		now, e.ActorID, e.Action, e.Target, e.IP, details)
	if err != nil {
		return fmt.Errorf("audit %s: %w", e.Action, err)
	}
	return nil
}

// Audit records an action that changes nothing else (a login attempt, a
// ticket).
func (st *store) Audit(ctx context.Context, e auditEntry, now time.Time) error {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	return st.mapErr(insertAudit(ctx, st.db, e, now))
}

// RegisterUser creates a self-registered user: the first user ever is an
// admin, later ones responders. With registration closed only the first
// may register (errRegistrationClosed otherwise). errConflict when the name
// is taken in any case.
func (st *store) RegisterUser(ctx context.Context, username, passwordHash string, open bool, e auditEntry, now time.Time) (user, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	var u user
	err := st.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, usersLockID); err != nil {
			return err
		}
		var first bool
		if err := tx.QueryRowContext(ctx, `SELECT NOT EXISTS (SELECT 1 FROM users)`).Scan(&first); err != nil {
			return err
		}
		role := "responder"
		switch {
		case first:
			role = "admin"
		case !open:
			return errRegistrationClosed
		}
		var err error
		if u, err = insertUser(ctx, tx, username, passwordHash, role, now); err != nil {
			return err
		}
		e.ActorID, e.Target = &u.ID, u.Username
		e.Details = map[string]any{"role": role}
		return insertAudit(ctx, tx, e, now)
	})
	return u, err
}

// NoUsers tells whether no user exists yet.
func (st *store) NoUsers(ctx context.Context) (bool, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	var none bool
	err := st.db.QueryRowContext(ctx, `SELECT NOT EXISTS (SELECT 1 FROM users)`).Scan(&none)
	return none, st.mapErr(err)
}

// CreateUser is an admin creating a user with a role.
func (st *store) CreateUser(ctx context.Context, username, passwordHash, role string, e auditEntry, now time.Time) (user, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	var u user
	err := st.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		if u, err = insertUser(ctx, tx, username, passwordHash, role, now); err != nil {
			return err
		}
		e.Target, e.Details = u.Username, map[string]any{"role": role}
		return insertAudit(ctx, tx, e, now)
	})
	return u, err
}

func insertUser(ctx context.Context, tx *sql.Tx, username, passwordHash, role string, now time.Time) (user, error) {
	return scanUser(tx.QueryRowContext(ctx,
		`INSERT INTO users (username, password_hashed, created_at, role) VALUES ($1, $2, $3, $4) RETURNING `+userColumns,
		username, passwordHash, now, role))
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

// Users hands the users with id above after to add, by id, limit+1 at
// most.
func (st *store) Users(ctx context.Context, after int64, limit int, add func(user) (bool, error)) error {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	rows, err := st.db.QueryContext(ctx, `SELECT `+userColumns+` FROM users WHERE id > $1::bigint ORDER BY id LIMIT $2`, after, limit+1)
	return scanEach(st, rows, err, func(rows *sql.Rows) (user, error) { return scanUser(rows) }, add)
}

// userChange is what PATCH /api/v1/users/{id} may change; nil leaves as is.
type userChange struct {
	Role     *string
	Disabled *bool
}

// UpdateUser changes a user's role or disabled flag, auditing each change.
// errLastAdmin when it would leave no active admin. The active admins' rows
// are locked first, so two admins demoting each other at once cannot both
// succeed.
func (st *store) UpdateUser(ctx context.Context, id int64, c userChange, e auditEntry, now time.Time) (user, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	var u user
	err := st.inTx(ctx, func(tx *sql.Tx) error {
		var admins []int64
		if err := tx.QueryRowContext(ctx, `SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM
			(SELECT id FROM users WHERE role = 'admin' AND NOT disabled ORDER BY id FOR UPDATE) a`).Scan(pq.Array(&admins)); err != nil {
			return err
		}
		cur, err := scanUser(tx.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE id = $1::bigint FOR UPDATE`, id))
		if err != nil {
			return err
		}
		next := cur
		if c.Role != nil {
			next.Role = *c.Role
		}
		if c.Disabled != nil {
			next.Disabled = *c.Disabled
		}
		wasActiveAdmin := cur.Role == "admin" && !cur.Disabled
		if wasActiveAdmin && (next.Role != "admin" || next.Disabled) && len(admins) <= 1 {
			return errLastAdmin
		}
		// Disabling also ends the user's tokens and unused stream tickets,
		// so enabling again does not bring them back.
		disabling := next.Disabled && !cur.Disabled
		if u, err = scanUser(tx.QueryRowContext(ctx, `UPDATE users SET role = $2, disabled = $3,
			token_version = token_version + CASE WHEN $4 THEN 1 ELSE 0 END WHERE id = $1 RETURNING `+userColumns,
			id, next.Role, next.Disabled, disabling)); err != nil {
			return err
		}
		if disabling {
			if err := revokeStreamAccess(ctx, tx, id); err != nil {
				return err
			}
		}
		e.Target = u.Username
		if next.Role != cur.Role {
			e.Action, e.Details = "user.role_changed", map[string]any{"from": cur.Role, "to": next.Role}
			if err := insertAudit(ctx, tx, e, now); err != nil {
				return err
			}
		}
		if next.Disabled != cur.Disabled {
			e.Action, e.Details = "user.enabled", nil
			if next.Disabled {
				e.Action = "user.disabled"
			}
			if err := insertAudit(ctx, tx, e, now); err != nil {
				return err
			}
		}
		return nil
	})
	return u, err
}

// ReplacePasswordHash swaps a hash for another of the same password, unless
// the password changed meanwhile. Tokens stay valid: nothing about the
// account changed.
func (st *store) ReplacePasswordHash(ctx context.Context, id int64, old, replacement string) error {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	_, err := st.db.ExecContext(ctx, `UPDATE users SET password_hashed = $3 WHERE id = $1 AND password_hashed = $2`, id, old, replacement)
	return err
}

// ChangePassword stores a new hash and bumps the token version, which ends
// every token issued before.
func (st *store) ChangePassword(ctx context.Context, id int64, passwordHash string, e auditEntry, now time.Time) error {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	return st.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE users SET password_hashed = $2, token_version = token_version + 1 WHERE id = $1`, id, passwordHash)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errNotFound
		}
		if err := revokeStreamAccess(ctx, tx, id); err != nil {
			return err
		}
		return insertAudit(ctx, tx, e, now)
	})
}

// revokeStreamAccess deletes a user's unused stream tickets and tells every
// replica, at commit, to re-check the user's open streams.
func revokeStreamAccess(ctx context.Context, tx *sql.Tx, userID int64) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM stream_tickets WHERE user_id = $1`, userID); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `SELECT pg_notify($1, $2)`, accessChannel, strconv.FormatInt(userID, 10))
	return err
}

// auditFilter selects audit rows: before an id (0: from the newest), by
// actor id and action when set.
type auditFilter struct {
	Before  int64
	ActorID *int64
	Action  string
	Limit   int
}

// AuditLog hands audit rows to add, newest first, f.Limit+1 at most.
func (st *store) AuditLog(ctx context.Context, f auditFilter, add func(auditEntry) (bool, error)) error {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	rows, err := st.db.QueryContext(ctx, `SELECT a.id, a.at, a.actor_id, u.username, a.action, coalesce(a.target, ''), coalesce(a.ip, ''), a.details
		FROM audit_log a LEFT JOIN users u ON u.id = a.actor_id
		WHERE ($1::bigint = 0 OR a.id < $1::bigint) AND ($2::bigint IS NULL OR a.actor_id = $2) AND ($3 = '' OR a.action = $3)
		ORDER BY a.id DESC LIMIT $4`, f.Before, f.ActorID, f.Action, f.Limit+1)
	return scanEach(st, rows, err, func(rows *sql.Rows) (auditEntry, error) {
		var (
			e       auditEntry
			details []byte
		)
		if err := rows.Scan(&e.ID, &e.At, &e.ActorID, &e.Actor, &e.Action, &e.Target, &e.IP, &details); err != nil {
			return e, err
		}
		e.At = e.At.UTC()
		return e, json.Unmarshal(details, &e.Details)
	}, add)
}

// apiKey is a key as its owner sees it; the secret is never stored.
type apiKey struct {
	ID         int64      `json:"id"`
	UserID     int64      `json:"-"`
	Name       string     `json:"name"`
	Scopes     []string   `json:"scopes"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	RevokedAt  *time.Time `json:"-"`
}

const apiKeyColumns = `k.id, k.user_id, k.name, k.scopes, k.created_at, k.expires_at, k.last_used_at, k.revoked_at`

func scanAPIKey(row interface{ Scan(...any) error }, extra ...any) (apiKey, error) {
	var (
		k                      apiKey
		expires, used, revoked sql.NullTime
	)
	err := row.Scan(append([]any{&k.ID, &k.UserID, &k.Name, pq.Array(&k.Scopes), &k.CreatedAt, &expires, &used, &revoked}, extra...)...)
	k.CreatedAt = k.CreatedAt.UTC()
	k.ExpiresAt, k.LastUsedAt, k.RevokedAt = utcOrNil(expires), utcOrNil(used), utcOrNil(revoked)
	return k, err
}

// maxAPIKeys bounds a user's active keys, so a leaked token cannot fill the
// table.
const maxAPIKeys = 100

var errTooManyKeys = errors.New("too many api keys")

// CreateAPIKey stores a new key of user userID by its hash.
func (st *store) CreateAPIKey(ctx context.Context, k apiKey, hash []byte, e auditEntry, now time.Time) (apiKey, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	var created apiKey
	err := st.inTx(ctx, func(tx *sql.Tx) error {
		// The owner's row lock serializes concurrent creates; the count is a
		// statement of its own so that its snapshot, taken after the lock,
		// sees the keys the previous holder committed.
		if _, err := tx.ExecContext(ctx, `SELECT 1 FROM users WHERE id = $1 FOR UPDATE`, k.UserID); err != nil {
			return err
		}
		var active int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL`, k.UserID).Scan(&active); err != nil {
			return err
		}
		if active >= maxAPIKeys {
			return errTooManyKeys
		}
		var err error
		created, err = scanAPIKey(tx.QueryRowContext(ctx, `WITH k AS (
			INSERT INTO api_keys (user_id, name, key_hash, scopes, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING *)
			SELECT `+apiKeyColumns+` FROM k`, k.UserID, k.Name, hash, pq.Array(k.Scopes), now, k.ExpiresAt))
		if err != nil {
			return err
		}
		e.Target, e.Details = fmt.Sprintf("api_key:%d", created.ID), map[string]any{"name": created.Name, "scopes": created.Scopes}
		return insertAudit(ctx, tx, e, now)
	})
	return created, err
}

// APIKeys lists a user's keys that are not revoked, oldest first.
func (st *store) APIKeys(ctx context.Context, userID int64) ([]apiKey, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	rows, err := st.db.QueryContext(ctx, `SELECT `+apiKeyColumns+` FROM api_keys k WHERE k.user_id = $1 AND k.revoked_at IS NULL ORDER BY k.id`, userID)
	return scanAll(st, rows, err, func(rows *sql.Rows) (apiKey, error) { return scanAPIKey(rows) })
}

// RevokeAPIKey revokes key id of user userID; errNotFound when the user has
// no such key that is not yet revoked.
func (st *store) RevokeAPIKey(ctx context.Context, userID, id int64, e auditEntry, now time.Time) error {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	return st.inTx(ctx, func(tx *sql.Tx) error {
		var name string
		err := tx.QueryRowContext(ctx, `UPDATE api_keys SET revoked_at = $3 WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL RETURNING name`,
			id, userID, now).Scan(&name)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `SELECT pg_notify($1, $2)`, accessChannel, strconv.FormatInt(userID, 10)); err != nil {
			return err
		}
		e.Target, e.Details = fmt.Sprintf("api_key:%d", id), map[string]any{"name": name}
		return insertAudit(ctx, tx, e, now)
	})
}

// keyUseResolution is how stale last_used_at may get: writing it on every
// request would turn every read into a write.
const keyUseResolution = time.Minute

// APIKeyByHash finds a key and its owner by the key's hash, and records the
// use of a key that works.
func (st *store) APIKeyByHash(ctx context.Context, hash []byte, now time.Time) (apiKey, user, error) {
	k, u, err := st.apiKeyWithOwner(ctx, `k.key_hash = $1`, hash)
	usable := k.RevokedAt == nil && (k.ExpiresAt == nil || now.Before(*k.ExpiresAt)) && !u.Disabled
	if err != nil || !usable || (k.LastUsedAt != nil && now.Sub(*k.LastUsedAt) < keyUseResolution) {
		return k, u, err
	}
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	_, err = st.db.ExecContext(ctx, `UPDATE api_keys SET last_used_at = $2 WHERE id = $1`, k.ID, now)
	return k, u, st.mapErr(err)
}

// APIKeyByID reads a key and its owner.
func (st *store) APIKeyByID(ctx context.Context, id int64) (apiKey, user, error) {
	return st.apiKeyWithOwner(ctx, `k.id = $1`, id)
}

func (st *store) apiKeyWithOwner(ctx context.Context, where string, arg any) (apiKey, user, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	var u user
	k, err := scanAPIKey(st.db.QueryRowContext(ctx, `SELECT `+apiKeyColumns+`,
			u.id, u.username, u.password_hashed, u.created_at, u.role, u.disabled, u.token_version
		FROM api_keys k JOIN users u ON u.id = k.user_id WHERE `+where, arg), u.dest()...)
	u.CreatedAt = u.CreatedAt.UTC()
	return k, u, st.mapErr(err)
}

// CreateStreamTicket stores a ticket's hash for a user (and the key it was
// asked for with, if any); expired tickets are swept on the way.
func (st *store) CreateStreamTicket(ctx context.Context, hash []byte, userID int64, keyID *int64, expires time.Time, e auditEntry, now time.Time) error {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	return st.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM stream_tickets WHERE expires_at <= $1`, now); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO stream_tickets (ticket_hash, user_id, api_key_id, expires_at) VALUES ($1, $2, $3, $4)`,
			hash, userID, keyID, expires); err != nil {
			return err
		}
		return insertAudit(ctx, tx, e, now)
	})
}

// RedeemStreamTicket uses up a ticket: it is deleted whether or not it has
// expired, so it works at most once. errNotFound when unknown or expired.
func (st *store) RedeemStreamTicket(ctx context.Context, hash []byte, now time.Time) (userID int64, keyID *int64, err error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	var expires time.Time
	err = st.db.QueryRowContext(ctx, `DELETE FROM stream_tickets WHERE ticket_hash = $1 RETURNING user_id, api_key_id, expires_at`, hash).
		Scan(&userID, &keyID, &expires)
	if err == nil && !now.Before(expires) {
		err = errNotFound
	}
	return userID, keyID, st.mapErr(err)
}

// adminTables are the admin-managed things DeleteAudited may delete, by
// the name their audit targets use.
var adminTables = map[string]string{"integration": "integrations", "heartbeat": "heartbeats", "webhook": "webhooks",
	"escalation_policy": "escalation_policies"}

// DeleteAudited deletes the kind (integration, heartbeat, webhook) with id
// id, and audits it under its name. What it made stays: incidents keep
// their source; a webhook's deliveries go with it.
func (st *store) DeleteAudited(ctx context.Context, kind string, id int64, e auditEntry, now time.Time) error {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	return st.inTx(ctx, func(tx *sql.Tx) error {
		var name string
		if err := tx.QueryRowContext(ctx, `DELETE FROM `+adminTables[kind]+` WHERE id = $1::bigint RETURNING name`, id).Scan(&name); err != nil {
			return err
		}
		e.Target, e.Details = fmt.Sprintf("%s:%d", kind, id), map[string]any{"name": name}
		return insertAudit(ctx, tx, e, now)
	})
}
