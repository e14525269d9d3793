package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// createHeartbeat makes a heartbeat as the admin and returns it with its
// ping URL.
func (ts *testServer) createHeartbeat(t *testing.T, admin, body string) heartbeatWithURL {
	t.Helper()
	return create[heartbeatWithURL](t, ts, admin, "/api/v1/heartbeats", body)
}

// heartbeatIncidents lists the incidents heartbeat hb opened.
func (ts *testServer) heartbeatIncidents(t *testing.T, hb heartbeat) []incident {
	t.Helper()
	return ts.incidentsWithKey(t, hb.key())
}

func TestHeartbeatAdmin(t *testing.T) {
	ts := newTestServer(t)
	admin := ts.register(t, "admin", "password1")
	responder := ts.register(t, "responder", "password1")
	hb := ts.createHeartbeat(t, admin, `{"name":"nightly backup","interval":86400,"grace":3600,"severity":"critical","labels":{"team":"ops"}}`)
	if hb.State != "new" || hb.Interval != 86400 || hb.Grace != 3600 || hb.Deadline != nil || !strings.HasPrefix(hb.PingURL, "/api/v1/heartbeats/ping/") {
		t.Errorf("created %+v; want state new, no deadline, a ping URL", hb)
	}
	if r := ts.request(t, "GET", "/api/v1/heartbeats", "", bearer(responder)...); r.status != http.StatusOK || strings.Contains(string(r.body), hb.PingURL) {
		t.Errorf("list: %d %s; want it readable, without the ping URL", r.status, r.body)
	}
	for _, tt := range []struct {
		name, method, path, body, token string
		want                            int
	}{
		{"name taken", "POST", "/api/v1/heartbeats", `{"name":"Nightly Backup","interval":60}`, admin, http.StatusConflict},
		{"interval too short", "POST", "/api/v1/heartbeats", `{"name":"x","interval":29}`, admin, http.StatusUnprocessableEntity},
		{"interval too long", "POST", "/api/v1/heartbeats", `{"name":"x","interval":31536001}`, admin, http.StatusUnprocessableEntity},
		{"interval missing", "POST", "/api/v1/heartbeats", `{"name":"x"}`, admin, http.StatusUnprocessableEntity},
		{"interval not a number", "POST", "/api/v1/heartbeats", `{"name":"x","interval":"1m"}`, admin, http.StatusUnprocessableEntity},
		{"bad severity", "POST", "/api/v1/heartbeats", `{"name":"x","interval":60,"severity":"urgent"}`, admin, http.StatusUnprocessableEntity},
		{"not an admin", "POST", "/api/v1/heartbeats", `{"name":"y","interval":60}`, responder, http.StatusForbidden},
		{"no such heartbeat", "GET", "/api/v1/heartbeats/999", "", admin, http.StatusNotFound},
		{"unknown token", "GET", "/api/v1/heartbeats/ping/nope", "", "", http.StatusNotFound},
	} {
		if r := ts.request(t, tt.method, tt.path, tt.body, bearer(tt.token)...); r.status != tt.want {
			t.Errorf("%s: %s %s = %d %s, want %d", tt.name, tt.method, tt.path, r.status, r.body, tt.want)
		}
	}
	ts.request(t, "PATCH", fmt.Sprintf("/api/v1/heartbeats/%d", hb.ID), `{"interval":3600}`, bearer(admin)...).mustStatus(t, "update", http.StatusOK)
	ts.request(t, "DELETE", fmt.Sprintf("/api/v1/heartbeats/%d", hb.ID), "", bearer(admin)...).mustStatus(t, "delete", http.StatusNoContent)
	ts.request(t, "GET", hb.PingURL, "").mustStatus(t, "ping a deleted heartbeat", http.StatusNotFound)
}

func TestHeartbeatLifecycle(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.rateLimits = false })
	admin := ts.register(t, "admin", "password1")
	hb := ts.createHeartbeat(t, admin, `{"name":"cron","interval":60,"grace":30,"severity":"high"}`)
	overdue := func() {
		t.Helper()
		if _, err := ts.st.OverdueHeartbeats(context.Background(), ts.srv.cfg.reopenWindow, ts.clock.Now()); err != nil {
			t.Fatal(err)
		}
	}
	state := func() heartbeat {
		t.Helper()
		var got heartbeat
		ts.request(t, "GET", fmt.Sprintf("/api/v1/heartbeats/%d", hb.ID), "").mustStatus(t, "get", http.StatusOK).json(t, &got)
		return got
	}

	// HEAD, GET and POST with any body all count as a ping.
	for _, method := range []string{"HEAD", "GET", "POST"} {
		ts.request(t, method, hb.PingURL, `{"receiver":"watchdog","alerts":[]}`).mustStatus(t, method+" ping", http.StatusOK)
	}
	got := state()
	if want := ts.clock.Now().Add(90 * time.Second); got.State != "up" || got.Deadline == nil || !got.Deadline.Equal(want) || !got.LastPingAt.Equal(ts.clock.Now()) {
		t.Fatalf("after pings: %+v; want up, deadline %v", got, want)
	}
	ts.clock.Advance(89 * time.Second)
	overdue()
	if list := ts.heartbeatIncidents(t, hb.heartbeat); len(list) != 0 || state().State != "up" {
		t.Fatalf("within interval + grace: %d incidents, state %s; want none, up", len(list), state().State)
	}
	ts.clock.Advance(2 * time.Second)
	overdue()
	overdue() // noticed again: still one incident
	list := ts.heartbeatIncidents(t, hb.heartbeat)
	if len(list) != 1 || list[0].Status != "open" || list[0].Severity != "high" || list[0].Source != "heartbeat" ||
		list[0].Title != "cron missed its heartbeat" || !strings.Contains(list[0].Description, "since") || list[0].Labels["heartbeat"] != "cron" {
		t.Fatalf("overdue: %+v; want one open incident about cron", list)
	}
	if got := state(); got.State != "down" || got.Deadline != nil {
		t.Errorf("overdue heartbeat: %+v, want down without a deadline", got)
	}
	// The next ping resolves it.
	ts.request(t, "POST", hb.PingURL, "").mustStatus(t, "ping", http.StatusOK)
	if got := ts.getIncident(t, list[0].ID); got.Status != "resolved" || state().State != "up" {
		t.Errorf("after the ping: incident %s, heartbeat %s; want resolved, up", got.Status, state().State)
	}

	// The job says it failed: down at once. A start does not bring it up;
	// a ping does.
	ts.request(t, "GET", hb.PingURL+"/fail", "").mustStatus(t, "fail", http.StatusOK)
	if list := ts.heartbeatIncidents(t, hb.heartbeat); state().State != "down" || list[len(list)-1].Status != "open" {
		t.Errorf("after /fail: %s, incidents %+v; want down and an open incident", state().State, list)
	}
	ts.request(t, "POST", hb.PingURL+"/start", "").mustStatus(t, "start", http.StatusOK)
	if state().State != "down" {
		t.Errorf("a start while down made it %s", state().State)
	}
	ts.request(t, "POST", hb.PingURL, "").mustStatus(t, "ping", http.StatusOK)
	// A start gives the job its grace to finish.
	ts.request(t, "POST", hb.PingURL+"/start", "").mustStatus(t, "start", http.StatusOK)
	if got := state(); !got.Deadline.Equal(ts.clock.Now().Add(30 * time.Second)) {
		t.Errorf("after start: deadline %v, want now + grace", got.Deadline)
	}

	// Paused: no deadline, nothing opens, pings only recorded; unpausing
	// starts a fresh period.
	ts.request(t, "PATCH", fmt.Sprintf("/api/v1/heartbeats/%d", hb.ID), `{"paused":true}`, bearer(admin)...).mustStatus(t, "pause", http.StatusOK)
	before := len(ts.heartbeatIncidents(t, hb.heartbeat))
	ts.clock.Advance(time.Hour)
	overdue()
	ts.request(t, "GET", hb.PingURL, "").mustStatus(t, "ping while paused", http.StatusOK)
	if got := state(); got.State != "paused" || got.Deadline != nil || len(ts.heartbeatIncidents(t, hb.heartbeat)) != before || !got.LastPingAt.Equal(ts.clock.Now()) {
		t.Errorf("paused: %+v; want paused, no deadline, no incident, the ping recorded", got)
	}
	admin = ts.login(t, "admin", "password1") // the hour ended the old token
	ts.request(t, "PATCH", fmt.Sprintf("/api/v1/heartbeats/%d", hb.ID), `{"paused":false}`, bearer(admin)...).mustStatus(t, "unpause", http.StatusOK)
	if got := state(); got.State != "up" || !got.Deadline.Equal(ts.clock.Now().Add(90*time.Second)) {
		t.Errorf("unpaused: %+v; want up with a fresh deadline", got)
	}
}

// Two replicas notice the same overdue heartbeats at once: each opens
// exactly one incident. The replicas' own timer loops run too.
func TestHeartbeatsAcrossReplicas(t *testing.T) {
	a := newTestServer(t, func(c *config) { c.rateLimits = false })
	b := a.replica(t)
	admin := a.register(t, "admin", "password1")
	var beats []heartbeatWithURL
	for i := range 30 {
		hb := a.createHeartbeat(t, admin, fmt.Sprintf(`{"name":"job %d","interval":30,"grace":0}`, i))
		a.request(t, "GET", hb.PingURL, "").mustStatus(t, "ping", http.StatusOK)
		beats = append(beats, hb)
	}
	// Both replicas' clocks pass the deadlines; each checks as fast as it
	// can, and its timer loop checks too.
	a.clock.Advance(time.Minute)
	b.clock.Advance(time.Minute)
	var wg sync.WaitGroup
	for _, ts := range []*testServer{a, b, a, b} {
		wg.Go(func() {
			if _, err := ts.st.OverdueHeartbeats(context.Background(), ts.srv.cfg.reopenWindow, ts.clock.Now()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	var incidents, events int
	a.st.db.QueryRow(`SELECT count(*) FROM incidents WHERE source = 'heartbeat'`).Scan(&incidents)
	a.st.db.QueryRow(`SELECT count(*) FROM incident_events e JOIN incidents i ON i.id = e.incident_id
		WHERE i.source = 'heartbeat' AND e.type = 'heartbeat_down'`).Scan(&events)
	if incidents != len(beats) || events != len(beats) {
		t.Errorf("%d incidents and %d heartbeat_down events for %d overdue heartbeats on two replicas, want one each", incidents, events, len(beats))
	}
	// A restarted timer loop finds a deadline that passed while it was
	// away: here, b's loop alone, with a new overdue heartbeat.
	late := a.createHeartbeat(t, admin, `{"name":"late","interval":30,"grace":0}`)
	a.request(t, "GET", late.PingURL, "").mustStatus(t, "ping", http.StatusOK)
	b.clock.Advance(2 * time.Minute)
	waitFor(t, "a replica's timer loop to open the late heartbeat's incident", func() bool {
		return len(b.heartbeatIncidents(t, late.heartbeat)) == 1
	})
}

// A ping URL's token is a secret: the request log names the route, not it.
func TestPingTokenNotLogged(t *testing.T) {
	var logs syncBuffer
	ts := newTestServer(t)
	ts.srv.log = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	admin := ts.register(t, "admin", "password1")
	hb := ts.createHeartbeat(t, admin, `{"name":"cron","interval":60}`)
	token := strings.TrimPrefix(hb.PingURL, "/api/v1/heartbeats/ping/")
	ts.request(t, "GET", hb.PingURL, "").mustStatus(t, "ping", http.StatusOK)
	ts.request(t, "POST", hb.PingURL+"/fail", "").mustStatus(t, "fail", http.StatusOK)
	ts.request(t, "GET", "/api/v1/heartbeats/ping/not-a-token", "").mustStatus(t, "unknown token", http.StatusNotFound)
	ts.request(t, "PUT", hb.PingURL, "").mustStatus(t, "a method no ping route has", http.StatusMethodNotAllowed)
	ts.request(t, "GET", hb.PingURL+"/", "").mustStatus(t, "no such route", http.StatusNotFound)
	if got := logs.String(); strings.Contains(got, token) || strings.Contains(got, "not-a-token") || !strings.Contains(got, `"path":"/api/v1/heartbeats/ping/{token}/fail"`) {
		t.Errorf("request log:\n%s\nwant the ping routes logged without their tokens", got)
	}
}

// A change of settings keeps a running deadline; a ping resolves the
// heartbeat's open incident even after a pause came between.
func TestHeartbeatChangesKeepItsWatch(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.rateLimits = false })
	admin := ts.register(t, "admin", "password1")
	hb := ts.createHeartbeat(t, admin, `{"name":"job","interval":60,"grace":30}`)
	ts.request(t, "POST", hb.PingURL+"/start", "").mustStatus(t, "start", http.StatusOK)
	var got heartbeat
	ts.request(t, "PATCH", fmt.Sprintf("/api/v1/heartbeats/%d", hb.ID), `{"name":"job 2"}`, bearer(admin)...).mustStatus(t, "rename", http.StatusOK).json(t, &got)
	if want := ts.clock.Now().Add(30 * time.Second); got.Deadline == nil || !got.Deadline.Equal(want) {
		t.Fatalf("after a rename the deadline is %v, want the start's %v", got.Deadline, want)
	}
	ts.clock.Advance(31 * time.Second)
	ts.st.OverdueHeartbeats(context.Background(), ts.srv.cfg.reopenWindow, ts.clock.Now())
	list := ts.heartbeatIncidents(t, hb.heartbeat)
	if len(list) != 1 {
		t.Fatalf("%d incidents after the started job overran, want 1", len(list))
	}
	for _, paused := range []string{"true", "false"} {
		ts.request(t, "PATCH", fmt.Sprintf("/api/v1/heartbeats/%d", hb.ID), `{"paused":`+paused+`}`, bearer(admin)...).mustStatus(t, "pause "+paused, http.StatusOK)
	}
	ts.request(t, "GET", hb.PingURL, "").mustStatus(t, "ping", http.StatusOK)
	if inc := ts.getIncident(t, list[0].ID); inc.Status != "resolved" {
		t.Errorf("after pause, unpause and a ping, the incident is %s, want resolved", inc.Status)
	}
}
