package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

func TestTransitionMatrix(t *testing.T) {
	ts := newTestServer(t)
	token := ts.register(t, "oncall", "password1")
	for _, tt := range []struct {
		from, action string
		wantStatus   int
		wantDetail   string // for 409s
		wantAfter    string // status after a 200
	}{
		{"open", "acknowledge", 200, "", "acknowledged"},
		{"open", "unacknowledge", 409, "Incident is open; allowed: acknowledge, resolve", ""},
		{"open", "resolve", 200, "", "resolved"},
		{"open", "reopen", 409, "Incident is open; allowed: acknowledge, resolve", ""},
		{"acknowledged", "acknowledge", 409, "Incident already acknowledged", ""},
		{"acknowledged", "unacknowledge", 200, "", "open"},
		{"acknowledged", "resolve", 200, "", "resolved"},
		{"acknowledged", "reopen", 409, "Incident is acknowledged; allowed: unacknowledge, resolve", ""},
		{"resolved", "acknowledge", 409, "Incident is resolved; allowed: reopen", ""},
		{"resolved", "unacknowledge", 409, "Incident is resolved; allowed: reopen", ""},
		{"resolved", "resolve", 409, "Incident already resolved", ""},
		{"resolved", "reopen", 200, "", "open"},
	} {
		t.Run(tt.from+" "+tt.action, func(t *testing.T) {
			inc := ts.incidentIn(t, tt.from, token)
			r := ts.patch(t, inc.ID, tt.action, token, "")
			r.mustStatus(t, tt.action, tt.wantStatus)
			after := ts.getIncident(t, inc.ID)
			if tt.wantStatus == http.StatusConflict {
				var body struct {
					Detail  string   `json:"detail"`
					Status  string   `json:"status"`
					Allowed []string `json:"allowed"`
				}
				r.json(t, &body)
				allowed := map[string][]string{"open": {"acknowledge", "resolve"}, "acknowledged": {"unacknowledge", "resolve"}, "resolved": {"reopen"}}[tt.from]
				if body.Detail != tt.wantDetail || body.Status != tt.from || !reflect.DeepEqual(body.Allowed, allowed) {
					t.Errorf("409 body = %+v, want detail %q, status %s, allowed %v", body, tt.wantDetail, tt.from, allowed)
				}
				if after.Version != inc.Version || after.Status != tt.from {
					t.Errorf("refused %s changed the incident: %+v", tt.action, after)
				}
				return
			}
			if after.Status != tt.wantAfter || after.Version != inc.Version+1 {
				t.Errorf("after %s: status %s version %d, want %s version %d", tt.action, after.Status, after.Version, tt.wantAfter, inc.Version+1)
			}
			if r.header.Get("ETag") != etag(after.Version) {
				t.Errorf("ETag = %q, want %q", r.header.Get("ETag"), etag(after.Version))
			}
		})
	}
	for _, action := range []string{"acknowledge", "unacknowledge", "reopen"} {
		r := ts.request(t, "PATCH", "/api/v1/incidents/1/"+action, "")
		r.mustStatus(t, action+" without a token", http.StatusUnauthorized)
		r = ts.patch(t, 987654, action, token, "")
		r.mustStatus(t, action+" of an unknown incident", http.StatusNotFound)
		if d := r.detail(t); d != "Incident not found" {
			t.Errorf("%s detail = %v, want Incident not found", action, d)
		}
		ts.patch(t, 0, action, token, "").mustStatus(t, action+" of id 0", http.StatusNotFound)
		ts.request(t, "PATCH", "/api/v1/incidents/x/"+action, "", bearer(token)...).mustStatus(t, action+" of a bad id", http.StatusUnprocessableEntity)
	}
}

func TestTransitionRecordsWhoAndWhen(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.register(t, "alice", "password1")
	bob := ts.register(t, "bob", "password2")
	inc := ts.createIncident(t, "who", "medium")

	ts.clock.Advance(time.Minute)
	ackAt := ts.clock.Now()
	var got incident
	ts.patch(t, inc.ID, "acknowledge", alice, "").mustStatus(t, "acknowledge", http.StatusOK).json(t, &got)
	if got.AcknowledgedBy == nil || *got.AcknowledgedBy != "alice" || !got.AcknowledgedAt.Equal(ackAt) || !got.UpdatedAt.Equal(ackAt) {
		t.Errorf("acknowledged = %+v, want by alice at %v", got, ackAt)
	}
	ts.patch(t, inc.ID, "unacknowledge", bob, "").mustStatus(t, "unacknowledge", http.StatusOK).json(t, &got)
	if got.AcknowledgedBy != nil || got.AcknowledgedAt != nil || got.Status != "open" {
		t.Errorf("unacknowledged = %+v, want acknowledgement cleared", got)
	}
	ts.patch(t, inc.ID, "acknowledge", bob, "").mustStatus(t, "acknowledge again", http.StatusOK)
	ts.clock.Advance(time.Minute)
	ts.patch(t, inc.ID, "resolve", alice, "").mustStatus(t, "resolve", http.StatusOK)
	got = ts.getIncident(t, inc.ID)
	if *got.ResolvedBy != "alice" || !got.ResolvedAt.Equal(ts.clock.Now()) || *got.AcknowledgedBy != "bob" {
		t.Errorf("resolved = %+v, want resolved by alice, acknowledged by bob kept", got)
	}
	ts.patch(t, inc.ID, "reopen", bob, "").mustStatus(t, "reopen", http.StatusOK).json(t, &got)
	if got.ResolvedAt != nil || got.ResolvedBy != nil || got.AcknowledgedBy != nil || got.Status != "open" {
		t.Errorf("reopened = %+v, want resolved and acknowledged cleared", got)
	}

	var timeline []eventView
	ts.request(t, "GET", fmt.Sprintf("/api/v1/incidents/%d/events", inc.ID), "").mustStatus(t, "timeline", http.StatusOK).json(t, &timeline)
	var summary []string
	for _, e := range timeline {
		who := "system"
		if e.Actor != nil {
			who = e.Actor.User
		}
		var data incident
		json.Unmarshal(e.Data, &data)
		summary = append(summary, e.Type+" by "+who+" → "+data.Status)
	}
	want := []string{
		"added by system → open",
		"acknowledged by alice → acknowledged",
		"unacknowledged by bob → open",
		"acknowledged by bob → acknowledged",
		"resolved by alice → resolved",
		"reopened by bob → open",
	}
	if !reflect.DeepEqual(summary, want) {
		t.Errorf("timeline = %q, want %q", summary, want)
	}
	for i := 1; i < len(timeline); i++ {
		if timeline[i].Seq <= timeline[i-1].Seq {
			t.Errorf("timeline not in seq order: %d then %d", timeline[i-1].Seq, timeline[i].Seq)
		}
	}
}

func TestTransitionNoteAndBody(t *testing.T) {
	ts := newTestServer(t)
	token := ts.register(t, "oncall", "password1")
	inc := ts.createIncident(t, "noted", "low")
	for _, tt := range []struct {
		name, body string
		wantTypes  []string
	}{
		{"blank note", `{"note":"  "}`, []string{"string_too_short@body.note"}},
		{"long note", `{"note":"` + strings.Repeat("n", 10001) + `"}`, []string{"string_too_long@body.note"}},
		{"note not a string", `{"note":42}`, []string{"string_type@body.note"}},
		{"not JSON", `{"note":`, []string{"json_invalid@body"}},
		{"not an object", `["note"]`, []string{"model_attributes_type@body"}},
	} {
		ts.patch(t, inc.ID, "acknowledge", token, tt.body).mustProblems(t, tt.name, tt.wantTypes...)
	}
	if got := ts.getIncident(t, inc.ID); got.Status != "open" {
		t.Fatalf("a refused request changed the status to %s", got.Status)
	}

	ts.patch(t, inc.ID, "acknowledge", token, `{"note":"looking at the disk"}`).mustStatus(t, "acknowledge with note", http.StatusOK)
	ts.patch(t, inc.ID, "unacknowledge", token, `{}`).mustStatus(t, "empty object body", http.StatusOK)
	ts.patch(t, inc.ID, "resolve", token, `{"note":null}`).mustStatus(t, "null note", http.StatusOK)

	var notes []note
	ts.request(t, "GET", fmt.Sprintf("/api/v1/incidents/%d/notes", inc.ID), "").mustStatus(t, "notes", http.StatusOK).json(t, &notes)
	if len(notes) != 1 || notes[0].Body != "looking at the disk" || *notes[0].Author != "oncall" {
		t.Fatalf("notes = %+v, want the acknowledgement's note", notes)
	}
	var timeline []eventView
	ts.request(t, "GET", fmt.Sprintf("/api/v1/incidents/%d/events", inc.ID), "").json(t, &timeline)
	if timeline[1].Type != "acknowledged" || timeline[1].Note == nil || timeline[1].Note.ID != notes[0].ID {
		t.Errorf("acknowledged event = %+v, want it to carry the note", timeline[1])
	}
	if len(timeline) != 4 || timeline[2].Note != nil {
		t.Errorf("timeline = %+v, want 4 events, only the acknowledgement with a note", timeline)
	}
}

func TestIfMatch(t *testing.T) {
	ts := newTestServer(t)
	token := ts.register(t, "oncall", "password1")
	inc := ts.createIncident(t, "etag", "low")
	r := ts.request(t, "GET", fmt.Sprintf("/api/v1/incidents/%d", inc.ID), "")
	tag := r.header.Get("ETag")
	if tag != `"1"` {
		t.Fatalf("ETag of a new incident = %q, want \"1\"", tag)
	}
	ts.patch(t, inc.ID, "acknowledge", token, "", "If-Match", tag).mustStatus(t, "acknowledge with the current ETag", http.StatusOK)

	r = ts.patch(t, inc.ID, "resolve", token, "", "If-Match", tag)
	r.mustStatus(t, "resolve with a stale ETag", http.StatusPreconditionFailed)
	var body map[string]any
	r.json(t, &body)
	if body["detail"] != "Incident has changed: it is at version 2" || body["version"] != float64(2) || r.header.Get("ETag") != `"2"` {
		t.Errorf("412 = %v with ETag %q, want version 2", body, r.header.Get("ETag"))
	}
	if got := ts.getIncident(t, inc.ID); got.Status != "acknowledged" {
		t.Errorf("a 412 changed the status to %s", got.Status)
	}
	ts.patch(t, inc.ID, "unacknowledge", token, "", "If-Match", "garbage").mustStatus(t, "unparseable If-Match", http.StatusPreconditionFailed)
	ts.patch(t, inc.ID, "unacknowledge", token, "", "If-Match", `W/"2"`).mustStatus(t, "weak current ETag", http.StatusOK)
	ts.patch(t, inc.ID, "resolve", token, "", "If-Match", "*").mustStatus(t, "If-Match *", http.StatusOK)
}

func TestConcurrentAcknowledges(t *testing.T) {
	ts := newTestServer(t)
	var tokens []string
	for i := range 6 {
		tokens = append(tokens, ts.register(t, fmt.Sprintf("responder%d", i), "password1"))
	}
	inc := ts.createIncident(t, "race to ack", "critical")
	count := statusCounts(inParallel(t, len(tokens), func(t testing.TB, i int) response {
		return ts.patch(t, inc.ID, "acknowledge", tokens[i], "")
	}))
	if count[http.StatusOK] != 1 || count[http.StatusConflict] != len(tokens)-1 {
		t.Errorf("statuses = %v, want one 200 and the rest 409", count)
	}
	var events int
	ts.st.db.QueryRow(`SELECT count(*) FROM incident_events WHERE incident_id = $1 AND type = 'acknowledged'`, inc.ID).Scan(&events)
	if got := ts.getIncident(t, inc.ID); events != 1 || got.Version != 2 {
		t.Errorf("acknowledged events = %d, version = %d; want 1 and 2", events, got.Version)
	}
}

func TestDedupParallel(t *testing.T) {
	ts := newTestServer(t)
	const n = 50
	responses := inParallel(t, n, func(t testing.TB, _ int) response {
		r, _ := ts.report(t, "host-1/disk", "high")
		return r
	})
	count := map[string]int{}
	for _, r := range responses {
		count[fmt.Sprintf("%d %s", r.status, r.header.Get("X-Dedup"))]++
	}
	if count["201 new"] != 1 || count["200 existing"] != n-1 {
		t.Errorf("responses = %v, want one 201 new and %d 200 existing", count, n-1)
	}
	var incidents, occurrences, added, occurred int
	ts.st.db.QueryRow(`SELECT count(*), max(occurrences) FROM incidents WHERE dedup_key = 'host-1/disk'`).Scan(&incidents, &occurrences)
	ts.st.db.QueryRow(`SELECT count(*) FILTER (WHERE type = 'added'), count(*) FILTER (WHERE type = 'occurred') FROM incident_events`).Scan(&added, &occurred)
	if incidents != 1 || occurrences != n || added != 1 || occurred != n-1 {
		t.Errorf("incidents = %d, occurrences = %d, events added/occurred = %d/%d; want 1, %d, 1/%d", incidents, occurrences, added, occurred, n, n-1)
	}
}

// A report that races a resolve ends as some serial order of the two
// would: counted on the open incident, or reopening it (it was resolved a
// moment ago, well within REOPEN_WINDOW); never a second incident.
func TestReportRacingResolveReopens(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.rateLimits = false })
	token := ts.register(t, "oncall", "password1")
	const rounds, reports = 20, 10
	for round := range rounds {
		key := fmt.Sprintf("race/%d", round)
		r, inc := ts.report(t, key, "high")
		r.mustStatus(t, "first report", http.StatusCreated)
		responses := inParallel(t, reports+1, func(t testing.TB, i int) response {
			if i == 0 {
				return ts.patch(t, inc.ID, "resolve", token, "")
			}
			r, _ := ts.report(t, key, "high")
			return r
		})
		responses[0].mustStatus(t, "resolve", http.StatusOK)
		outcomes := map[string]int{}
		for _, r := range responses[1:] {
			outcomes[fmt.Sprintf("%d %s", r.status, r.header.Get("X-Dedup"))]++
		}
		var incidents, occurrences int
		var status string
		ts.st.db.QueryRow(`SELECT count(*), max(occurrences), max(status) FROM incidents WHERE dedup_key = $1`, key).Scan(&incidents, &occurrences, &status)
		if incidents != 1 || outcomes["201 new"] != 0 || occurrences != reports+1 {
			t.Fatalf("round %d: %d incidents with the key, %d occurrences, reports answered %v; want 1 incident with %d occurrences and no 201 new",
				round, incidents, occurrences, outcomes, reports+1)
		}
		// Reopened exactly once if any report came after the resolve.
		if reopened := outcomes["200 reopened"]; reopened > 1 || (reopened == 1) != (status == "open") {
			t.Fatalf("round %d: reports answered %v and the incident is %s; want one reopen exactly when it ends open", round, outcomes, status)
		}
	}
}

func TestDedupSeverityAndReopenWindow(t *testing.T) {
	ts := newTestServer(t)
	token := ts.register(t, "oncall", "password1")

	r, first := ts.report(t, "db/replication", "low")
	r.mustStatus(t, "first report", http.StatusCreated)
	ts.clock.Advance(time.Second)
	for _, tt := range []struct{ severity, want string }{{"high", "high"}, {"medium", "high"}, {"critical", "critical"}, {"low", "critical"}} {
		r, inc := ts.report(t, "db/replication", tt.severity)
		r.mustStatus(t, "repeat report", http.StatusOK)
		if r.header.Get("X-Dedup") != "existing" || inc.ID != first.ID || inc.Severity != tt.want {
			t.Errorf("report %s: %s id %d severity %s, want existing %d %s", tt.severity, r.header.Get("X-Dedup"), inc.ID, inc.Severity, first.ID, tt.want)
		}
	}
	got := ts.getIncident(t, first.ID)
	if got.Occurrences != 5 || !got.LastOccurredAt.Equal(ts.clock.Now()) || got.Title != "disk full" {
		t.Errorf("after 5 reports: %+v, want occurrences 5, last_occurred_at now", got)
	}
	// Acknowledged incidents are not resolved: still deduplicated.
	ts.patch(t, first.ID, "acknowledge", token, "").mustStatus(t, "acknowledge", http.StatusOK)
	if r, inc := ts.report(t, "db/replication", "low"); inc.ID != first.ID || inc.Status != "acknowledged" {
		t.Errorf("report on an acknowledged incident: %d %+v, want it counted", r.status, inc)
	}

	// Resolved 4 minutes ago: it flaps, so the report reopens it.
	ts.patch(t, first.ID, "resolve", token, "").mustStatus(t, "resolve", http.StatusOK)
	ts.clock.Advance(4 * time.Minute)
	r, reopened := ts.report(t, "db/replication", "low")
	r.mustStatus(t, "report within the window", http.StatusOK)
	if r.header.Get("X-Dedup") != "reopened" || reopened.ID != first.ID || reopened.Status != "open" || reopened.ResolvedAt != nil || reopened.Occurrences != 7 {
		t.Errorf("within the window: %s %+v, want the same incident reopened", r.header.Get("X-Dedup"), reopened)
	}
	var timeline []eventView
	ts.request(t, "GET", fmt.Sprintf("/api/v1/incidents/%d/events", first.ID), "").json(t, &timeline)
	if last := timeline[len(timeline)-1]; last.Type != "reopened" || last.Actor != nil {
		t.Errorf("last event = %s by %v, want reopened by the system (null actor)", last.Type, last.Actor)
	}

	// Resolved 6 minutes ago: a new incident.
	ts.patch(t, first.ID, "resolve", token, "").mustStatus(t, "resolve again", http.StatusOK)
	ts.clock.Advance(6 * time.Minute)
	r, fresh := ts.report(t, "db/replication", "medium")
	r.mustStatus(t, "report after the window", http.StatusCreated)
	if r.header.Get("X-Dedup") != "new" || fresh.ID == first.ID || fresh.Occurrences != 1 {
		t.Errorf("after the window: %s %+v, want a new incident", r.header.Get("X-Dedup"), fresh)
	}
	if old := ts.getIncident(t, first.ID); old.Status != "resolved" {
		t.Errorf("the old incident is %s, want it left resolved", old.Status)
	}
	// Reopening the old one by hand now would make two unresolved incidents with one key.
	r = ts.patch(t, first.ID, "reopen", token, "")
	r.mustStatus(t, "manual reopen with an unresolved twin", http.StatusConflict)

	disabled := newTestServer(t, func(c *config) { c.reopenWindow = 0 })
	dtoken := disabled.register(t, "oncall", "password1")
	_, a := disabled.report(t, "k", "low")
	disabled.patch(t, a.ID, "resolve", dtoken, "").mustStatus(t, "resolve", http.StatusOK)
	if r, b := disabled.report(t, "k", "low"); r.status != http.StatusCreated || b.ID == a.ID {
		t.Errorf("with REOPEN_WINDOW=0 a report right after resolve = %d id %d, want a new incident", r.status, b.ID)
	}
}

func TestReportValidation(t *testing.T) {
	ts := newTestServer(t)
	tooMany := map[string]string{}
	for i := range 65 {
		tooMany[fmt.Sprintf("k%d", i)] = "v"
	}
	many, _ := json.Marshal(tooMany)
	for _, tt := range []struct {
		name      string
		extra     string
		wantTypes []string
	}{
		{"blank dedup_key", `"dedup_key":" "`, []string{"string_too_short@body.dedup_key"}},
		{"long dedup_key", `"dedup_key":"` + strings.Repeat("k", 256) + `"`, []string{"string_too_long@body.dedup_key"}},
		{"dedup_key not a string", `"dedup_key":7`, []string{"string_type@body.dedup_key"}},
		{"labels not an object", `"labels":["a"]`, []string{"dict_type@body.labels"}},
		{"too many labels", `"labels":` + string(many), []string{"too_long@body.labels"}},
		{"label value not a string", `"labels":{"env":1}`, []string{"string_type@body.labels.env"}},
		{"label key with a colon", `"labels":{"a:b":"c"}`, []string{"value_error@body.labels.a:b"}},
		{"empty label key", `"labels":{"":"c"}`, []string{"value_error@body.labels."}},
		{"long label key", `"labels":{"` + strings.Repeat("k", 101) + `":"c"}`, []string{"value_error@body.labels." + strings.Repeat("k", 101)}},
		{"long label value", `"labels":{"env":"` + strings.Repeat("v", 1001) + `"}`, []string{"string_too_long@body.labels.env"}},
		{"several labels at once", `"labels":{"a":1,"b":null}`, []string{"string_type@body.labels.a", "string_type@body.labels.b"}},
	} {
		ts.request(t, "POST", "/api/v1/incidents", `{"title":"t","severity":"low",`+tt.extra+`}`).mustProblems(t, tt.name, tt.wantTypes...)
	}
	r := ts.request(t, "POST", "/api/v1/incidents", `{"title":"t","severity":"low","labels":{"env":"prod","team":"db"},"dedup_key":null}`)
	r.mustStatus(t, "labels", http.StatusCreated)
	var inc incident
	r.json(t, &inc)
	if !reflect.DeepEqual(inc.Labels, map[string]string{"env": "prod", "team": "db"}) || inc.DedupKey != nil {
		t.Errorf("created = %+v, want the labels and no dedup key", inc)
	}
}

func TestListFilters(t *testing.T) {
	ts := newTestServer(t)
	ts.register(t, "oncall", "password1")
	post := func(body string) incident {
		var inc incident
		ts.request(t, "POST", "/api/v1/incidents", body).json(t, &inc)
		return inc
	}
	prodDB := post(`{"title":"Replication LAG on db-1","severity":"high","labels":{"env":"prod","team":"db"},"dedup_key":"db-1/lag"}`)
	ts.clock.Advance(time.Hour)
	stagingDB := post(`{"title":"replication broken","severity":"low","labels":{"env":"staging","team":"db"}}`)
	ts.clock.Advance(time.Hour)
	prodWeb := post(`{"title":"5xx on web_1 100%","severity":"critical","labels":{"env":"prod","team":"web"}}`)
	token := ts.login(t, "oncall", "password1") // the clock moved past the registration token's expiry
	ts.patch(t, stagingDB.ID, "acknowledge", token, "").mustStatus(t, "acknowledge", http.StatusOK)

	ids := func(query string) []int64 {
		t.Helper()
		var list []incident
		ts.request(t, "GET", "/api/v1/incidents?"+query, "").mustStatus(t, "list ?"+query, http.StatusOK).json(t, &list)
		out := []int64{}
		for _, inc := range list {
			out = append(out, inc.ID)
		}
		return out
	}
	since := prodDB.CreatedAt.Add(30 * time.Minute).Format(time.RFC3339)
	until := prodWeb.CreatedAt.Format(time.RFC3339Nano)
	for _, tt := range []struct {
		query string
		want  []int64
	}{
		{"label=env:prod", []int64{prodWeb.ID, prodDB.ID}},
		{"label=env:prod&label=team:db", []int64{prodDB.ID}},
		{"label=team:db", []int64{stagingDB.ID, prodDB.ID}},
		{"label=env:nowhere", []int64{}},
		{"q=replication", []int64{stagingDB.ID, prodDB.ID}},
		{"q=REPLICATION+lag", []int64{prodDB.ID}},
		{"q=100%25", []int64{prodWeb.ID}}, // % is literal
		{"q=web_1", []int64{prodWeb.ID}},  // _ is literal
		{"q=web%5C", []int64{}},           // a backslash is literal too
		{"status=acknowledged", []int64{stagingDB.ID}},
		{"status=open&label=env:prod", []int64{prodWeb.ID, prodDB.ID}},
		{"dedup_key=db-1/lag", []int64{prodDB.ID}},
		{"since=" + since, []int64{prodWeb.ID, stagingDB.ID}},
		{"until=" + until, []int64{stagingDB.ID, prodDB.ID}},
		{"since=" + since + "&until=" + until, []int64{stagingDB.ID}},
		{"sort=severity", []int64{stagingDB.ID, prodDB.ID, prodWeb.ID}},
		{"sort=-severity", []int64{prodWeb.ID, prodDB.ID, stagingDB.ID}},
		{"sort=created_at", []int64{prodDB.ID, stagingDB.ID, prodWeb.ID}},
		{"sort=-updated_at", []int64{prodWeb.ID, stagingDB.ID, prodDB.ID}},
	} {
		if got := ids(tt.query); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("?%s = %v, want %v", tt.query, got, tt.want)
		}
	}
	for _, tt := range []struct {
		query     string
		wantTypes []string
	}{
		{"sort=title", []string{"enum@query.sort"}},
		{"label=noColon", []string{"value_error@query.label"}},
		{"since=yesterday", []string{"datetime_parsing@query.since"}},
		{"until=2026-13-01T00:00:00Z", []string{"datetime_parsing@query.until"}},
		{"cursor=garbage!", []string{"value_error@query.cursor"}},
		// Cursors are only base64: edited ones are refused, not sent to
		// PostgreSQL to fail there.
		{"sort=severity&cursor=" + editedCursor("severity", "2147483648"), []string{"value_error@query.cursor"}},
		{"sort=severity&cursor=" + editedCursor("severity", "0"), []string{"value_error@query.cursor"}},
		{"sort=severity&cursor=" + editedCursor("severity", "2026-01-01T00:00:00Z"), []string{"value_error@query.cursor"}},
		{"sort=created_at&cursor=" + editedCursor("created_at", "0000-01-01T00:00:00Z"), []string{"value_error@query.cursor"}},
		{"sort=-updated_at&cursor=" + editedCursor("-updated_at", "3"), []string{"value_error@query.cursor"}},
		// ';' and a stray '%' are characters, as the original read them,
		// not parts Go would drop with the filter in them.
		{"status=open;resolved", []string{"enum@query.status"}},
		{"severity=%zz", []string{"enum@query.severity"}},
		// A query string Go cannot read whole would otherwise lose its
		// filters silently.
		{"status=resolved" + strings.Repeat("&x=1", 10001), []string{"value_error@query"}},
		{"sort=severity&before=5", []string{"value_error@query.before"}},
		{"q=" + strings.Repeat("q", 201), []string{"string_too_long@query.q"}},
		{"status=acknowledged,closed", []string{"enum@query.status"}},
	} {
		ts.request(t, "GET", "/api/v1/incidents?"+tt.query, "").mustProblems(t, "?"+tt.query, tt.wantTypes...)
	}
	// A cursor only works with the sort that made it.
	link := nextLink(t, ts.request(t, "GET", "/api/v1/incidents?sort=severity&limit=1", ""))
	u, err := url.Parse(link)
	if err != nil || u.Query().Get("cursor") == "" {
		t.Fatalf("next link %q has no cursor", link)
	}
	r := ts.request(t, "GET", "/api/v1/incidents?sort=created_at&cursor="+url.QueryEscape(u.Query().Get("cursor")), "")
	r.mustStatus(t, "cursor of another sort", http.StatusUnprocessableEntity)
	if !strings.Contains(string(r.body), "the cursor belongs to sort=severity") {
		t.Errorf("cursor of another sort: %s", r.body)
	}
}

// A ';' and a '%' without two hex digits are plain characters of a value,
// as the original service read them.
func TestQueryStringReadAsTheOriginal(t *testing.T) {
	ts := newTestServer(t)
	semicolon := ts.createIncident(t, "cpu;load at 100%", "high")
	ts.createIncident(t, "cpu", "low")
	for _, q := range []string{"q=cpu;load", "q=100%", "q=load%20at%20100%25"} {
		var list []incident
		ts.request(t, "GET", "/api/v1/incidents?"+q, "").mustStatus(t, "?"+q, http.StatusOK).json(t, &list)
		if len(list) != 1 || list[0].ID != semicolon.ID {
			t.Errorf("?%s found %d incidents, want the one titled %q", q, len(list), semicolon.Title)
		}
	}
}

// editedCursor is a cursor as a client could forge it.
func editedCursor(sort, key string) string {
	return base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, `{"s":%q,"k":%q,"id":2}`, sort, key))
}

// TestSortPagination walks every sort over a few hundred incidents with
// equal keys, page by page, and checks nothing repeats or goes missing.
func TestSortPagination(t *testing.T) {
	ts := newTestServer(t)
	// Equal created_at and severity for many rows: the id must break ties.
	if _, err := ts.st.db.Exec(`INSERT INTO incidents (title, severity, created_at, updated_at, last_occurred_at)
		SELECT 'bulk ' || g, (ARRAY['low','medium','high','critical'])[1 + g % 4],
		       timestamptz '2026-01-01' + (g / 10) * interval '1 minute',
		       timestamptz '2026-02-01' + (g % 7) * interval '1 second',
		       now()
		FROM generate_series(1, 240) g`); err != nil {
		t.Fatal(err)
	}
	var all []incident
	ts.request(t, "GET", "/api/v1/incidents?limit=1000", "").json(t, &all)
	rank := func(sev string) int { return slices.Index(severities, sev) }
	less := map[string]func(a, b incident) bool{
		"created_at": func(a, b incident) bool {
			return a.CreatedAt.Before(b.CreatedAt) || (a.CreatedAt.Equal(b.CreatedAt) && a.ID < b.ID)
		},
		"severity": func(a, b incident) bool {
			return rank(a.Severity) < rank(b.Severity) || (a.Severity == b.Severity && a.ID < b.ID)
		},
		"updated_at": func(a, b incident) bool {
			return a.UpdatedAt.Before(b.UpdatedAt) || (a.UpdatedAt.Equal(b.UpdatedAt) && a.ID < b.ID)
		},
	}
	for _, name := range []string{"created_at", "-created_at", "severity", "-severity", "updated_at", "-updated_at"} {
		t.Run(name, func(t *testing.T) {
			want := slices.Clone(all)
			cmp := less[strings.TrimPrefix(name, "-")]
			sort.Slice(want, func(i, j int) bool {
				if strings.HasPrefix(name, "-") {
					return cmp(want[j], want[i])
				}
				return cmp(want[i], want[j])
			})
			got := walk(t, ts, "/api/v1/incidents?limit=17&sort="+name)
			if len(got) != len(want) {
				t.Fatalf("walked %d incidents, want %d", len(got), len(want))
			}
			for i := range want {
				if got[i] != want[i].ID {
					t.Fatalf("position %d: id %d, want %d", i, got[i], want[i].ID)
				}
			}
		})
	}
	// The default order pages with before (the original API) and with cursor.
	if got := walk(t, ts, "/api/v1/incidents?limit=13"); len(got) != 240 {
		t.Errorf("default walk = %d incidents, want 240", len(got))
	}
}

func TestNotes(t *testing.T) {
	ts := newTestServer(t)
	token := ts.register(t, "scribe", "password1")
	inc := ts.createIncident(t, "needs notes", "low")
	path := fmt.Sprintf("/api/v1/incidents/%d/notes", inc.ID)

	ts.request(t, "POST", path, `{"body":"x"}`).mustStatus(t, "note without a token", http.StatusUnauthorized)
	ts.request(t, "POST", "/api/v1/incidents/999999/notes", `{"body":"x"}`, bearer(token)...).mustStatus(t, "note on an unknown incident", http.StatusNotFound)
	ts.request(t, "GET", "/api/v1/incidents/999999/notes", "").mustStatus(t, "notes of an unknown incident", http.StatusNotFound)
	ts.request(t, "GET", "/api/v1/incidents/999999/events", "").mustStatus(t, "timeline of an unknown incident", http.StatusNotFound)
	for _, tt := range []struct{ body, want string }{
		{`{}`, "missing@body.body"},
		{`{"body":" "}`, "string_too_short@body.body"},
		{`{"body":"` + strings.Repeat("b", 10001) + `"}`, "string_too_long@body.body"},
		{`{"body":"a\u0000"}`, "value_error@body.body"},
	} {
		r := ts.request(t, "POST", path, tt.body, bearer(token)...)
		r.mustStatus(t, "bad note", http.StatusUnprocessableEntity)
		if got := problemTypes(t, r); len(got) != 1 || got[0] != tt.want {
			t.Errorf("note %.20s: problems = %v, want %s", tt.body, got, tt.want)
		}
	}

	// A clock finer than PostgreSQL's microseconds: the answer must be
	// the note as stored, as every later read returns it.
	ts.clock.Advance(789 * time.Nanosecond)
	var first note
	r := ts.request(t, "POST", path, `{"body":"first"}`, bearer(token)...).mustStatus(t, "add note", http.StatusCreated)
	r.json(t, &first)
	if first.ID == 0 || first.IncidentID != inc.ID || first.Body != "first" || *first.Author != "scribe" || !first.CreatedAt.Equal(ts.clock.Now().Round(time.Microsecond)) {
		t.Errorf("note = %+v", first)
	}
	var stored []note
	ts.request(t, "GET", path+"?limit=1", "").mustStatus(t, "first note", http.StatusOK).json(t, &stored)
	if len(stored) != 1 || !reflect.DeepEqual(stored[0], first) {
		t.Errorf("POST answered %+v; the note as stored is %+v", first, stored)
	}
	for i := 2; i <= 25; i++ {
		ts.request(t, "POST", path, fmt.Sprintf(`{"body":"note %d"}`, i), bearer(token)...).mustStatus(t, "add note", http.StatusCreated)
	}
	var seen []string
	for next := path + "?limit=10"; next != ""; {
		r := ts.request(t, "GET", next, "").mustStatus(t, "notes page", http.StatusOK)
		var page []note
		r.json(t, &page)
		for _, n := range page {
			seen = append(seen, n.Body)
		}
		next = nextLink(t, r)
	}
	if len(seen) != 25 || seen[0] != "first" || seen[24] != "note 25" {
		t.Errorf("notes walked = %d, first %q, last %q; want 25 oldest first", len(seen), seen[0], seen[len(seen)-1])
	}
	var timeline []eventView
	ts.request(t, "GET", fmt.Sprintf("/api/v1/incidents/%d/events?limit=5", inc.ID), "").json(t, &timeline)
	if len(timeline) != 5 || timeline[1].Type != "noted" || timeline[1].Note == nil || timeline[1].Note.Body != "first" {
		t.Errorf("timeline page = %+v, want added then noted events carrying their notes", timeline)
	}
	ts.request(t, "GET", fmt.Sprintf("/api/v1/incidents/%d/events?limit=0", inc.ID), "").mustStatus(t, "limit 0", http.StatusUnprocessableEntity)
	ts.request(t, "GET", fmt.Sprintf("/api/v1/incidents/%d/notes?after=-1", inc.ID), "").mustStatus(t, "after -1", http.StatusUnprocessableEntity)
}

// TestTimelinePagination follows the timeline's Link headers page by page
// and checks every event comes once, in order, and none of another
// incident's slip in.
func TestTimelinePagination(t *testing.T) {
	ts := newTestServer(t)
	token := ts.register(t, "admin", "password1")
	inc := ts.createIncident(t, "flapping", "high")
	other := ts.createIncident(t, "bystander", "low")
	// Six acknowledge/unacknowledge pairs: with "added", 13 events. The other
	// incident's events take seq numbers in between.
	for i := range 6 {
		ts.patch(t, inc.ID, "acknowledge", token, "").mustStatus(t, fmt.Sprintf("acknowledge %d", i+1), http.StatusOK)
		ts.patch(t, other.ID, "acknowledge", token, "").mustStatus(t, "acknowledge the other", http.StatusOK)
		ts.patch(t, inc.ID, "unacknowledge", token, "").mustStatus(t, fmt.Sprintf("unacknowledge %d", i+1), http.StatusOK)
		ts.patch(t, other.ID, "unacknowledge", token, "").mustStatus(t, "unacknowledge the other", http.StatusOK)
	}

	var (
		seqs      []int64
		types     []string
		pageSizes []int
	)
	seen := map[int64]int{}
	path := fmt.Sprintf("/api/v1/incidents/%d/events?limit=5", inc.ID)
	for pages := 0; path != ""; pages++ {
		if pages > 10 {
			t.Fatal("more than 10 pages: the Link chain does not end")
		}
		r := ts.request(t, "GET", path, "").mustStatus(t, "GET "+path, http.StatusOK)
		var page []eventView
		r.json(t, &page)
		pageSizes = append(pageSizes, len(page))
		for _, e := range page {
			seqs = append(seqs, e.Seq)
			types = append(types, e.Type)
			seen[e.Seq]++
			var data incident
			if err := json.Unmarshal(e.Data, &data); err != nil || data.ID != inc.ID {
				t.Errorf("event seq %d is of incident %d (%v), want %d", e.Seq, data.ID, err, inc.ID)
			}
		}
		next := nextLink(t, r)
		if next != "" && len(page) == 0 {
			t.Fatalf("empty page %s has a next link", path)
		}
		path = next
	}

	if len(seqs) != 13 {
		t.Errorf("walked %d events, want 13", len(seqs))
	}
	if want := []int{5, 5, 3}; !reflect.DeepEqual(pageSizes, want) {
		t.Errorf("page sizes = %v, want %v", pageSizes, want)
	}
	for seq, n := range seen {
		if n != 1 {
			t.Errorf("seq %d came %d times, want once", seq, n)
		}
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Errorf("seq %d came after %d, want strictly increasing", seqs[i], seqs[i-1])
		}
	}
	want := []string{"added"}
	for range 6 {
		want = append(want, "acknowledged", "unacknowledged")
	}
	if !reflect.DeepEqual(types, want) {
		t.Errorf("timeline types = %v, want %v", types, want)
	}
}

func TestStats(t *testing.T) {
	ts := newTestServer(t)
	token := ts.register(t, "oncall", "password1")
	for _, sev := range []string{"low", "high", "high", "critical"} {
		ts.createIncident(t, "s", sev)
	}
	ack := ts.createIncident(t, "acked", "medium")
	ts.patch(t, ack.ID, "acknowledge", token, "").mustStatus(t, "acknowledge", http.StatusOK)
	done := ts.createIncident(t, "done", "critical")
	ts.patch(t, done.ID, "resolve", token, "").mustStatus(t, "resolve", http.StatusOK)

	var stats incidentStats
	ts.request(t, "GET", "/api/v1/incidents/stats", "").mustStatus(t, "stats", http.StatusOK).json(t, &stats)
	want := incidentStats{
		Total:      5,
		ByStatus:   map[string]int{"open": 4, "acknowledged": 1},
		BySeverity: map[string]int{"low": 1, "medium": 1, "high": 2, "critical": 1},
	}
	stats.ResponseTimes = responseTimes{} // TestStatsResponseTimes
	if !reflect.DeepEqual(stats, want) {
		t.Errorf("stats = %+v, want %+v", stats, want)
	}
}

func TestStreamCarriesLifecycleEvents(t *testing.T) {
	ts := newTestServer(t)
	token := ts.register(t, "oncall", "password1")
	r, inc := ts.report(t, "svc/down", "high")
	r.mustStatus(t, "report", http.StatusCreated)
	ts.waitStream(t)
	c, _ := mustDial(t, ts, "/api/v1/ws")

	ts.report(t, "svc/down", "critical")
	ts.patch(t, inc.ID, "acknowledge", token, `{"note":"on it"}`).mustStatus(t, "acknowledge", http.StatusOK)
	ts.patch(t, inc.ID, "unacknowledge", token, "").mustStatus(t, "unacknowledge", http.StatusOK)
	ts.request(t, "POST", fmt.Sprintf("/api/v1/incidents/%d/notes", inc.ID), `{"body":"context"}`, bearer(token)...).mustStatus(t, "note", http.StatusCreated)
	ts.patch(t, inc.ID, "resolve", token, "").mustStatus(t, "resolve", http.StatusOK)
	ts.report(t, "svc/down", "low") // flaps: reopened by the system
	ts.patch(t, inc.ID, "resolve", token, "").mustStatus(t, "resolve", http.StatusOK)
	ts.patch(t, inc.ID, "reopen", token, "").mustStatus(t, "reopen", http.StatusOK)

	want := []string{"occurred", "acknowledged", "unacknowledged", "noted", "resolved", "reopened", "resolved", "reopened"}
	var got []string
	for range want {
		ev := c.readMessage(t)
		got = append(got, ev.Type)
		var data incident
		json.Unmarshal(ev.Data, &data)
		if data.ID != inc.ID {
			t.Errorf("%s event for incident %d, want %d", ev.Type, data.ID, inc.ID)
		}
		if ev.Type == "acknowledged" && (ev.Note == nil || ev.Note.Body != "on it" || ev.Actor == nil || ev.Actor.User != "oncall") {
			t.Errorf("acknowledged event = %+v, want actor oncall and the note", ev)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("stream types = %v, want %v", got, want)
	}
}

// TestOriginalClientEndToEnd is a client written against the original
// service: it sends only title, description and severity, reads only the
// original keys, and resolves with a bare PATCH.
func TestOriginalClientEndToEnd(t *testing.T) {
	ts := newTestServer(t)
	ts.request(t, "POST", "/api/v1/register", `{"username":"admin","password":"admin123"}`).mustStatus(t, "register", http.StatusCreated)
	r := ts.request(t, "POST", "/api/v1/login", "username=admin&password=admin123", "Content-Type", "application/x-www-form-urlencoded")
	var tok struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
	}
	r.mustStatus(t, "login", http.StatusOK).json(t, &tok)

	var created struct {
		ID          int64  `json:"id"`
		Title       string `json:"title"`
		Description string `json:"description"`
		Severity    string `json:"severity"`
		Status      string `json:"status"`
	}
	ts.request(t, "POST", "/api/v1/incidents", `{"title":"Server down","description":"prod-1 unreachable","severity":"high"}`).
		mustStatus(t, "create", http.StatusCreated).json(t, &created)
	if created.Title != "Server down" || created.Status != "open" {
		t.Errorf("created = %+v", created)
	}
	var list []map[string]any
	ts.request(t, "GET", "/api/v1/incidents", "").mustStatus(t, "list", http.StatusOK).json(t, &list)
	if len(list) != 1 || list[0]["title"] != "Server down" || list[0]["description"] != "prod-1 unreachable" || list[0]["severity"] != "high" {
		t.Errorf("list = %v", list)
	}
	r = ts.request(t, "PATCH", fmt.Sprintf("/api/v1/incidents/%d/resolve", created.ID), "", "Authorization", "Bearer "+tok.AccessToken)
	var resolved map[string]string
	r.mustStatus(t, "resolve", http.StatusOK).json(t, &resolved)
	if resolved["message"] != "Incident resolved" || resolved["incident status"] != "resolved" {
		t.Errorf("resolve body = %v", resolved)
	}
	r = ts.request(t, "PATCH", fmt.Sprintf("/api/v1/incidents/%d/resolve", created.ID), "", "Authorization", "Bearer "+tok.AccessToken, "Content-Type", "application/json")
	if r.mustStatus(t, "resolve again", http.StatusConflict).detail(t) != "Incident already resolved" {
		t.Errorf("second resolve body = %s", r.body)
	}
	ts.request(t, "GET", "/api/v1/incidents?status=resolved", "").json(t, &list)
	if len(list) != 1 || list[0]["status"] != "resolved" {
		t.Errorf("resolved list = %v", list)
	}
}
