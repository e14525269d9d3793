package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

var (
	severities = []string{"low", "medium", "high", "critical"}
	statuses   = []string{"open", "acknowledged", "resolved"}
)

// action is a lifecycle transition: the verb of its route, the event it
// records and the statuses it applies to.
type action struct {
	name  string
	event string
	from  []string
}

// actions are the lifecycle: open → acknowledged → open, open or
// acknowledged → resolved → open. Listed in the order 409 bodies name them.
var actions = map[string]action{
	"acknowledge":   {name: "acknowledge", event: "acknowledged", from: []string{"open"}},
	"unacknowledge": {name: "unacknowledge", event: "unacknowledged", from: []string{"acknowledged"}},
	"resolve":       {name: "resolve", event: "resolved", from: []string{"open", "acknowledged"}},
	"reopen":        {name: "reopen", event: "reopened", from: []string{"resolved"}},
}

var actionOrder = []string{"acknowledge", "unacknowledge", "resolve", "reopen"}

// allowedActions lists what may be done to an incident in status.
func allowedActions(status string) []string {
	allowed := []string{}
	for _, name := range actionOrder {
		if slices.Contains(actions[name].from, status) {
			allowed = append(allowed, name)
		}
	}
	return allowed
}

// lifecycleState is the part of an incident a transition changes.
type lifecycleState struct {
	Status         string
	AcknowledgedAt *time.Time
	AcknowledgedBy *int64
	ResolvedAt     *time.Time
	ResolvedBy     *int64
}

// apply returns s after a by actor (nil: by the system). Acknowledgement
// ends with unacknowledge and reopen; a resolved incident keeps who
// acknowledged it.
func (a action) apply(s lifecycleState, actor *int64, now time.Time) lifecycleState {
	switch a.name {
	case "acknowledge":
		s.Status, s.AcknowledgedAt, s.AcknowledgedBy = "acknowledged", &now, actor
	case "unacknowledge":
		s.Status, s.AcknowledgedAt, s.AcknowledgedBy = "open", nil, nil
	case "resolve":
		s.Status, s.ResolvedAt, s.ResolvedBy = "resolved", &now, actor
	case "reopen":
		s = lifecycleState{Status: "open"}
	}
	return s
}

// incidentCreate is the body of POST /api/v1/incidents.
type incidentCreate struct {
	Title       jsonString `json:"title"`
	Description jsonString `json:"description"`
	Severity    jsonString `json:"severity"`
	DedupKey    jsonString `json:"dedup_key"`
	Labels      jsonLabels `json:"labels"`
}

func (in incidentCreate) validate() []fieldError {
	var problems []fieldError
	problems = stringRule{required: true, min: 1, max: 200, notBlank: true}.check(problems, []string{"body", "title"}, in.Title)
	problems = stringRule{max: 10000}.check(problems, []string{"body", "description"}, in.Description)
	problems = stringRule{required: true, oneOf: severities}.check(problems, []string{"body", "severity"}, in.Severity)
	problems = stringRule{min: 1, max: 255, notBlank: true}.check(problems, []string{"body", "dedup_key"}, in.DedupKey)
	return in.Labels.check(problems, []string{"body", "labels"})
}

// handleIncidentCreate handles POST /api/v1/incidents. Scripts report
// without logging in, as they did with the original service. A report with
// a dedup_key that matches an unresolved incident is counted on it (200,
// X-Dedup: existing) or reopens one resolved within REOPEN_WINDOW (200,
// X-Dedup: reopened); otherwise it creates one (201, X-Dedup: new).
func (s *server) handleIncidentCreate(w http.ResponseWriter, r *http.Request) error {
	var in incidentCreate
	if err := readJSON(w, r, &in); err != nil {
		return err
	}
	if err := invalid(in.validate()...); err != nil {
		return err
	}
	if err := s.limitIngest(r); err != nil {
		return err
	}
	inc, outcome, err := s.store.ReportIncident(r.Context(), newIncident{
		By:          principalOf(r).actor(),
		Title:       in.Title.Value,
		Description: in.Description.Value,
		Severity:    in.Severity.Value,
		DedupKey:    in.DedupKey.Value,
		Labels:      in.Labels.values(),
	}, s.cfg.reopenWindow, s.now())
	if err != nil {
		return err
	}
	status := http.StatusOK
	if outcome == reportNew {
		status = http.StatusCreated
	}
	w.Header().Set("X-Dedup", string(outcome))
	return writeIncident(w, status, inc)
}

// limitIngest spends a report from the caller's token bucket: per client IP
// for anonymous callers, per key or user for authenticated ones.
func (s *server) limitIngest(r *http.Request) error {
	p, now := principalOf(r), s.now()
	var wait time.Duration
	switch {
	case p.key != nil:
		wait = s.limits.ingestKey.take("key:"+strconv.FormatInt(p.key.ID, 10), now)
	case p.user != nil:
		wait = s.limits.ingestKey.take("user:"+strconv.FormatInt(p.user.ID, 10), now)
	default:
		wait = s.limits.ingestIP.take(ipLimitKey(s.clientIP(r)), now)
	}
	if wait > 0 {
		return tooMany(wait, tooManyReports)
	}
	return nil
}

// writeIncident writes an incident with its version as ETag.
func writeIncident(w http.ResponseWriter, status int, inc incident) error {
	w.Header().Set("ETag", etag(inc.Version))
	return writeJSON(w, status, inc)
}

func etag(version int64) string { return `"` + strconv.FormatInt(version, 10) + `"` }

// listSorts are the orders of GET /api/v1/incidents, by API name. The
// default, newest first, pages by id alone.
var listSorts, sortNames = sortsOf([]struct{ name, key string }{
	{"created_at", "i.created_at"}, {"severity", "severity_rank(i.severity)"}, {"updated_at", "i.updated_at"},
})

// sortsOf makes the ascending and descending sort of each key, and their
// names in the order error messages list them.
func sortsOf(keys []struct{ name, key string }) (map[string]incidentSort, []string) {
	sorts, names := map[string]incidentSort{}, []string{}
	for _, k := range keys {
		sorts[k.name] = incidentSort{name: k.name, key: k.key}
		sorts["-"+k.name] = incidentSort{name: "-" + k.name, key: k.key, desc: true}
		names = append(names, k.name, "-"+k.name)
	}
	return sorts, names
}

var defaultSort = incidentSort{name: "-id", desc: true}

// sortKeyOf is inc's position in sort, for the next page's cursor.
func sortKeyOf(sort incidentSort, inc incident) sortKey {
	k := sortKey{ID: inc.ID}
	switch strings.TrimPrefix(sort.name, "-") {
	case "created_at":
		k.Key = inc.CreatedAt.Format(time.RFC3339Nano)
	case "updated_at":
		k.Key = inc.UpdatedAt.Format(time.RFC3339Nano)
	case "severity":
		k.Key = strconv.Itoa(slices.Index(severities, inc.Severity) + 1)
	}
	return k
}

// cursor is the opaque page token: the sort it belongs to and a position.
type cursor struct {
	Sort string `json:"s"`
	sortKey
}

func encodeCursor(sort incidentSort, k sortKey) string {
	b, _ := marshalJSON(cursor{Sort: sort.name, sortKey: k})
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(raw string, sort incidentSort) (*sortKey, *fieldError) {
	bad := &fieldError{Type: "value_error", Loc: []string{"query", "cursor"}, Msg: "Value error, not a cursor this list returned"}
	b, err := base64.RawURLEncoding.DecodeString(raw)
	if err != nil {
		return nil, bad
	}
	var c cursor
	if json.Unmarshal(b, &c) != nil || c.ID < 1 {
		return nil, bad
	}
	if c.Sort != sort.name {
		return nil, &fieldError{Type: "value_error", Loc: []string{"query", "cursor"}, Msg: "Value error, the cursor belongs to sort=" + c.Sort}
	}
	if !c.sortKey.canonical(sort) {
		return nil, bad
	}
	return &c.sortKey, nil
}

// canonical checks that k's Key is a position sortKeyOf could have made
// for sort, one PostgreSQL accepts, and writes times in one form: a cursor
// is only base64 and may have been edited.
func (k *sortKey) canonical(sort incidentSort) bool {
	switch strings.TrimPrefix(sort.name, "-") {
	case "created_at", "updated_at":
		t, ok := parseClientTime(k.Key)
		if !ok {
			return false
		}
		k.Key = t.Format(time.RFC3339Nano)
	case "severity":
		rank, err := strconv.Atoi(k.Key)
		return err == nil && rank >= 1 && rank <= len(severities)
	}
	return true
}

// handleIncidentList handles GET /api/v1/incidents.
func (s *server) handleIncidentList(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := incidentFilter{Sort: defaultSort}
	var problems []fieldError
	f.Statuses, problems = queryEnum(problems, q, "status", statuses)
	f.Severities, problems = queryEnum(problems, q, "severity", severities)
	var limit, before int64
	limit, problems = queryInt(problems, q, "limit", 100, 1, 1000)
	before, problems = queryInt(problems, q, "before", 0, 1, 1<<63-1)
	f.Limit = int(limit)
	if v := q.Get("sort"); v != "" {
		sort, ok := listSorts[v]
		if !ok {
			problems = append(problems, fieldError{Type: "enum", Loc: []string{"query", "sort"}, Msg: "Input should be " + quoteList(sortNames)})
		}
		f.Sort = sort
	}
	f.DedupKey = q.Get("dedup_key")
	for _, raw := range q["label"] {
		k, v, ok := strings.Cut(raw, ":")
		if !ok || k == "" {
			problems = append(problems, fieldError{Type: "value_error", Loc: []string{"query", "label"}, Msg: "Value error, a label filter is key:value"})
			continue
		}
		f.Labels = append(f.Labels, [2]string{k, v})
	}
	if v := q.Get("q"); v != "" {
		if utf8.RuneCountInString(v) > 200 {
			problems = append(problems, fieldError{Type: "string_too_long", Loc: []string{"query", "q"}, Msg: "String should have at most 200 characters"})
		}
		f.Query = v
	}
	f.Since, problems = queryTime(problems, q, "since")
	f.Until, problems = queryTime(problems, q, "until")
	if raw := q.Get("cursor"); raw != "" && f.Sort.name != "" {
		after, perr := decodeCursor(raw, f.Sort)
		if perr != nil {
			problems = append(problems, *perr)
		}
		f.After = after
	}
	if before > 0 {
		switch {
		case f.Sort != defaultSort:
			problems = append(problems, fieldError{Type: "value_error", Loc: []string{"query", "before"}, Msg: "Value error, before pages the default order; use cursor with sort"})
		case q.Get("cursor") != "":
			problems = append(problems, fieldError{Type: "value_error", Loc: []string{"query", "before"}, Msg: "Value error, use before or cursor, not both"})
		default:
			f.After = &sortKey{ID: before}
		}
	}
	if err := invalid(problems...); err != nil {
		return err
	}
	p := newPage(f.Limit, func(inc incident) any { return inc })
	if err := s.store.ListIncidents(r.Context(), f, p.add); err != nil {
		return err
	}
	return p.write(w, r, func(last incident) (string, string) {
		if f.Sort == defaultSort && q.Get("cursor") == "" {
			return "before", strconv.FormatInt(last.ID, 10) // the original API's pages
		}
		return "cursor", encodeCursor(f.Sort, sortKeyOf(f.Sort, last))
	})
}

// notFoundAs turns the store's errNotFound into the route's own 404.
func notFoundAs(err error, notFound error) error {
	if errors.Is(err, errNotFound) {
		return notFound
	}
	return err
}

// handleIncidentGet handles GET /api/v1/incidents/{id}.
func (s *server) handleIncidentGet(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	inc, err := s.store.Incident(r.Context(), id)
	if err != nil {
		return notFoundAs(err, errIncidentNotFound)
	}
	return writeIncident(w, http.StatusOK, inc)
}

// maxStatsRange is the longest range of since and until the stats
// measure, so one request cannot scan the whole history.
const maxStatsRange = 366 * 24 * time.Hour

// handleIncidentStats handles GET /api/v1/incidents/stats: the counts of
// incidents that need attention, and response times over the last 7 and
// 30 days before until (default now) and, with since, over [since, until).
func (s *server) handleIncidentStats(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	var problems []fieldError
	since, problems := queryTime(problems, q, "since")
	until, problems := queryTime(problems, q, "until")
	end := s.now().UTC()
	if until != nil {
		end = *until
	}
	if since != nil && len(problems) == 0 { // both times read
		switch {
		case !since.Before(end):
			problems = append(problems, fieldError{Type: "value_error", Loc: []string{"query", "since"},
				Msg: "Value error, since must be before until"})
		case end.Sub(*since) > maxStatsRange:
			problems = append(problems, fieldError{Type: "value_error", Loc: []string{"query", "since"},
				Msg: "Value error, since and until may be at most 366 days apart"})
		}
	}
	if err := invalid(problems...); err != nil {
		return err
	}
	stats, err := s.store.Stats(r.Context())
	if err != nil {
		return err
	}
	periods := [][2]time.Time{{periodStart(end, 7), end}, {periodStart(end, 30), end}}
	if since != nil {
		periods = append(periods, [2]time.Time{*since, end})
	}
	measured, err := s.store.PeriodTimes(r.Context(), periods...)
	if err != nil {
		return err
	}
	rt := &stats.ResponseTimes
	rt.Last7Days, rt.Last30Days = measured[0], measured[1]
	if since != nil {
		rt.Range = &measured[2]
	}
	return writeJSON(w, http.StatusOK, stats)
}

// periodStart is the start of the period of days days before end, no
// earlier than year 1: the API writes no time outside years 1 to 9999.
func periodStart(end time.Time, days int) time.Time {
	start, first := end.AddDate(0, 0, -days), time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	if start.Before(first) {
		return first
	}
	return start
}

// transitionRequest is the optional body of the lifecycle routes.
type transitionRequest struct {
	Note jsonString `json:"note"`
}

// handleIncidentTransition returns the handler of PATCH
// /api/v1/incidents/{id}/<action>.
func (s *server) handleIncidentTransition(name string) func(http.ResponseWriter, *http.Request) error {
	a := actions[name]
	return func(w http.ResponseWriter, r *http.Request) error {
		id, err := pathID(r)
		if err != nil {
			return err
		}
		var in transitionRequest
		if err := readOptionalJSON(w, r, &in); err != nil {
			return err
		}
		if err := invalid(stringRule{min: 1, max: 10000, notBlank: true}.check(nil, []string{"body", "note"}, in.Note)...); err != nil {
			return err
		}
		ifMatch, err := parseIfMatch(r.Header.Get("If-Match"))
		if err != nil {
			return err
		}
		inc, err := s.store.Transition(r.Context(), id, a, principalOf(r).actor(), ifMatch, in.Note.Value, s.now())
		var (
			stale  *staleError
			refuse *transitionError
		)
		switch {
		case errors.As(err, &stale):
			return &httpError{status: http.StatusPreconditionFailed, detail: fmt.Sprintf("Incident has changed: it is at version %d", stale.version),
				header: http.Header{"Etag": {etag(stale.version)}}, extra: map[string]any{"version": stale.version}}
		case errors.As(err, &refuse):
			return transitionConflict(refuse)
		case errors.Is(err, errConflict):
			return errDedupKeyTaken
		case err != nil:
			return notFoundAs(err, errIncidentNotFound)
		}
		if name == "resolve" {
			// The original API's body, unchanged.
			w.Header().Set("ETag", etag(inc.Version))
			return writeJSON(w, http.StatusOK, map[string]string{"message": "Incident resolved", "incident status": "resolved"})
		}
		return writeIncident(w, http.StatusOK, inc)
	}
}

// transitionConflict is the 409 for an action the status does not allow:
// it names the status and what is allowed instead.
func transitionConflict(e *transitionError) error {
	allowed := allowedActions(e.status)
	detail := fmt.Sprintf("Incident is %s; allowed: %s", e.status, strings.Join(allowed, ", "))
	if e.action.event == e.status {
		detail = "Incident already " + e.status // the original API's message for resolve
	}
	return &httpError{status: http.StatusConflict, detail: detail, extra: map[string]any{"status": e.status, "allowed": allowed}}
}

// parseIfMatch reads an If-Match header: a version as an entity tag ("3",
// W/"3" or 3), or * for any. Nil means no check.
func parseIfMatch(v string) (*int64, error) {
	v = strings.TrimSpace(v)
	if v == "" || v == "*" {
		return nil, nil
	}
	n, err := strconv.ParseInt(strings.Trim(strings.TrimPrefix(v, "W/"), `"`), 10, 64)
	if err != nil {
		return nil, errBadIfMatch
	}
	return &n, nil
}

// noteCreate is the body of POST /api/v1/incidents/{id}/notes.
type noteCreate struct {
	Body jsonString `json:"body"`
}

// handleNoteCreate handles POST /api/v1/incidents/{id}/notes.
func (s *server) handleNoteCreate(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	var in noteCreate
	if err := readJSON(w, r, &in); err != nil {
		return err
	}
	if err := invalid(stringRule{required: true, min: 1, max: 10000, notBlank: true}.check(nil, []string{"body", "body"}, in.Body)...); err != nil {
		return err
	}
	n, err := s.store.AddNote(r.Context(), id, in.Body.Value, principalOf(r).actor(), s.now())
	if err != nil {
		return notFoundAs(err, errIncidentNotFound)
	}
	return writeJSON(w, http.StatusCreated, n)
}

// handleNoteList handles GET /api/v1/incidents/{id}/notes.
func (s *server) handleNoteList(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	limit, after, err := pageParams(r.URL.Query())
	if err != nil {
		return err
	}
	p := newPage(limit, func(n note) any { return n })
	if err := s.store.Notes(r.Context(), id, after, limit, p.add); err != nil {
		return notFoundAs(err, errIncidentNotFound)
	}
	return p.write(w, r, nextAfter(func(n note) int64 { return n.ID }))
}

// handleIncidentEvents handles GET /api/v1/incidents/{id}/events: the
// incident's timeline, oldest first.
func (s *server) handleIncidentEvents(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	limit, after, err := pageParams(r.URL.Query())
	if err != nil {
		return err
	}
	p := newPage(limit, func(e storedEvent) any { return newEventView(e) })
	if err := s.store.IncidentEvents(r.Context(), id, after, limit, p.add); err != nil {
		return notFoundAs(err, errIncidentNotFound)
	}
	return p.write(w, r, nextAfter(func(e storedEvent) int64 { return e.Seq }))
}
