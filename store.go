package main

import (
	"cmp"
	"context"
	"database/sql"
	"database/sql/driver"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
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
	errReferenced  = errors.New("referenced by another row")
	errUnavailable = errors.New("database unavailable")
)

// schemaLockID is the advisory lock that serializes schema application when
// several replicas start at once. Any constant works; this one spells "inc".
const schemaLockID = 0x696e63

// store is the only place that speaks SQL.
type store struct {
	db      *sql.DB
	timeout time.Duration
	stmts   *stmtCache
	// metrics, when set, counts reports and transitions once their
	// transaction commits (afterCommit).
	metrics     *serverMetrics
	committedMu sync.Mutex
	committed   map[*sql.Tx][]func()
}

// stmtCache holds the hot statements prepared, by their text. A prepared
// statement skips parsing and planning after its first use on a connection,
// and lib/pq sends it in one round trip instead of two; on the path every
// report takes, that is most of PostgreSQL's work. They are prepared when
// the store opens: preparing later, inside a transaction, would take a
// second connection from a pool that busy transactions may have emptied.
type stmtCache struct {
	stmts map[string]*sql.Stmt
}

// hotStatements are the statements the cache holds: planning these costs
// more than running them, and they run often (the escalation check every
// second on every replica, a scrape's counts).
var hotStatements = []string{reportSQL, appendEventSQL, dueEscalationsSQL, metricsCountsSQL}

func prepareHot(ctx context.Context, db *sql.DB) (*stmtCache, error) {
	c := &stmtCache{stmts: map[string]*sql.Stmt{}}
	for _, q := range hotStatements {
		var stmt *sql.Stmt
		err := retryDeadlock(func() (err error) {
			stmt, err = db.PrepareContext(ctx, q)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("prepare statement: %w", err)
		}
		c.stmts[q] = stmt
	}
	return c, nil
}

// retryDeadlock runs fn again, a few times, while PostgreSQL picks it as a
// deadlock's victim. At start-up that happens when another replica starting
// at the same moment alters the tables fn reads, or reads the tables fn
// alters; a victim's work is rolled back, so running it again is safe.
func retryDeadlock(fn func() error) error {
	err := fn()
	for attempt := 0; isDeadlock(err) && attempt < 5; attempt++ {
		err = fn()
	}
	return err
}

func isDeadlock(err error) bool {
	var pqErr *pq.Error
	return errors.As(err, &pqErr) && pqErr.Code == "40P01"
}

// prepared returns one of hotStatements, inside tx when tx is not nil.
func (st *store) prepared(ctx context.Context, tx *sql.Tx, query string) (*sql.Stmt, error) {
	stmt, ok := st.stmts.stmts[query]
	if !ok {
		return nil, errors.New("statement is not in hotStatements")
	}
	if tx != nil {
		return tx.StmtContext(ctx, stmt), nil
	}
	return stmt, nil
}

// defaultDBMaxConns is how many connections a server opens at most
// (DB_MAX_CONNS). Every transaction that records an event takes
// PostgreSQL's notify lock at commit, so they commit one at a time whatever
// the pool's size; more connections than PostgreSQL has cores for only
// queue inside PostgreSQL, where a lock holder that loses its CPU stalls
// all the others (BENCHMARKS.md, "The pool size"). Requests past the pool
// wait in the server instead. Ten also keeps several replicas within
// PostgreSQL's default max_connections of 100.
const defaultDBMaxConns = 10

// openStore connects to the database and applies the schema.
func openStore(ctx context.Context, databaseURL string, timeout time.Duration, maxConns int) (*store, error) {
	db, err := sql.Open("postgres", databaseURL)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	// As many idle as open connections: under bursts a smaller idle pool
	// closes and reopens connections by the hundred per second.
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	db.SetConnMaxIdleTime(5 * time.Minute)
	st := &store{db: db, timeout: timeout}
	if err := st.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	if st.stmts, err = prepareHot(ctx, db); err != nil {
		db.Close()
		return nil, st.mapErr(err)
	}
	return st, nil
}

// withOwnPool returns the same store on a separate pool of n connections,
// for work that must not queue behind requests for a connection.
func (st *store) withOwnPool(ctx context.Context, dsn string, n int) (*store, error) {
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	ctx, cancel := context.WithTimeout(ctx, st.timeout)
	defer cancel()
	stmts, err := prepareHot(ctx, db)
	if err != nil {
		db.Close()
		return nil, err
	}
	return &store{db: db, timeout: st.timeout, stmts: stmts}, nil
}

// Close closes the connection pool.
func (st *store) Close() error { return st.db.Close() }

// migrate applies schema.sql under an advisory lock, in one transaction.
func (st *store) migrate(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return retryDeadlock(func() error {
		return st.inTx(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, schemaLockID); err != nil {
				return fmt.Errorf("lock schema: %w", err)
			}
			if _, err := tx.ExecContext(ctx, schemaSQL); err != nil {
				return fmt.Errorf("apply schema.sql: %w", err)
			}
			return nil
		})
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
	err = fn(tx)
	if err == nil {
		err = tx.Commit()
	}
	st.committedMu.Lock()
	done := st.committed[tx]
	delete(st.committed, tx)
	st.committedMu.Unlock()
	if err != nil {
		return st.mapErr(err)
	}
	for _, f := range done {
		f()
	}
	return nil
}

// afterCommit runs f once tx commits, and never if it rolls back: what
// the metrics count is what happened.
func (st *store) afterCommit(tx *sql.Tx, f func()) {
	st.committedMu.Lock()
	defer st.committedMu.Unlock()
	if st.committed == nil {
		st.committed = map[*sql.Tx][]func(){}
	}
	st.committed[tx] = append(st.committed[tx], f)
}

// mapErr turns driver errors into the store's sentinels. Errors that mean
// the database cannot be reached become errUnavailable, a 503.
func (st *store) mapErr(err error) error {
	var pqErr *pq.Error
	var netErr net.Error
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errNotFound), errors.Is(err, errConflict), errors.Is(err, errReferenced), errors.Is(err, errUnavailable):
		return err
	case errors.Is(err, sql.ErrNoRows):
		return errNotFound
	case errors.As(err, &pqErr):
		code := string(pqErr.Code)
		switch {
		case code == "23505":
			return fmt.Errorf("%w: %s", errConflict, pqErr.Constraint)
		case code == "23503":
			return fmt.Errorf("%w: %s", errReferenced, pqErr.Constraint)
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

// scanEach hands every row of a query (rows and err are its results),
// read with scan, to add, until add returns false: a list is encoded as it
// is read, and never held whole.
func scanEach[T any](st *store, rows *sql.Rows, err error, scan func(*sql.Rows) (T, error), add func(T) (bool, error)) error {
	if err != nil {
		return st.mapErr(err)
	}
	defer rows.Close()
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return st.mapErr(err)
		}
		more, err := add(v)
		if err != nil {
			return err
		}
		if !more {
			break
		}
	}
	return st.mapErr(rows.Err())
}

// fetchSize is how many rows queryEach reads from its cursor at a time.
const fetchSize = 64

// queryEach runs query and hands its rows, read with scan, to add until add
// returns false, reading them through a cursor fetchSize rows at a time. A
// page counts its rows with LIMIT but is cut by bytes: without the cursor,
// the rows of a page cut early would still be sent, and read and dropped
// (1,000 large incidents take seconds).
func queryEach[T any](ctx context.Context, st *store, query string, args []any, scan func(*sql.Rows) (T, error), add func(T) (bool, error)) error {
	return st.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DECLARE page NO SCROLL CURSOR FOR `+query, args...); err != nil {
			return err
		}
		for {
			n, stopped := 0, false
			rows, err := tx.QueryContext(ctx, `FETCH `+strconv.Itoa(fetchSize)+` FROM page`)
			err = scanEach(st, rows, err, scan, func(v T) (bool, error) {
				n++
				more, err := add(v)
				stopped = !more
				return more, err
			})
			if err != nil || stopped || n < fetchSize {
				return err
			}
		}
	})
}

// scanAll reads every row of a query with scan, for results that are
// small by construction.
func scanAll[T any](st *store, rows *sql.Rows, err error, scan func(*sql.Rows) (T, error)) ([]T, error) {
	list := []T{}
	err = scanEach(st, rows, err, scan, func(v T) (bool, error) {
		list = append(list, v)
		return true, nil
	})
	return list, err
}

// incident is an incident as the API returns it, in REST responses and in
// stream events alike. The original service's keys come first.
type incident struct {
	ID             int64             `json:"id"`
	Title          string            `json:"title"`
	Description    string            `json:"description"`
	Severity       string            `json:"severity"`
	Status         string            `json:"status"`
	CreatedAt      time.Time         `json:"created_at"`
	UpdatedAt      time.Time         `json:"updated_at"`
	ResolvedAt     *time.Time        `json:"resolved_at"`
	ResolvedBy     *string           `json:"resolved_by"`
	AcknowledgedAt *time.Time        `json:"acknowledged_at"`
	AcknowledgedBy *string           `json:"acknowledged_by"`
	DedupKey       *string           `json:"dedup_key"`
	Occurrences    int               `json:"occurrences"`
	LastOccurredAt time.Time         `json:"last_occurred_at"`
	Labels         map[string]string `json:"labels"`
	Version        int64             `json:"version"`
	// Added after the original: where it came from, and what its sender
	// said beyond the title.
	Source  string          `json:"source"` // the integration's name, or "api"
	Links   []link          `json:"links"`
	Details json.RawMessage `json:"details"` // a JSON object
}

// link is a URL an incident points to, such as a dashboard or a runbook.
type link struct {
	Href string `json:"href"`
	Text string `json:"text"`
}

// incidentColumns reads an incident under the alias i, with the usernames
// the API shows joined as resolver and acker.
const incidentColumns = `i.id, i.title, i.description, i.severity, i.status, i.created_at, i.updated_at,
	i.resolved_at, resolver.username, i.acknowledged_at, acker.username,
	i.dedup_key, i.occurrences, i.last_occurred_at, i.labels, i.version, i.source, i.links, i.details`

// incidentSelect reads incidents from source (the table, or a CTE that
// changed rows) under the alias i, with any extra columns after them.
func incidentSelect(source string, extraColumns ...string) string {
	return `SELECT ` + strings.Join(append([]string{incidentColumns}, extraColumns...), ", ") + `
	FROM ` + source + ` i
	LEFT JOIN users resolver ON resolver.id = i.resolved_by
	LEFT JOIN users acker ON acker.id = i.acknowledged_by`
}

// scanIncident scans incidentColumns, then any extra destinations.
func scanIncident(row interface{ Scan(...any) error }, extra ...any) (incident, error) {
	var (
		inc                 incident
		resolvedAt, ackedAt sql.NullTime
		resolvedBy, ackedBy sql.NullString
		dedupKey            sql.NullString
		labels, links       []byte
	)
	dest := append([]any{&inc.ID, &inc.Title, &inc.Description, &inc.Severity, &inc.Status, &inc.CreatedAt, &inc.UpdatedAt,
		&resolvedAt, &resolvedBy, &ackedAt, &ackedBy, &dedupKey, &inc.Occurrences, &inc.LastOccurredAt, &labels, &inc.Version,
		&inc.Source, &links, &inc.Details}, extra...)
	if err := row.Scan(dest...); err != nil {
		return inc, err
	}
	inc.CreatedAt = inc.CreatedAt.UTC()
	inc.UpdatedAt = inc.UpdatedAt.UTC()
	inc.LastOccurredAt = inc.LastOccurredAt.UTC()
	inc.ResolvedAt = utcOrNil(resolvedAt)
	inc.AcknowledgedAt = utcOrNil(ackedAt)
	inc.ResolvedBy = stringOrNil(resolvedBy)
	inc.AcknowledgedBy = stringOrNil(ackedBy)
	inc.DedupKey = stringOrNil(dedupKey)
	inc.Labels = map[string]string{}
	if err := json.Unmarshal(labels, &inc.Labels); err != nil {
		return inc, fmt.Errorf("incident %d labels: %w", inc.ID, err)
	}
	inc.Links = []link{}
	if err := json.Unmarshal(links, &inc.Links); err != nil {
		return inc, fmt.Errorf("incident %d links: %w", inc.ID, err)
	}
	return inc, nil
}

func utcOrNil(t sql.NullTime) *time.Time {
	if !t.Valid {
		return nil
	}
	u := t.Time.UTC()
	return &u
}

func stringOrNil(s sql.NullString) *string {
	if !s.Valid {
		return nil
	}
	return &s.String
}

// actorRef is who made a change: a user, possibly through an API key, or
// an integration; all nil for the system or an anonymous report.
type actorRef struct {
	UserID        *int64
	KeyID         *int64
	IntegrationID *int64
}

// newIncident is what a report carries.
type newIncident struct {
	By          actorRef
	Title       string
	Description string
	Severity    string
	DedupKey    string // empty: no deduplication
	Labels      map[string]string
	// From an integration: its name, its id (the dedup key's scope), and
	// what its format carries beyond the above.
	Source    string // "" for "api"
	Scope     int64  // 0: the REST API's dedup keys
	Links     []link
	Details   json.RawMessage // nil: {}
	StartedAt *time.Time      // an alert's startsAt: a re-send with the same one counts nothing
	Kind      string          // the integration's type, which the metrics name as the source
}

// reportOutcome says what a report did.
type reportOutcome string

const (
	reportNew      reportOutcome = "new"      // a new incident
	reportExisting reportOutcome = "existing" // counted as an occurrence of an unresolved one
	reportReopened reportOutcome = "reopened" // reopened one resolved within the reopen window
	reportRepeated reportOutcome = "repeated" // an alert sent again: nothing changed
)

// ReportIncident records a report. Without a dedup key it creates an
// incident. With one, a report matching an unresolved incident is counted
// on it (severity only ever raised); one matching an incident resolved less
// than reopenWindow ago reopens it; otherwise a new incident is created.
// Concurrent reports with one key meet in the partial unique index, so they
// create at most one incident.
func (st *store) ReportIncident(ctx context.Context, in newIncident, reopenWindow time.Duration, now time.Time) (incident, reportOutcome, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	var (
		inc     incident
		outcome reportOutcome
	)
	// A reopen can race a concurrent report that created a new incident for
	// the key; the unique index refuses the second unresolved incident and
	// the report runs again, now finding the first.
	for attempt := 0; ; attempt++ {
		err := st.inTx(ctx, func(tx *sql.Tx) (err error) {
			inc, outcome, err = st.report(ctx, tx, in, reopenWindow, now)
			return err
		})
		if !errors.Is(err, errConflict) || attempt == 2 {
			return inc, outcome, err
		}
	}
}

// report is ReportIncident's work inside tx, counted in the metrics once
// tx commits.
func (st *store) report(ctx context.Context, tx *sql.Tx, in newIncident, reopenWindow time.Duration, now time.Time) (incident, reportOutcome, error) {
	inc, outcome, err := st.reportTx(ctx, tx, in, reopenWindow, now)
	if err == nil && st.metrics != nil {
		st.afterCommit(tx, func() { st.metrics.reportedIncident(in, outcome) })
	}
	return inc, outcome, err
}

func (st *store) reportTx(ctx context.Context, tx *sql.Tx, in newIncident, reopenWindow time.Duration, now time.Time) (incident, reportOutcome, error) {
	if in.DedupKey != "" && reopenWindow > 0 {
		reopened, err := st.reopenFlapping(ctx, tx, in, now.Add(-reopenWindow), now)
		if err == nil && reopened != nil && in.StartedAt != nil {
			// Its re-sends must find the start that reopened it.
			_, err = tx.ExecContext(ctx, `UPDATE incidents SET alert_started_at = $2 WHERE id = $1`, reopened.ID, in.StartedAt)
		}
		if err != nil || reopened != nil {
			if reopened != nil {
				return *reopened, reportReopened, err
			}
			return incident{}, "", err
		}
	}
	labels, err := marshalJSON(in.Labels)
	if err != nil {
		return incident{}, "", err
	}
	if in.Links == nil {
		in.Links = []link{}
	}
	links, err := marshalJSON(in.Links)
	if err != nil {
		return incident{}, "", err
	}
	details := in.Details
	if details == nil {
		details = json.RawMessage(`{}`)
	}
	var dedupKey *string
	if in.DedupKey != "" {
		dedupKey = &in.DedupKey
	}
	var integrationID *int64
	if in.Scope > 0 {
		integrationID = &in.Scope
	}
	insert, err := st.prepared(ctx, tx, reportSQL)
	if err != nil {
		return incident{}, "", err
	}
	var inserted bool
	inc, err := scanIncident(insert.QueryRowContext(ctx, in.Title, in.Description, in.Severity, now, dedupKey, labels,
		cmp.Or(in.Source, "api"), integrationID, in.Scope, links, details, in.StartedAt), &inserted)
	if errors.Is(err, sql.ErrNoRows) {
		// The alert was sent again with the same start: the incident stays
		// as it is.
		inc, err = scanIncident(tx.QueryRowContext(ctx, incidentSelect("incidents")+`
			WHERE i.dedup_scope = $1 AND i.dedup_key = $2 AND i.status <> 'resolved'`, in.Scope, in.DedupKey))
		return inc, reportRepeated, err
	}
	if err != nil {
		return incident{}, "", fmt.Errorf("report incident: %w", err)
	}
	outcome, eventType := reportNew, "added"
	if !inserted {
		outcome, eventType = reportExisting, "occurred"
	}
	return inc, outcome, st.appendEvent(ctx, tx, eventType, inc, in.By, eventDetail{}, now)
}

// reportSQL inserts a report, or counts it on the unresolved incident with
// its dedup key (in its scope); i.inserted tells which. An alert sent again
// with the start it had changes nothing and returns no row.
var reportSQL = `WITH reported AS (
			INSERT INTO incidents (title, description, severity, status, created_at, updated_at, last_occurred_at, opened_at, dedup_key, labels,
				source, integration_id, dedup_scope, links, details, alert_started_at)
			VALUES ($1, $2, $3, 'open', $4, $4, $4, $4, $5, $6, $7, $8, $9, $10, $11, $12)
			ON CONFLICT (dedup_scope, dedup_key) WHERE dedup_key IS NOT NULL AND status <> 'resolved' DO UPDATE SET
				occurrences = incidents.occurrences + 1,
				last_occurred_at = EXCLUDED.last_occurred_at,
				severity = CASE WHEN severity_rank(EXCLUDED.severity) > severity_rank(incidents.severity)
					THEN EXCLUDED.severity ELSE incidents.severity END,
				alert_started_at = EXCLUDED.alert_started_at,
				updated_at = EXCLUDED.updated_at,
				version = incidents.version + 1
			WHERE EXCLUDED.alert_started_at IS NULL OR incidents.alert_started_at IS DISTINCT FROM EXCLUDED.alert_started_at
			RETURNING *, xmax = 0 AS inserted)
			` + incidentSelect("reported", "i.inserted")

// reopenFlapping reopens the incident with in's dedup key that was resolved
// after resolvedSince, if there is one and no unresolved incident has the
// key; it returns nil otherwise. The key's unresolved incident is locked
// first: a report that races a resolve then waits for it, and reads the
// incident again once it is resolved, instead of counting on an incident
// that is gone from the unique index by the time it inserts (and creating
// a second one). The row lock on a resolved incident makes concurrent
// reports wait for one reopen and then count as occurrences of it.
func (st *store) reopenFlapping(ctx context.Context, tx *sql.Tx, in newIncident, resolvedSince, now time.Time) (*incident, error) {
	var id int64
	err := tx.QueryRowContext(ctx, `SELECT id FROM incidents WHERE dedup_scope = $1 AND dedup_key = $2 AND status <> 'resolved' FOR UPDATE`,
		in.Scope, in.DedupKey).Scan(&id)
	if err == nil {
		return nil, nil // the report counts on it, which it holds until commit
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("lock unresolved incident: %w", err)
	}
	// A statement of its own, so that its snapshot sees a resolve the lock
	// above waited for.
	err = tx.QueryRowContext(ctx, `SELECT id FROM incidents r
		WHERE dedup_scope = $3 AND dedup_key = $1 AND status = 'resolved' AND resolved_at > $2
		  AND NOT EXISTS (SELECT 1 FROM incidents u WHERE u.dedup_scope = $3 AND u.dedup_key = $1 AND u.status <> 'resolved')
		ORDER BY resolved_at DESC LIMIT 1
		FOR UPDATE`, in.DedupKey, resolvedSince, in.Scope).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("find flapping incident: %w", err)
	}
	// Reopened by the system, or by the integration that reported it.
	inc, err := st.applyTransition(ctx, tx, id, actions["reopen"], actorRef{IntegrationID: in.By.IntegrationID}, nil, "", now, in.Severity)
	return &inc, err
}

// staleError is a failed If-Match: the incident is at another version.
type staleError struct{ version int64 }

func (e *staleError) Error() string { return fmt.Sprintf("incident is at version %d", e.version) }

// transitionError is a transition the incident's status does not allow.
type transitionError struct {
	action action
	status string
}

func (e *transitionError) Error() string {
	return fmt.Sprintf("cannot %s an incident that is %s", e.action.name, e.status)
}

// Transition applies a lifecycle action by actorID to incident id. ifMatch,
// when set, must be the incident's version; note, when not empty, is stored
// with the change. Errors: errNotFound, *staleError, *transitionError, and
// errConflict when reopening would make a second unresolved incident with
// one dedup key. The row lock serializes concurrent transitions, so each
// change happens once and records one event.
func (st *store) Transition(ctx context.Context, id int64, a action, by actorRef, ifMatch *int64, note string, now time.Time) (incident, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	var inc incident
	err := st.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		inc, err = st.applyTransition(ctx, tx, id, a, by, ifMatch, note, now, "")
		return err
	})
	return inc, err
}

// applyTransition locks incident id, checks ifMatch and the status, applies
// a, stores note and records the event. raiseSeverity, when set, counts the
// change as an occurrence of a new report with that severity.
func (st *store) applyTransition(ctx context.Context, tx *sql.Tx, id int64, a action, by actorRef, ifMatch *int64, note string, now time.Time, raiseSeverity string) (incident, error) {
	var (
		cur     lifecycleState
		version int64
	)
	err := tx.QueryRowContext(ctx, `SELECT status, acknowledged_at, acknowledged_by, resolved_at, resolved_by, version
		FROM incidents WHERE id = $1::bigint FOR UPDATE`, id).
		Scan(&cur.Status, &cur.AcknowledgedAt, &cur.AcknowledgedBy, &cur.ResolvedAt, &cur.ResolvedBy, &version)
	if err != nil {
		return incident{}, err
	}
	if ifMatch != nil && *ifMatch != version {
		return incident{}, &staleError{version: version}
	}
	if !slices.Contains(a.from, cur.Status) {
		return incident{}, &transitionError{action: a, status: cur.Status}
	}
	next := a.apply(cur, by.UserID, now)
	occurred := raiseSeverity != ""
	inc, err := scanIncident(tx.QueryRowContext(ctx, `WITH changed AS (
		UPDATE incidents SET status = $2, acknowledged_at = $3, acknowledged_by = $4, resolved_at = $5, resolved_by = $6,
			updated_at = $7, version = version + 1,
			opened_at = CASE WHEN $2 = 'open' THEN $7 ELSE opened_at END,
			occurrences = occurrences + CASE WHEN $8 THEN 1 ELSE 0 END,
			last_occurred_at = CASE WHEN $8 THEN $7 ELSE last_occurred_at END,
			severity = CASE WHEN severity_rank($9) > severity_rank(severity) THEN $9 ELSE severity END
		WHERE id = $1 RETURNING *)
		`+incidentSelect("changed"),
		id, next.Status, next.AcknowledgedAt, next.AcknowledgedBy, next.ResolvedAt, next.ResolvedBy, now, occurred, raiseSeverity))
	if err != nil {
		return incident{}, fmt.Errorf("%s incident: %w", a.name, err)
	}
	var detail eventDetail
	if note != "" {
		n, err := insertNote(ctx, tx, id, note, by.UserID, now)
		if err != nil {
			return incident{}, err
		}
		detail.noteID = &n.ID
	}
	if err := st.appendEvent(ctx, tx, a.event, inc, by, detail, now); err != nil {
		return incident{}, err
	}
	if st.metrics != nil {
		st.afterCommit(tx, func() { st.metrics.transitioned(a, inc) })
	}
	return inc, nil
}

// note is a responder's note on an incident.
type note struct {
	ID         int64     `json:"id"`
	IncidentID int64     `json:"incident_id"`
	Body       string    `json:"body"`
	Author     *string   `json:"author"`
	CreatedAt  time.Time `json:"created_at"`
}

func insertNote(ctx context.Context, tx *sql.Tx, incidentID int64, body string, authorID *int64, now time.Time) (note, error) {
	n := note{IncidentID: incidentID, Body: body}
	// created_at as stored, which PostgreSQL rounds to microseconds.
	err := tx.QueryRowContext(ctx, `WITH inserted AS (
		INSERT INTO incident_notes (incident_id, body, author_id, created_at) VALUES ($1, $2, $3, $4) RETURNING id, author_id, created_at)
		SELECT inserted.id, author.username, inserted.created_at FROM inserted LEFT JOIN users author ON author.id = inserted.author_id`,
		incidentID, body, authorID, now).Scan(&n.ID, &n.Author, &n.CreatedAt)
	if err != nil {
		return note{}, fmt.Errorf("insert note: %w", err)
	}
	n.CreatedAt = n.CreatedAt.UTC()
	return n, nil
}

// AddNote stores a note on incident id and records a "noted" event.
func (st *store) AddNote(ctx context.Context, incidentID int64, body string, by actorRef, now time.Time) (note, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	var n note
	err := st.inTx(ctx, func(tx *sql.Tx) error {
		// The share lock keeps the event's snapshot of the incident current
		// against a concurrent transition.
		inc, err := scanIncident(tx.QueryRowContext(ctx, incidentSelect("incidents")+` WHERE i.id = $1::bigint FOR SHARE OF i`, incidentID))
		if err != nil {
			return err
		}
		if n, err = insertNote(ctx, tx, incidentID, body, by.UserID, now); err != nil {
			return err
		}
		return st.appendEvent(ctx, tx, "noted", inc, by, eventDetail{noteID: &n.ID}, now)
	})
	return n, err
}

// Notes hands the notes on incident id after the note afterID to add,
// oldest first, limit+1 at most: one more than a page, to tell whether more
// follow.
func (st *store) Notes(ctx context.Context, incidentID, afterID int64, limit int, add func(note) (bool, error)) error {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	if err := st.incidentExists(ctx, incidentID); err != nil {
		return err
	}
	return queryEach(ctx, st, `SELECT n.id, n.incident_id, n.body, author.username, n.created_at
		FROM incident_notes n LEFT JOIN users author ON author.id = n.author_id
		WHERE n.incident_id = $1::bigint AND n.id > $2 ORDER BY n.id LIMIT $3`, []any{incidentID, afterID, limit + 1}, func(rows *sql.Rows) (note, error) {
		var n note
		err := rows.Scan(&n.ID, &n.IncidentID, &n.Body, &n.Author, &n.CreatedAt)
		n.CreatedAt = n.CreatedAt.UTC()
		return n, err
	}, add)
}

func (st *store) incidentExists(ctx context.Context, id int64) error {
	var exists bool
	err := st.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM incidents WHERE id = $1::bigint)`, id).Scan(&exists)
	if err == nil && !exists {
		return errNotFound
	}
	return st.mapErr(err)
}

const appendEventSQL = `INSERT INTO incident_events (incident_id, type, actor_id, api_key_id, created_at, data, note_id, integration_id,
		escalation, heartbeat)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`

// eventDetail is what an event carries beyond the incident: the note left
// with it, the escalation step it notified, or the heartbeat it is about.
type eventDetail struct {
	noteID     *int64
	escalation *escalationNotice
	heartbeat  *heartbeat
}

// appendEvent records a change to inc, with inc as it is after the change.
func (st *store) appendEvent(ctx context.Context, tx *sql.Tx, eventType string, inc incident, by actorRef, detail eventDetail, now time.Time) error {
	data, err := marshalJSON(inc)
	if err != nil {
		return err
	}
	var escalation, heartbeat []byte // NULL unless set
	if detail.escalation != nil {
		if escalation, err = marshalJSON(detail.escalation); err != nil {
			return err
		}
	}
	if detail.heartbeat != nil {
		if heartbeat, err = marshalJSON(detail.heartbeat); err != nil {
			return err
		}
	}
	insert, err := st.prepared(ctx, tx, appendEventSQL)
	if err != nil {
		return err
	}
	_, err = insert.ExecContext(ctx, inc.ID, eventType, by.UserID, by.KeyID, now, data, detail.noteID, by.IntegrationID, escalation, heartbeat)
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

// incidentSort is a list order: a key and a direction, always with the id
// as tie-breaker in the same direction.
type incidentSort struct {
	name string // as the API names it: created_at, -severity, ...
	key  string // SQL expression on i; empty for the id alone
	desc bool
}

// sortKey is a page boundary for keyset pagination: the last row's sort
// key (as text PostgreSQL casts back) and id.
type sortKey struct {
	Key string `json:"k,omitempty"`
	ID  int64  `json:"id"`
}

// incidentFilter selects a page of the incident list.
type incidentFilter struct {
	Statuses   []string
	Severities []string
	DedupKey   string
	Labels     [][2]string // each key:value must match
	Query      string      // case-insensitive substring of the title
	Since      *time.Time  // created at or after
	Until      *time.Time  // created before
	Sort       incidentSort
	After      *sortKey // the previous page's last row
	Limit      int
}

// ListIncidents hands one page of incidents to add, and one more if there
// is one, to tell that more follow. Keyset pagination on (sort key, id)
// indexes keeps every page as cheap as the first.
func (st *store) ListIncidents(ctx context.Context, f incidentFilter, add func(incident) (bool, error)) error {
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
	if f.DedupKey != "" {
		where = append(where, "i.dedup_key = "+arg(f.DedupKey))
	}
	for _, kv := range f.Labels {
		pair, _ := marshalJSON(map[string]string{kv[0]: kv[1]})
		where = append(where, "i.labels @> "+arg(string(pair))+"::jsonb")
	}
	if f.Query != "" {
		escaped := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(f.Query)
		where = append(where, "i.title ILIKE '%' || "+arg(escaped)+" || '%'")
	}
	if f.Since != nil {
		where = append(where, "i.created_at >= "+arg(*f.Since))
	}
	if f.Until != nil {
		where = append(where, "i.created_at < "+arg(*f.Until))
	}
	cmp, dir := ">", "ASC"
	if f.Sort.desc {
		cmp, dir = "<", "DESC"
	}
	if f.After != nil {
		if f.Sort.key == "" {
			where = append(where, "i.id "+cmp+" "+arg(f.After.ID)+"::bigint")
		} else {
			// The key is cast to the expression's type by comparing in a row.
			where = append(where, "("+f.Sort.key+", i.id) "+cmp+" ("+arg(f.After.Key)+", "+arg(f.After.ID)+"::bigint)")
		}
	}
	q := incidentSelect("incidents")
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	order := "i.id " + dir
	if f.Sort.key != "" {
		order = f.Sort.key + " " + dir + ", " + order
	}
	q += " ORDER BY " + order + " LIMIT " + arg(f.Limit+1)
	return queryEach(ctx, st, q, args, func(rows *sql.Rows) (incident, error) { return scanIncident(rows) }, add)
}

// incidentStats counts the incidents that need attention, and says how
// fast the team acknowledges and resolves them.
type incidentStats struct {
	Total         int            `json:"total"`
	ByStatus      map[string]int `json:"by_status"`
	BySeverity    map[string]int `json:"by_severity"`
	ResponseTimes responseTimes  `json:"response_times"`
}

// Stats counts open and acknowledged incidents by status and severity, in
// one query.
func (st *store) Stats(ctx context.Context) (incidentStats, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	stats := incidentStats{ByStatus: map[string]int{"open": 0, "acknowledged": 0}, BySeverity: map[string]int{}}
	for _, sev := range severities {
		stats.BySeverity[sev] = 0
	}
	rows, err := st.db.QueryContext(ctx, `SELECT status, severity, count(*) FROM incidents
		WHERE status IN ('open', 'acknowledged') GROUP BY status, severity`)
	if err != nil {
		return stats, st.mapErr(err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			status, severity string
			n                int
		)
		if err := rows.Scan(&status, &severity, &n); err != nil {
			return stats, st.mapErr(err)
		}
		stats.Total += n
		stats.ByStatus[status] += n
		stats.BySeverity[severity] += n
	}
	return stats, st.mapErr(rows.Err())
}

// storedEvent is one row of incident_events: a change to an incident, with
// the incident as it was after the change.
type storedEvent struct {
	Seq        int64
	IncidentID int64
	Type       string
	Actor      *string // username; nil for the system or a deleted user
	ActorKey   *string // the name of the API key the actor used, if any
	// Integration is the name of the integration that made the change, if
	// one did.
	Integration *string
	CreatedAt   time.Time
	Data        json.RawMessage
	Note        *note           // the note left with the change, if any
	Escalation  json.RawMessage // an escalated event's escalationNotice
	Heartbeat   json.RawMessage // a heartbeat_down or heartbeat_up event's heartbeat
}

// LatestEventSeq returns the newest event's sequence number, 0 when none.
func (st *store) LatestEventSeq(ctx context.Context) (int64, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	var seq int64
	err := st.db.QueryRowContext(ctx, `SELECT coalesce(max(id), 0) FROM incident_events`).Scan(&seq)
	return seq, st.mapErr(err)
}

// Snapshot returns the bounds of a current snapshot of the cluster's
// transactions: xmin, the oldest transaction still running, and xmax, the
// first not yet started (pg_current_snapshot, as 64-bit transaction ids).
func (st *store) Snapshot(ctx context.Context) (xmin, xmax int64, err error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	err = st.db.QueryRowContext(ctx, `SELECT pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint
		FROM pg_current_snapshot() s`).Scan(&xmin, &xmax)
	return xmin, xmax, st.mapErr(err)
}

// EventsAfter returns the events with after < seq <= upTo (upTo 0: no
// bound), in sequence order: the stream. It stops at limit events or once
// their payloads pass pageBudget bytes, so that the stream's history is read
// a bounded page at a time; more tells that it stopped for either.
func (st *store) EventsAfter(ctx context.Context, after, upTo int64, limit int) (events []storedEvent, more bool, err error) {
	if upTo <= 0 {
		upTo = 1<<63 - 1
	}
	size := 0
	err = st.events(ctx, eventsAfterWhere, limit, func(e storedEvent) (bool, error) {
		events = append(events, e)
		size += len(e.Data) + len(e.Escalation) + len(e.Heartbeat)
		if e.Note != nil {
			size += len(e.Note.Body)
		}
		more = len(events) == limit || size >= pageBudget
		return !more, nil
	}, after, upTo)
	return events, more, err
}

// IncidentEvents hands the events of incident id after seq after to add,
// in sequence order, limit+1 at most: its timeline.
func (st *store) IncidentEvents(ctx context.Context, incidentID, after int64, limit int, add func(storedEvent) (bool, error)) error {
	if err := st.incidentExists(ctx, incidentID); err != nil {
		return err
	}
	return st.events(ctx, incidentEventsWhere, limit+1, add, incidentID, after)
}

// The two event queries: the stream's range, and an incident's timeline.
const (
	eventsAfterWhere    = `e.id > $1 AND e.id <= $2`
	incidentEventsWhere = `e.incident_id = $1::bigint AND e.id > $2`
)

// eventsSQL reads events matching where ($1 and $2), in order, up to $3.
func eventsSQL(where string) string {
	return `SELECT e.id, e.incident_id, e.type, actor.username, actor_key.name, integration.name, e.created_at, e.data,
			e.escalation, e.heartbeat, n.id, n.body, author.username, n.created_at
		FROM incident_events e
		LEFT JOIN users actor ON actor.id = e.actor_id
		LEFT JOIN api_keys actor_key ON actor_key.id = e.api_key_id
		LEFT JOIN integrations integration ON integration.id = e.integration_id
		LEFT JOIN incident_notes n ON n.id = e.note_id
		LEFT JOIN users author ON author.id = n.author_id
		WHERE ` + where + ` ORDER BY e.id LIMIT $3`
}

// events hands the events matching where, one of the two above, to add.
func (st *store) events(ctx context.Context, where string, limit int, add func(storedEvent) (bool, error), args ...any) error {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	return queryEach(ctx, st, eventsSQL(where), append(args, limit), scanEvent, add)
}

// scanEvent reads one row of eventsSQL.
func scanEvent(rows *sql.Rows) (storedEvent, error) {
	var (
		e          storedEvent
		actor      sql.NullString
		actorKey   sql.NullString
		integ      sql.NullString
		noteID     sql.NullInt64
		noteBody   sql.NullString
		noteAuthor sql.NullString
		noteAt     sql.NullTime
	)
	err := rows.Scan(&e.Seq, &e.IncidentID, &e.Type, &actor, &actorKey, &integ, &e.CreatedAt, &e.Data,
		(*[]byte)(&e.Escalation), (*[]byte)(&e.Heartbeat), &noteID, &noteBody, &noteAuthor, &noteAt)
	e.Actor, e.ActorKey, e.Integration = stringOrNil(actor), stringOrNil(actorKey), stringOrNil(integ)
	e.CreatedAt = e.CreatedAt.UTC()
	if noteID.Valid {
		e.Note = &note{ID: noteID.Int64, IncidentID: e.IncidentID, Body: noteBody.String, Author: stringOrNil(noteAuthor), CreatedAt: noteAt.Time.UTC()}
	}
	return e, err
}
