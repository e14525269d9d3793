package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// escalate runs the escalation work once at the test's clock.
func (ts *testServer) escalate(t *testing.T) {
	t.Helper()
	if _, err := ts.st.Escalate(context.Background(), ts.clock.Now()); err != nil {
		t.Fatal(err)
	}
}

// timeline returns incident id's events.
func (ts *testServer) timeline(t *testing.T, id int64) []eventView {
	t.Helper()
	var events []eventView
	ts.request(t, "GET", fmt.Sprintf("/api/v1/incidents/%d/events", id), "").mustStatus(t, "timeline", http.StatusOK).json(t, &events)
	return events
}

// escalations lists incident id's escalated events as "step.repeat".
func (ts *testServer) escalations(t *testing.T, id int64) string {
	t.Helper()
	var got []string
	for _, e := range ts.timeline(t, id) {
		if e.Type != "escalated" {
			continue
		}
		var n escalationNotice
		if err := json.Unmarshal(e.Escalation, &n); err != nil {
			t.Fatalf("escalated event %d: escalation %s: %v", e.Seq, e.Escalation, err)
		}
		got = append(got, fmt.Sprintf("%d.%d", n.Step, n.Repeat))
	}
	return strings.Join(got, " ")
}

func TestEscalationPolicyAdmin(t *testing.T) {
	ts := newTestServer(t)
	admin := ts.register(t, "admin", "password1")
	responder := ts.register(t, "responder", "password1")
	first := ts.createWebhook(t, admin, newReceiver(t), `{"name":"first"}`)
	second := ts.createWebhook(t, admin, newReceiver(t), `{"name":"second"}`)
	const path = "/api/v1/escalation-policies"

	body := fmt.Sprintf(`{"name":"db on-call","match":{"min_severity":"high","labels":{"team":"db"}},
		"steps":[{"after":"0s","webhooks":[%d]},{"after":"90m","webhooks":[%d,%d,%d]}],"repeat":{"every":"1800s","times":3}}`,
		first.ID, second.ID, first.ID, second.ID)
	p := create[escalationPolicy](t, ts, admin, path, body)
	got, _ := json.Marshal(p)
	want := fmt.Sprintf(`"match":{"min_severity":"high","labels":{"team":"db"}},"steps":[{"after":"0s","webhooks":[%d]},{"after":"1h30m","webhooks":[%d,%d]}],"repeat":{"every":"30m","times":3}`,
		first.ID, second.ID, first.ID)
	if !strings.Contains(string(got), want) {
		t.Errorf("created %s; want it to contain %s (delays written back in one form, repeated ids dropped)", got, want)
	}
	// Keys match exactly inside the body too, as at its top level: another
	// spelling is an unknown field, not a second value.
	exact := create[escalationPolicy](t, ts, admin, path, fmt.Sprintf(`{"name":"exact","match":{"min_severity":"high","MIN_SEVERITY":"low"},
		"steps":[{"after":"5m","AFTER":"168h","webhooks":[%d]}],"repeat":{"every":"5m","times":1,"Times":100}}`, first.ID))
	if exact.Match.MinSeverity != "high" || exact.Steps[0].After != "5m" || exact.Repeat.Times != 1 {
		t.Errorf("created %+v; want the exactly spelled values: high, 5m, 1 time", exact)
	}
	ts.request(t, "DELETE", fmt.Sprintf("%s/%d", path, exact.ID), "", bearer(admin)...).mustStatus(t, "delete", http.StatusNoContent)
	minimal := create[escalationPolicy](t, ts, admin, path, fmt.Sprintf(`{"name":"all","steps":[{"after":"5m","webhooks":[%d]}]}`, first.ID))
	if minimal.Match.MinSeverity != "low" || len(minimal.Match.Labels) != 0 || minimal.Repeat != nil {
		t.Errorf("created %+v; want the defaults: every incident, no repeat", minimal)
	}

	for _, tt := range []struct {
		name, body string
		want       []string
	}{
		{"nothing", `{}`, []string{"missing@body.name", "missing@body.steps"}},
		{"blank name", `{"name":" ","steps":[{"after":"1m","webhooks":[1]}]}`, []string{"string_too_short@body.name"}},
		{"match not an object", `{"name":"x","match":[],"steps":[{"after":"1m","webhooks":[1]}]}`, []string{"dict_type@body.match"}},
		{"bad severity and labels", `{"name":"x","match":{"min_severity":"urgent","labels":{"a:b":"c"}},"steps":[{"after":"1m","webhooks":[1]}]}`,
			[]string{"enum@body.match.min_severity", "value_error@body.match.labels.a:b"}},
		{"steps not a list", `{"name":"x","steps":{}}`, []string{"list_type@body.steps"}},
		{"no steps", `{"name":"x","steps":[]}`, []string{"too_short@body.steps"}},
		{"eleven steps", `{"name":"x","steps":[` + strings.Repeat(`{"after":"1m","webhooks":[1]},`, 10) + `{"after":"1m","webhooks":[1]}]}`,
			[]string{"too_long@body.steps"}},
		{"step not an object", `{"name":"x","steps":[null]}`, []string{"dict_type@body.steps.0"}},
		{"step without fields", `{"name":"x","steps":[{}]}`, []string{"missing@body.steps.0.after", "missing@body.steps.0.webhooks"}},
		{"delay not a duration", `{"name":"x","steps":[{"after":"soon","webhooks":[1]}]}`, []string{"value_error@body.steps.0.after"}},
		{"delay a number", `{"name":"x","steps":[{"after":600,"webhooks":[1]}]}`, []string{"string_type@body.steps.0.after"}},
		{"fractional delay", `{"name":"x","steps":[{"after":"1.5s","webhooks":[1]}]}`, []string{"value_error@body.steps.0.after"}},
		{"negative delay", `{"name":"x","steps":[{"after":"-1m","webhooks":[1]}]}`, []string{"value_error@body.steps.0.after"}},
		{"delay over a week", `{"name":"x","steps":[{"after":"169h","webhooks":[1]}]}`, []string{"value_error@body.steps.0.after"}},
		{"steps out of order", `{"name":"x","steps":[{"after":"10m","webhooks":[1]},{"after":"5m","webhooks":[1]}]}`,
			[]string{"value_error@body.steps.1.after"}},
		{"webhooks not a list", `{"name":"x","steps":[{"after":"1m","webhooks":"1"}]}`, []string{"list_type@body.steps.0.webhooks"}},
		{"no webhooks", `{"name":"x","steps":[{"after":"1m","webhooks":[]}]}`, []string{"too_short@body.steps.0.webhooks"}},
		{"webhook ids not numbers", `{"name":"x","steps":[{"after":"1m","webhooks":["a"]}]}`, []string{"list_type@body.steps.0.webhooks"}},
		{"repeat not an object", `{"name":"x","steps":[{"after":"1m","webhooks":[1]}],"repeat":3}`, []string{"dict_type@body.repeat"}},
		{"repeat without fields", `{"name":"x","steps":[{"after":"1m","webhooks":[1]}],"repeat":{}}`,
			[]string{"missing@body.repeat.every", "missing@body.repeat.times"}},
		{"repeat too often and too many", `{"name":"x","steps":[{"after":"1m","webhooks":[1]}],"repeat":{"every":"30s","times":101}}`,
			[]string{"value_error@body.repeat.every", "less_than_equal@body.repeat.times"}},
		{"repeat zero times", `{"name":"x","steps":[{"after":"1m","webhooks":[1]}],"repeat":{"every":"5m","times":0}}`,
			[]string{"greater_than_equal@body.repeat.times"}},
		{"unknown webhooks", `{"name":"x","steps":[{"after":"1m","webhooks":[1,999]},{"after":"2m","webhooks":[998,2]}]}`,
			[]string{"value_error@body.steps.0.webhooks.1", "value_error@body.steps.1.webhooks.0"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts.request(t, "POST", path, tt.body, bearer(admin)...).mustProblems(t, "POST "+tt.body, tt.want...)
		})
	}

	ts.request(t, "POST", path, `{"name":"DB ON-CALL","steps":[{"after":"1m","webhooks":[1]}]}`, bearer(admin)...).
		mustStatus(t, "a taken name", http.StatusConflict)
	ts.request(t, "POST", path, body, bearer(responder)...).mustStatus(t, "a responder creates", http.StatusForbidden)
	ts.request(t, "GET", path, "", bearer(responder)...).mustStatus(t, "a responder lists", http.StatusForbidden)
	var list []escalationPolicy
	ts.request(t, "GET", path, "", bearer(admin)...).mustStatus(t, "list", http.StatusOK).json(t, &list)
	if len(list) != 2 || list[0].ID != p.ID || list[1].ID != minimal.ID {
		t.Errorf("list = %+v, want both policies, oldest first", list)
	}
	one := fmt.Sprintf("%s/%d", path, p.ID)
	ts.request(t, "GET", path+"/999", "", bearer(admin)...).mustStatus(t, "get a missing one", http.StatusNotFound)
	ts.request(t, "PATCH", path+"/999", `{"name":"y"}`, bearer(admin)...).mustStatus(t, "patch a missing one", http.StatusNotFound)
	ts.request(t, "PATCH", one, `{"steps":[{"after":"1m","webhooks":[999]}]}`, bearer(admin)...).
		mustProblems(t, "patch to an unknown webhook", "value_error@body.steps.0.webhooks.0")
	ts.request(t, "PATCH", one, `{"name":"ALL"}`, bearer(admin)...).mustStatus(t, "patch to a taken name", http.StatusConflict)

	// PATCH changes what it names; a null repeat removes it.
	var patched escalationPolicy
	ts.request(t, "PATCH", one, `{"repeat":null,"match":{"labels":{}}}`, bearer(admin)...).mustStatus(t, "patch", http.StatusOK).json(t, &patched)
	if patched.Repeat != nil || len(patched.Match.Labels) != 0 || patched.Match.MinSeverity != "high" || len(patched.Steps) != 2 || patched.Name != "db on-call" {
		t.Errorf("patched %+v; want no repeat and no labels, the rest unchanged", patched)
	}

	// Two updates at once of different fields both count.
	for round := range 5 {
		name, times := fmt.Sprintf("policy %d", round), round+1
		inParallel(t, 2, func(t testing.TB, i int) response {
			b := fmt.Sprintf(`{"name":%q}`, name)
			if i == 1 {
				b = fmt.Sprintf(`{"repeat":{"every":"5m","times":%d}}`, times)
			}
			return ts.request(t, "PATCH", one, b, bearer(admin)...).mustStatus(t, "patch", http.StatusOK)
		})
		var now escalationPolicy
		ts.request(t, "GET", one, "", bearer(admin)...).mustStatus(t, "get", http.StatusOK).json(t, &now)
		if now.Name != name || now.Repeat == nil || now.Repeat.Times != times {
			t.Fatalf("round %d: after two concurrent updates %+v; want name %q and %d repeats", round, now, name, times)
		}
	}

	// A webhook a policy notifies stays until no policy does.
	ts.request(t, "DELETE", fmt.Sprintf("/api/v1/webhooks/%d", second.ID), "", bearer(admin)...).mustStatus(t, "delete a webhook in use", http.StatusConflict)
	ts.request(t, "DELETE", one, "", bearer(admin)...).mustStatus(t, "delete", http.StatusNoContent)
	ts.request(t, "DELETE", one, "", bearer(admin)...).mustStatus(t, "delete again", http.StatusNotFound)
	ts.request(t, "DELETE", fmt.Sprintf("/api/v1/webhooks/%d", second.ID), "", bearer(admin)...).mustStatus(t, "delete the webhook", http.StatusNoContent)

	var audit []auditEntry
	ts.request(t, "GET", "/api/v1/audit", "", bearer(admin)...).mustStatus(t, "audit", http.StatusOK).json(t, &audit)
	var actions []string
	for _, e := range audit {
		if strings.HasPrefix(e.Action, "escalation_policy.") {
			actions = append(actions, e.Action)
		}
	}
	if got := strings.Join(actions, ","); !strings.HasPrefix(got, "escalation_policy.deleted,escalation_policy.updated") || !strings.HasSuffix(got, "escalation_policy.created,escalation_policy.created") {
		t.Errorf("audit = %s, want the policies' lives", got)
	}
}

func TestEscalationSteps(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.publicURL = "https://incidents.example.com" })
	admin := ts.register(t, "admin", "password1")
	// Steps notify their webhooks whatever those ask for; a webhook that
	// asks for incident.escalated hears of every escalation.
	primary, secondary, channel := newReceiver(t), newReceiver(t), newReceiver(t)
	p1 := ts.createWebhook(t, admin, primary, `{"name":"primary","event_types":["heartbeat.down"]}`)
	p2 := ts.createWebhook(t, admin, secondary, `{"name":"secondary","event_types":["incident.resolved"],"min_severity":"critical"}`)
	ts.createWebhook(t, admin, channel, `{"name":"channel","event_types":["incident.escalated"]}`)
	create[escalationPolicy](t, ts, admin, "/api/v1/escalation-policies", fmt.Sprintf(`{"name":"db","match":{"min_severity":"high","labels":{"team":"db"}},
		"steps":[{"after":"5m","webhooks":[%d]},{"after":"10m","webhooks":[%d]}],"repeat":{"every":"30m","times":2}}`, p1.ID, p2.ID))

	var inc, low, other incident
	ts.postIncident(t, `{"title":"replica lag","severity":"high","labels":{"team":"db","host":"db-2"}}`).mustStatus(t, "report", http.StatusCreated).json(t, &inc)
	ts.postIncident(t, `{"title":"slow query","severity":"medium","labels":{"team":"db"}}`).mustStatus(t, "report", http.StatusCreated).json(t, &low)
	ts.postIncident(t, `{"title":"disk full","severity":"critical","labels":{"team":"web"}}`).mustStatus(t, "report", http.StatusCreated).json(t, &other)

	for _, step := range []struct {
		advance time.Duration
		want    string
	}{
		{4*time.Minute + 59*time.Second, ""},
		{time.Second, "1.0"}, // 5m: the first step
		{4 * time.Minute, "1.0"},
		{time.Minute, "1.0 2.0"}, // 10m: the second
		{29 * time.Minute, "1.0 2.0"},
		{time.Minute, "1.0 2.0 2.1"}, // 40m: the last step again
		{30 * time.Minute, "1.0 2.0 2.1 2.2"},
		{5 * time.Hour, "1.0 2.0 2.1 2.2"}, // two repeats, no more
	} {
		ts.clock.Advance(step.advance)
		ts.escalate(t)
		ts.escalate(t) // nothing more is due
		if got := ts.escalations(t, inc.ID); got != step.want {
			t.Fatalf("at %v: escalations %q, want %q", ts.clock.Now().Sub(inc.CreatedAt).Round(time.Second), got, step.want)
		}
	}
	if got := ts.escalations(t, low.ID) + ts.escalations(t, other.ID); got != "" {
		t.Errorf("incidents the policy does not match were escalated: %q", got)
	}

	ts.caughtUp(t)
	ts.deliverUntil(t, "every notice", func() bool {
		return len(primary.messages()) == 1 && len(secondary.messages()) == 3 && len(channel.messages()) == 4
	})
	steps := func(rc *receiver) (got []string) {
		for _, m := range rc.messages() {
			n := m.Data["escalation"].(map[string]any)
			got = append(got, fmt.Sprintf("%s %v.%v", m.Type, n["step"], n["repeat"]))
		}
		return got
	}
	if got := fmt.Sprint(steps(primary), steps(secondary)); got != "[incident.escalated 1.0] [incident.escalated 2.0 incident.escalated 2.1 incident.escalated 2.2]" {
		t.Errorf("primary and secondary got %s; want the first step, and the second with its repeats", got)
	}
	m := primary.messages()[0]
	if m.Data["id"] != float64(inc.ID) || m.Data["status"] != "open" || m.Data["url"] != fmt.Sprintf("https://incidents.example.com/api/v1/incidents/%d", inc.ID) ||
		m.Data["escalation"].(map[string]any)["policy"] != "db" || len(m.SignedBy) != 1 {
		t.Errorf("escalated body %s; want the incident, a link, the policy, signed", m.Body)
	}
}

func TestEscalationStopsWhenAcknowledged(t *testing.T) {
	ts := newTestServer(t)
	admin := ts.register(t, "admin", "password1")
	wh := ts.createWebhook(t, admin, newReceiver(t), `{"name":"pager"}`)
	create[escalationPolicy](t, ts, admin, "/api/v1/escalation-policies", fmt.Sprintf(`{"name":"all","steps":[{"after":"5m","webhooks":[%d]}],
		"repeat":{"every":"10m","times":100}}`, wh.ID))
	inc := ts.createIncident(t, "disk full", "high")
	check := func(advance time.Duration, want string) {
		t.Helper()
		ts.clock.Advance(advance)
		ts.escalate(t)
		if got := ts.escalations(t, inc.ID); got != want {
			t.Fatalf("escalations %q, want %q", got, want)
		}
	}
	act := func(action string) {
		t.Helper()
		ts.transition(t, ts.login(t, "admin", "password1"), inc.ID, action) // a fresh token: the clock moves hours
	}
	check(5*time.Minute, "1.0")
	act("acknowledge")
	check(time.Hour, "1.0") // acknowledged: no more
	// Unacknowledged, it is open again, and its escalation starts over.
	act("unacknowledge")
	check(4*time.Minute, "1.0")
	check(time.Minute, "1.0 1.0")
	check(10*time.Minute, "1.0 1.0 1.1")
	act("resolve")
	check(time.Hour, "1.0 1.0 1.1")
	act("reopen")
	check(5*time.Minute, "1.0 1.0 1.1 1.0")
	admin = ts.login(t, "admin", "password1")

	// An acknowledgement that races the escalation either comes first
	// (no notice) or after the notice: never a notice after it.
	for round := range 10 {
		inc := ts.createIncident(t, fmt.Sprintf("race %d", round), "high")
		ts.clock.Advance(5 * time.Minute)
		var wg sync.WaitGroup
		wg.Go(func() {
			if _, err := ts.st.Escalate(context.Background(), ts.clock.Now()); err != nil {
				t.Error(err)
			}
		})
		ts.transition(t, admin, inc.ID, "acknowledge")
		wg.Wait()
		ts.escalate(t)
		var types []string
		for _, e := range ts.timeline(t, inc.ID) {
			types = append(types, e.Type)
		}
		if got := strings.Join(types, " "); got != "added acknowledged" && got != "added escalated acknowledged" {
			t.Fatalf("round %d: timeline %s; want no escalation after the acknowledgement", round, got)
		}
	}
}

// Replicas escalating at once send each notice once.
func TestEscalationAcrossReplicas(t *testing.T) {
	a := newTestServer(t)
	b := a.replica(t)
	admin := a.register(t, "admin", "password1")
	wh := a.createWebhook(t, admin, newReceiver(t), `{"name":"pager"}`)
	create[escalationPolicy](t, a, admin, "/api/v1/escalation-policies", fmt.Sprintf(`{"name":"all","steps":[{"after":"1m","webhooks":[%d]},
		{"after":"2m","webhooks":[%d]}]}`, wh.ID, wh.ID))
	var incidents []incident
	for i := range 30 {
		incidents = append(incidents, a.createIncident(t, fmt.Sprintf("incident %d", i), "high"))
	}
	for round, advance := range []time.Duration{time.Minute, time.Minute} {
		if round == 1 {
			// Acknowledged on one replica, every other incident stops
			// escalating on both.
			for i := 0; i < len(incidents); i += 2 {
				a.transition(t, admin, incidents[i].ID, "acknowledge")
			}
		}
		a.clock.Advance(advance)
		b.clock.Advance(a.clock.Now().Sub(b.clock.Now()))
		var wg sync.WaitGroup
		for _, ts := range []*testServer{a, b, a, b} {
			wg.Go(func() {
				if _, err := ts.st.Escalate(context.Background(), ts.clock.Now()); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	for i, inc := range incidents {
		want := "1.0 2.0"
		if i%2 == 0 {
			want = "1.0" // acknowledged after the first step
		}
		if got := a.escalations(t, inc.ID); got != want {
			t.Fatalf("incident %d: escalations %q on two replicas, want %q: each step once, none after the acknowledgement", inc.ID, got, want)
		}
	}
}

// Heartbeats going down and coming back are events of their own, on the
// heartbeat's incident, sent to the webhooks that ask for them.
func TestHeartbeatEvents(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.rateLimits = false })
	admin := ts.register(t, "admin", "password1")
	watch, chat := newReceiver(t), newReceiver(t)
	ts.createWebhook(t, admin, watch, `{"name":"watch","event_types":["heartbeat.down","heartbeat.up"]}`)
	ts.createWebhook(t, admin, chat, `{"name":"chat","format":"slack","event_types":["heartbeat.down","heartbeat.up"]}`)
	hb := ts.createHeartbeat(t, admin, `{"name":"backup","interval":60,"grace":0,"severity":"high"}`)
	ping := func(suffix string) {
		t.Helper()
		ts.request(t, "POST", hb.PingURL+suffix, "").mustStatus(t, "ping"+suffix, http.StatusOK)
	}
	ping("")
	ts.clock.Advance(2 * time.Minute)
	if _, err := ts.st.OverdueHeartbeats(context.Background(), ts.srv.cfg.reopenWindow, ts.clock.Now()); err != nil {
		t.Fatal(err)
	}
	ping("/fail") // still down: no second heartbeat_down
	ping("")
	ping("") // already up
	ping("/fail")

	list := ts.heartbeatIncidents(t, hb.heartbeat)
	if len(list) != 1 {
		t.Fatalf("%d incidents, want 1 (reopened)", len(list))
	}
	var types []string
	for _, e := range ts.timeline(t, list[0].ID) {
		types = append(types, e.Type)
		if strings.HasPrefix(e.Type, "heartbeat_") {
			var got heartbeat
			if err := json.Unmarshal(e.Heartbeat, &got); err != nil || got.ID != hb.ID || got.Name != "backup" {
				t.Errorf("%s event's heartbeat %s; want the heartbeat", e.Type, e.Heartbeat)
			}
		}
	}
	if got, want := strings.Join(types, " "), "added heartbeat_down occurred resolved heartbeat_up reopened heartbeat_down"; got != want {
		t.Errorf("timeline %s, want %s", got, want)
	}

	ts.caughtUp(t)
	ts.deliverUntil(t, "the heartbeat events", func() bool { return len(watch.messages()) == 3 && len(chat.messages()) == 3 })
	var got []string
	for _, m := range watch.messages() {
		got = append(got, fmt.Sprintf("%s %s %v", m.Type, m.Data["heartbeat"].(map[string]any)["state"], m.Data["status"]))
	}
	if got := strings.Join(got, ", "); got != "heartbeat.down down open, heartbeat.up up resolved, heartbeat.down down open" {
		t.Errorf("webhook got %s; want down, up, down, each with the heartbeat and its incident", got)
	}
	var slack struct {
		Text string `json:"text"`
	}
	json.Unmarshal(chat.messages()[1].Body, &slack)
	if want := fmt.Sprintf(`[HIGH] Heartbeat "backup" is up again (incident #%d)`, list[0].ID); slack.Text != want {
		t.Errorf("slack text %q, want %q", slack.Text, want)
	}
}

// BenchmarkEscalateIdle measures the escalation check every replica makes
// every second, with 10,000 open incidents under 5 policies and nothing
// due: the steady cost of escalation.
func BenchmarkEscalateIdle(b *testing.B) {
	st := newTestStore(b)
	ctx := context.Background()
	now := time.Now()
	if _, err := st.db.ExecContext(ctx, `INSERT INTO webhooks (name, url, format, event_types, min_severity, secret, cursor_seq, created_at, updated_at)
		VALUES ('pager', 'https://pager.example', 'standard', '[]', 'low', 'whsec_x', 0, $1, $1)`, now); err != nil {
		b.Fatal(err)
	}
	if _, err := st.db.ExecContext(ctx, `INSERT INTO incidents (title, severity, status, created_at, updated_at, last_occurred_at, opened_at, labels)
		SELECT 'incident ' || n, (ARRAY['low','medium','high','critical'])[1 + n % 4], 'open', $1, $1, $1, $1,
			jsonb_build_object('team', 'team' || n % 10)
		FROM generate_series(1, 10000) n`, now); err != nil {
		b.Fatal(err)
	}
	for i := range 5 {
		if _, err := st.db.ExecContext(ctx, `INSERT INTO escalation_policies (name, min_severity, labels, steps, created_at, updated_at)
			VALUES ($1, 'medium', $2, '[{"after_s": 3600, "webhooks": [1]}]', $3, $3)`,
			fmt.Sprintf("policy %d", i), fmt.Sprintf(`{"team":"team%d"}`, i), now); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := st.db.ExecContext(ctx, `ANALYZE`); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if n, err := st.Escalate(ctx, now.Add(time.Minute)); err != nil || n != 0 {
			b.Fatalf("escalate: %d, %v; want nothing due", n, err)
		}
	}
}
