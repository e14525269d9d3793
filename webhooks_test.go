package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// receiverMsg is one request a test receiver got.
type receiverMsg struct {
	Path     string
	ID       string
	Time     int64
	Type     string
	Data     map[string]any
	Body     []byte
	SignedBy []int // indexes of the receiver's secrets whose signature matched
}

// receiver is a webhook endpoint for tests. It checks signatures with its
// own implementation of the Standard Webhooks specification, keeps every
// attempt, and keeps each webhook-id once in got. Its mode says how it
// answers: "" (204), fail (500), hang, gone (410), busy (429 with
// Retry-After), redirect (302).
type receiver struct {
	*httptest.Server
	mu         sync.Mutex
	secrets    []string
	mode       string
	retryAfter string
	attempts   []receiverMsg
	got        []receiverMsg
	seen       map[string]bool
	release    chan struct{} // closed to end hanging requests
	unblocked  sync.Once
}

// unblock ends the hanging requests, and makes hang answer at once.
func (rc *receiver) unblock() { rc.unblocked.Do(func() { close(rc.release) }) }

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{seen: map[string]bool{}, release: make(chan struct{})}
	rc.Server = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.Close)
	t.Cleanup(rc.unblock) // runs first: hanging requests end before Close waits for them
	return rc
}

// verify checks a signature header against each secret: HMAC-SHA256, keyed
// with the base64-decoded secret after whsec_, of "id.timestamp.body".
func verify(secrets []string, id, timestamp string, body []byte, header string) []int {
	var matched []int
	for i, secret := range secrets {
		key, err := base64.StdEncoding.DecodeString(secret[len("whsec_"):])
		if err != nil {
			continue
		}
		h := hmac.New(sha256.New, key)
		h.Write([]byte(id + "." + timestamp + "." + string(body)))
		want := h.Sum(nil)
		for _, sig := range strings.Fields(header) {
			version, encoded, ok := strings.Cut(sig, ",")
			got, err := base64.StdEncoding.DecodeString(encoded)
			if ok && version == "v1" && err == nil && hmac.Equal(got, want) {
				matched = append(matched, i)
			}
		}
	}
	return matched
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	id, timestamp := r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp")
	msg := receiverMsg{Path: r.URL.Path, ID: id, SignedBy: verify(rc.secrets, id, timestamp, body, r.Header.Get("webhook-signature"))}
	msg.Time, _ = strconv.ParseInt(timestamp, 10, 64)
	var payload struct {
		Type string         `json:"type"`
		Data map[string]any `json:"data"`
	}
	_ = json.Unmarshal(body, &payload)
	msg.Type, msg.Data, msg.Body = payload.Type, payload.Data, body
	mode := rc.mode
	if len(msg.SignedBy) == 0 {
		mode = "unsigned"
	}
	rc.attempts = append(rc.attempts, msg)
	if mode == "" && !rc.seen[id] {
		rc.seen[id] = true
		rc.got = append(rc.got, msg)
	}
	rc.mu.Unlock()
	switch mode {
	case "":
		w.WriteHeader(http.StatusNoContent)
	case "unsigned":
		http.Error(w, "bad signature", http.StatusUnauthorized)
	case "fail":
		http.Error(w, "broken", http.StatusInternalServerError)
	case "hang":
		select {
		case <-rc.release:
		case <-r.Context().Done():
		}
	case "gone":
		http.Error(w, "gone", http.StatusGone)
	case "busy":
		w.Header().Set("Retry-After", rc.retryAfter)
		http.Error(w, "slow down", http.StatusTooManyRequests)
	case "redirect":
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
	}
}

func (rc *receiver) setMode(mode string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.mode = mode
}

// counts returns how many attempts and distinct messages came.
func (rc *receiver) counts() (attempts, got int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.attempts), len(rc.got)
}

func (rc *receiver) messages() []receiverMsg {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]receiverMsg(nil), rc.got...)
}

func (rc *receiver) allAttempts() []receiverMsg {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]receiverMsg(nil), rc.attempts...)
}

// createWebhook makes a webhook to rc as the admin and gives rc its secret.
func (ts *testServer) createWebhook(t *testing.T, admin string, rc *receiver, body string) webhookWithSecret {
	t.Helper()
	body = strings.Replace(body, "{", fmt.Sprintf(`{"url":%q,`, rc.URL), 1)
	wh := create[webhookWithSecret](t, ts, admin, "/api/v1/webhooks", body)
	rc.mu.Lock()
	rc.secrets = append(rc.secrets, wh.Secret)
	rc.mu.Unlock()
	return wh
}

// deliver runs the webhooks' timed work once and waits for its attempts.
func (ts *testServer) deliver() { ts.srv.deliverWebhooks(context.Background())() }

// deliverUntil runs the webhooks' work until cond holds and every attempt
// is recorded (the timer loop may have made the one cond saw), so that
// the test's clock moves only after the outcome is written.
func (ts *testServer) deliverUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitFor(t, what, func() bool {
		ts.deliver()
		return cond()
	})
	waitFor(t, "attempts to be recorded", func() bool {
		var leased int
		if err := ts.st.db.QueryRow(`SELECT count(*) FROM webhook_deliveries WHERE lease_until IS NOT NULL`).Scan(&leased); err != nil {
			t.Fatal(err)
		}
		return leased == 0
	})
}

// caughtUp waits for the event feed to reach the newest event.
func (ts *testServer) caughtUp(t *testing.T) {
	t.Helper()
	waitFor(t, "the feed to reach the newest event", func() bool {
		seq, err := ts.st.LatestEventSeq(context.Background())
		return err == nil && ts.srv.hub.log.current().position >= seq
	})
}

// transition applies an action to an incident as token.
func (ts *testServer) transition(t *testing.T, token string, id int64, action string) {
	t.Helper()
	ts.request(t, "PATCH", fmt.Sprintf("/api/v1/incidents/%d/%s", id, action), "", bearer(token)...).mustStatus(t, action, http.StatusOK)
}

func TestWebhookAdmin(t *testing.T) {
	ts := newTestServer(t)
	admin := ts.register(t, "admin", "password1")
	responder := ts.register(t, "responder", "password1")
	rc := newReceiver(t)
	wh := ts.createWebhook(t, admin, rc, `{"name":"ops"}`)
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(wh.Secret, "whsec_"))
	if !strings.HasPrefix(wh.Secret, "whsec_") || err != nil || len(key) != 32 {
		t.Errorf("secret %q; want whsec_ and the base64 of 32 bytes", wh.Secret)
	}
	if wh.Format != "standard" || wh.MinSeverity != "low" || !wh.Enabled || len(wh.EventTypes) != len(allWebhookEventTypes)-1 || contains(wh.EventTypes, "incident.occurred") {
		t.Errorf("created %+v; want the defaults: standard, low, enabled, every type but incident.occurred", wh.webhook)
	}
	if r := ts.request(t, "GET", "/api/v1/webhooks", "", bearer(admin)...); r.status != http.StatusOK || strings.Contains(string(r.body), wh.Secret) {
		t.Errorf("list: %d %s; want it without the secret", r.status, r.body)
	}
	for _, tt := range []struct {
		name, method, path, body, token string
		want                            int
	}{
		{"name taken", "POST", "/api/v1/webhooks", `{"name":"OPS","url":"https://example.com/hook"}`, admin, http.StatusConflict},
		{"no url", "POST", "/api/v1/webhooks", `{"name":"x"}`, admin, http.StatusUnprocessableEntity},
		{"relative url", "POST", "/api/v1/webhooks", `{"name":"x","url":"/hook"}`, admin, http.StatusUnprocessableEntity},
		{"ftp url", "POST", "/api/v1/webhooks", `{"name":"x","url":"ftp://example.com/"}`, admin, http.StatusUnprocessableEntity},
		{"ntfy without a topic", "POST", "/api/v1/webhooks", `{"name":"x","url":"https://ntfy.sh/","format":"ntfy"}`, admin, http.StatusUnprocessableEntity},
		{"ntfy without a topic on update", "PATCH", fmt.Sprintf("/api/v1/webhooks/%d", wh.ID), `{"format":"ntfy","url":"https://ntfy.sh"}`, admin, http.StatusUnprocessableEntity},
		{"unknown format", "POST", "/api/v1/webhooks", `{"name":"x","url":"https://example.com/","format":"xml"}`, admin, http.StatusUnprocessableEntity},
		{"unknown event type", "POST", "/api/v1/webhooks", `{"name":"x","url":"https://example.com/","event_types":["incident.exploded"]}`, admin, http.StatusUnprocessableEntity},
		{"no event types", "POST", "/api/v1/webhooks", `{"name":"x","url":"https://example.com/","event_types":[]}`, admin, http.StatusUnprocessableEntity},
		{"event types not a list", "POST", "/api/v1/webhooks", `{"name":"x","url":"https://example.com/","event_types":"incident.resolved"}`, admin, http.StatusUnprocessableEntity},
		{"bad severity", "POST", "/api/v1/webhooks", `{"name":"x","url":"https://example.com/","min_severity":"urgent"}`, admin, http.StatusUnprocessableEntity},
		{"bad enabled", "POST", "/api/v1/webhooks", `{"name":"x","url":"https://example.com/","enabled":"yes"}`, admin, http.StatusUnprocessableEntity},
		{"not an admin", "POST", "/api/v1/webhooks", `{"name":"y","url":"https://example.com/"}`, responder, http.StatusForbidden},
		{"not an admin reads", "GET", "/api/v1/webhooks", "", responder, http.StatusForbidden},
		{"no such webhook", "GET", "/api/v1/webhooks/999", "", admin, http.StatusNotFound},
		{"update no such webhook", "PATCH", "/api/v1/webhooks/999", `{"enabled":false}`, admin, http.StatusNotFound},
		{"update bad url", "PATCH", fmt.Sprintf("/api/v1/webhooks/%d", wh.ID), `{"url":"nope"}`, admin, http.StatusUnprocessableEntity},
		{"rotate no such webhook", "POST", "/api/v1/webhooks/999/rotate", "", admin, http.StatusNotFound},
		{"test no such webhook", "POST", "/api/v1/webhooks/999/test", "", admin, http.StatusNotFound},
		{"delete no such webhook", "DELETE", "/api/v1/webhooks/999", "", admin, http.StatusNotFound},
	} {
		if r := ts.request(t, tt.method, tt.path, tt.body, bearer(tt.token)...); r.status != tt.want {
			t.Errorf("%s: %s %s = %d %s, want %d", tt.name, tt.method, tt.path, r.status, r.body, tt.want)
		}
	}
	var updated webhook
	ts.request(t, "PATCH", fmt.Sprintf("/api/v1/webhooks/%d", wh.ID), `{"min_severity":"high","event_types":["incident.resolved","incident.occurred"],"labels":{"team":"ops"}}`,
		bearer(admin)...).mustStatus(t, "update", http.StatusOK).json(t, &updated)
	if updated.MinSeverity != "high" || len(updated.EventTypes) != 2 || updated.Labels["team"] != "ops" || updated.Name != "ops" {
		t.Errorf("updated %+v; want min_severity high, two event types, the label, the name kept", updated)
	}

	// The test event reaches the receiver, signed, and its answer comes back.
	var res webhookTestResult
	ts.request(t, "POST", fmt.Sprintf("/api/v1/webhooks/%d/test", wh.ID), "", bearer(admin)...).mustStatus(t, "test", http.StatusOK).json(t, &res)
	if res.Status != http.StatusNoContent || res.Error != "" {
		t.Errorf("test: %+v; want the receiver's 204", res)
	}
	if got := rc.messages(); len(got) != 1 || got[0].Type != "webhook.test" || len(got[0].SignedBy) != 1 {
		t.Errorf("receiver got %+v; want one signed webhook.test", got)
	}
	rc.setMode("fail")
	ts.request(t, "POST", fmt.Sprintf("/api/v1/webhooks/%d/test", wh.ID), "", bearer(admin)...).mustStatus(t, "test", http.StatusOK).json(t, &res)
	if res.Status != http.StatusInternalServerError || res.Body != "broken\n" || res.Error == "" {
		t.Errorf("test of a failing receiver: %+v; want its 500 and its answer", res)
	}

	ts.request(t, "DELETE", fmt.Sprintf("/api/v1/webhooks/%d", wh.ID), "", bearer(admin)...).mustStatus(t, "delete", http.StatusNoContent)
	var audit []auditEntry
	ts.request(t, "GET", "/api/v1/audit", "", bearer(admin)...).mustStatus(t, "audit", http.StatusOK).json(t, &audit)
	var actions []string
	for _, e := range audit {
		if strings.HasPrefix(e.Action, "webhook.") {
			actions = append(actions, e.Action)
		}
	}
	if got := strings.Join(actions, " "); !strings.Contains(got, "webhook.created") || !strings.Contains(got, "webhook.updated") || !strings.Contains(got, "webhook.deleted") {
		t.Errorf("audit actions %q; want created, updated and deleted", got)
	}
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// allEventTypes asks a webhook for every event type.
const allEventTypes = `["incident.triggered","incident.acknowledged","incident.unacknowledged","incident.resolved","incident.reopened","incident.occurred","incident.note_added",
	"incident.escalated","heartbeat.down","heartbeat.up"]`

// msgSeq is the event sequence number in a webhook-id.
func msgSeq(t *testing.T, id string) int64 {
	t.Helper()
	i := strings.LastIndex(id, "_")
	n, err := strconv.ParseInt(id[i+1:], 10, 64)
	if err != nil {
		t.Fatalf("webhook-id %q: %v", id, err)
	}
	return n
}

func TestWebhookDeliveryOrder(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.publicURL = "https://incidents.example.com" })
	admin := ts.register(t, "admin", "password1")
	good, failing, hanging, filtered := newReceiver(t), newReceiver(t), newReceiver(t), newReceiver(t)
	failing.setMode("fail")
	hanging.setMode("hang")
	ts.createWebhook(t, admin, good, `{"name":"good","event_types":`+allEventTypes+`}`)
	ts.createWebhook(t, admin, failing, `{"name":"failing"}`)
	ts.createWebhook(t, admin, hanging, `{"name":"hanging"}`)
	ts.createWebhook(t, admin, filtered, `{"name":"critical db","min_severity":"critical","labels":{"team":"db"},"event_types":["incident.triggered"]}`)

	var inc incident
	report := `{"title":"disk full","severity":"high","dedup_key":"disk"}`
	ts.postIncident(t, report).mustStatus(t, "report", http.StatusCreated).json(t, &inc)
	ts.postIncident(t, report).mustStatus(t, "report again", http.StatusOK) // the same key: an occurred event
	ts.transition(t, admin, inc.ID, "acknowledge")
	ts.request(t, "POST", fmt.Sprintf("/api/v1/incidents/%d/notes", inc.ID), `{"body":"on it"}`, bearer(admin)...).mustStatus(t, "note", http.StatusCreated)
	ts.transition(t, admin, inc.ID, "unacknowledge")
	ts.transition(t, admin, inc.ID, "resolve")
	ts.transition(t, admin, inc.ID, "reopen")
	ts.postIncident(t, `{"title":"replica lag","severity":"critical","labels":{"team":"db"}}`).mustStatus(t, "report", http.StatusCreated)

	// The hanging endpoint's attempt stays in flight: the loop does not
	// wait for it, and the others go on.
	waitFor(t, "the good endpoint to get every event", func() bool {
		ts.srv.deliverWebhooks(context.Background())
		_, got := good.counts()
		return got >= 8
	})
	var types []string
	var last int64
	for _, m := range good.messages() {
		types = append(types, m.Type)
		if seq := msgSeq(t, m.ID); seq <= last {
			t.Errorf("webhook-id %s after seq %d: out of order", m.ID, last)
		} else {
			last = seq
		}
	}
	want := "incident.triggered incident.occurred incident.acknowledged incident.note_added incident.unacknowledged incident.resolved incident.reopened incident.triggered"
	if got := strings.Join(types, " "); got != want {
		t.Errorf("good endpoint got %s, want %s", got, want)
	}
	first, ack := good.messages()[0], good.messages()[2]
	if first.Data["id"] != float64(inc.ID) || first.Data["title"] != "disk full" || first.Data["status"] != "open" || first.Data["actor"] != nil ||
		first.Data["url"] != fmt.Sprintf("https://incidents.example.com/api/v1/incidents/%d", inc.ID) {
		t.Errorf("triggered data %v; want the incident, a null actor and its URL", first.Data)
	}
	if actor, _ := ack.Data["actor"].(map[string]any); actor["user"] != "admin" || ack.Data["status"] != "acknowledged" {
		t.Errorf("acknowledged data %v; want the admin as actor and the status after it", ack.Data)
	}
	// A failing endpoint retries its first event and holds back the rest,
	// for itself alone.
	for _, m := range failing.allAttempts() {
		if m.Type != "incident.triggered" || m.ID != failing.allAttempts()[0].ID {
			t.Errorf("failing endpoint got %s %s; want only retries of its first event", m.ID, m.Type)
		}
	}
	if n, _ := hanging.counts(); n != 1 {
		t.Errorf("hanging endpoint got %d attempts, want 1 in flight", n)
	}
	if got := filtered.messages(); len(got) != 1 || got[0].Data["title"] != "replica lag" {
		t.Errorf("filtered endpoint got %v; want the critical db incident alone", got)
	}
}

func TestWebhookRetries(t *testing.T) {
	ts := newTestServer(t)
	admin := ts.register(t, "admin", "password1")
	rc := newReceiver(t)
	rc.setMode("fail")
	wh := ts.createWebhook(t, admin, rc, `{"name":"flaky"}`)
	failingSince := func() *time.Time {
		t.Helper()
		var got webhook
		token := ts.login(t, "admin", "password1") // the clock moves days
		ts.request(t, "GET", fmt.Sprintf("/api/v1/webhooks/%d", wh.ID), "", bearer(token)...).mustStatus(t, "get webhook", http.StatusOK).json(t, &got)
		return got.FailingSince
	}
	if since := failingSince(); since != nil {
		t.Errorf("a new webhook is failing since %v, want null", since)
	}
	queued := ts.clock.Now()
	ts.createIncident(t, "disk full", "high")
	ts.deliverUntil(t, "the first attempt", func() bool { n, _ := rc.counts(); return n == 1 })
	if since := failingSince(); since == nil || !since.Equal(queued) {
		t.Errorf("after a failed attempt: failing since %v, want %v, when its event was queued", since, queued)
	}
	for i, wait := range retrySchedule[:3] {
		ts.clock.Advance(wait - time.Second)
		ts.deliver()
		if n, _ := rc.counts(); n != i+1 {
			t.Fatalf("%d attempts %s before retry %d is due, want %d", n, time.Second, i+1, i+1)
		}
		ts.clock.Advance(wait/10 + 2*time.Second) // past the jitter
		ts.deliverUntil(t, fmt.Sprintf("retry %d", i+1), func() bool { n, _ := rc.counts(); return n == i+2 })
	}
	// It succeeds: no more retries, and the next event goes.
	rc.setMode("")
	ts.clock.Advance(retrySchedule[3] + retrySchedule[3]/10 + time.Second)
	ts.deliverUntil(t, "the delivery", func() bool { _, got := rc.counts(); return got == 1 })
	if since := failingSince(); since != nil {
		t.Errorf("after the delivery succeeded: failing since %v, want null", since)
	}
	ts.clock.Advance(48 * time.Hour)
	ts.deliver()
	if n, _ := rc.counts(); n != 5 {
		t.Errorf("%d attempts after a success, want 5", n)
	}
	// 429 with Retry-After: the receiver's wait, not the schedule's 5 s.
	rc.mu.Lock()
	rc.mode, rc.retryAfter = "busy", "600"
	rc.mu.Unlock()
	ts.createIncident(t, "cpu hot", "high")
	ts.deliverUntil(t, "the 429", func() bool { n, _ := rc.counts(); return n == 6 })
	ts.clock.Advance(time.Minute)
	ts.deliver()
	if n, _ := rc.counts(); n != 6 {
		t.Errorf("%d attempts a minute after a Retry-After of 600 s, want 6", n)
	}
	rc.setMode("")
	ts.clock.Advance(11 * time.Minute)
	ts.deliverUntil(t, "the delivery after Retry-After", func() bool { _, got := rc.counts(); return got == 2 })
	var status string
	var attempts, code int
	ts.st.db.QueryRow(`SELECT status, attempts, response_code FROM webhook_deliveries ORDER BY event_seq DESC LIMIT 1`).Scan(&status, &attempts, &code)
	if status != "succeeded" || attempts != 2 || code != http.StatusNoContent {
		t.Errorf("delivery %s after %d attempts, code %d; want succeeded after 2, 204", status, attempts, code)
	}
}

func TestWebhookGivesUp(t *testing.T) {
	ts := newTestServer(t)
	admin := ts.register(t, "admin", "password1")
	rc := newReceiver(t)
	rc.setMode("fail")
	wh := ts.createWebhook(t, admin, rc, `{"name":"dead"}`)
	ts.createIncident(t, "disk full", "high")
	ts.deliverUntil(t, "the first attempt", func() bool { n, _ := rc.counts(); return n == 1 })
	for i, wait := range retrySchedule {
		ts.clock.Advance(wait + wait/10 + time.Second)
		ts.deliverUntil(t, fmt.Sprintf("retry %d", i+1), func() bool { n, _ := rc.counts(); return n == i+2 })
	}
	admin = ts.login(t, "admin", "password1") // the first token expired days ago
	var got webhook
	ts.request(t, "GET", fmt.Sprintf("/api/v1/webhooks/%d", wh.ID), "", bearer(admin)...).mustStatus(t, "get", http.StatusOK).json(t, &got)
	if got.Enabled || !strings.Contains(got.DisabledReason, "failed after 10 attempts") {
		t.Errorf("webhook after the last retry: enabled %v, reason %q; want disabled, saying why", got.Enabled, got.DisabledReason)
	}
	var status string
	ts.st.db.QueryRow(`SELECT status FROM webhook_deliveries`).Scan(&status)
	if status != "failed" {
		t.Errorf("delivery %s, want failed", status)
	}
	var audit []auditEntry
	ts.request(t, "GET", "/api/v1/audit", "", bearer(admin)...).mustStatus(t, "audit", http.StatusOK).json(t, &audit)
	var disabled *auditEntry
	for i, e := range audit {
		if e.Action == "webhook.disabled" {
			disabled = &audit[i]
		}
	}
	if disabled == nil || disabled.Actor != nil || disabled.Target != fmt.Sprintf("webhook:%d", wh.ID) || !strings.Contains(fmt.Sprint(disabled.Details["reason"]), "10 attempts") {
		t.Errorf("audit entry %+v; want webhook.disabled by no one, with the reason", disabled)
	}
	// Disabled: later events are not sent.
	ts.createIncident(t, "cpu hot", "high")
	ts.clock.Advance(time.Hour)
	ts.caughtUp(t)
	ts.deliver()
	if n, _ := rc.counts(); n != 10 {
		t.Errorf("%d attempts after the webhook was disabled, want 10", n)
	}
}

func TestWebhookGoneAndRedirect(t *testing.T) {
	ts := newTestServer(t)
	admin := ts.register(t, "admin", "password1")
	gone, moved := newReceiver(t), newReceiver(t)
	gone.setMode("gone")
	moved.setMode("redirect")
	whGone := ts.createWebhook(t, admin, gone, `{"name":"gone"}`)
	ts.createWebhook(t, admin, moved, `{"name":"moved"}`)
	ts.createIncident(t, "disk full", "high")
	ts.deliverUntil(t, "an attempt to each", func() bool {
		a, _ := gone.counts()
		b, _ := moved.counts()
		return a == 1 && b == 1
	})
	var got webhook
	waitFor(t, "the 410 to disable the webhook", func() bool {
		ts.request(t, "GET", fmt.Sprintf("/api/v1/webhooks/%d", whGone.ID), "", bearer(admin)...).mustStatus(t, "get", http.StatusOK).json(t, &got)
		return !got.Enabled
	})
	if !strings.Contains(got.DisabledReason, "410") {
		t.Errorf("disabled_reason %q; want it to name the 410", got.DisabledReason)
	}
	// The redirect is a failure, retried, never followed.
	ts.clock.Advance(10 * time.Second)
	ts.deliverUntil(t, "the redirect's retry", func() bool { n, _ := moved.counts(); return n == 2 })
	for _, m := range moved.allAttempts() {
		if m.Path != "/" {
			t.Errorf("the redirect was followed to %s", m.Path)
		}
	}
	var errText string
	ts.st.db.QueryRow(`SELECT d.error FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id WHERE w.name = 'moved'`).Scan(&errText)
	if !strings.Contains(errText, "redirect") {
		t.Errorf("delivery error %q; want it to say redirect", errText)
	}
}

func TestWebhookRotation(t *testing.T) {
	ts := newTestServer(t)
	admin := ts.register(t, "admin", "password1")
	rc := newReceiver(t)
	wh := ts.createWebhook(t, admin, rc, `{"name":"rotating"}`)
	var rotated webhookWithSecret
	ts.request(t, "POST", fmt.Sprintf("/api/v1/webhooks/%d/rotate", wh.ID), "", bearer(admin)...).mustStatus(t, "rotate", http.StatusOK).json(t, &rotated)
	if rotated.Secret == wh.Secret || !strings.HasPrefix(rotated.Secret, "whsec_") {
		t.Fatalf("rotated secret %q; want a new whsec_ secret", rotated.Secret)
	}
	rc.mu.Lock()
	rc.secrets = append(rc.secrets, rotated.Secret)
	rc.mu.Unlock()
	ts.createIncident(t, "disk full", "high")
	ts.deliverUntil(t, "the first event", func() bool { _, got := rc.counts(); return got == 1 })
	if got := rc.messages()[0].SignedBy; fmt.Sprint(got) != "[0 1]" {
		t.Errorf("signed by secrets %v within a day of the rotation, want both [0 1]", got)
	}
	ts.clock.Advance(secretOverlap + time.Minute)
	ts.createIncident(t, "cpu hot", "high")
	ts.deliverUntil(t, "the second event", func() bool { _, got := rc.counts(); return got == 2 })
	if got := rc.messages()[1].SignedBy; fmt.Sprint(got) != "[1]" {
		t.Errorf("signed by secrets %v a day after the rotation, want the new one alone [1]", got)
	}
}

func TestWebhooksAcrossReplicas(t *testing.T) {
	a := newTestServer(t, func(c *config) { c.rateLimits = false })
	st, err := openStore(context.Background(), a.srv.cfg.databaseURL, 5*time.Second, defaultDBMaxConns)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	b := newTestServerOn(t, st, a.srv.cfg)
	b.startBackground(t)
	admin := a.register(t, "admin", "password1")
	receivers := []*receiver{newReceiver(t), newReceiver(t), newReceiver(t)}
	for i, rc := range receivers {
		a.createWebhook(t, admin, rc, fmt.Sprintf(`{"name":"endpoint %d"}`, i))
	}
	const n = 8
	for i := range n {
		a.createIncident(t, fmt.Sprintf("incident %d", i), "high")
	}
	waitFor(t, "every endpoint to get every event", func() bool {
		var wg sync.WaitGroup
		for _, ts := range []*testServer{a, b, a, b} {
			wg.Go(ts.deliver)
		}
		wg.Wait()
		for _, rc := range receivers {
			if _, got := rc.counts(); got < n {
				return false
			}
		}
		return true
	})
	for i, rc := range receivers {
		attempts := rc.allAttempts()
		if len(attempts) != n {
			t.Errorf("endpoint %d got %d attempts for %d events on two replicas, want one each", i, len(attempts), n)
		}
		for j := 1; j < len(attempts); j++ {
			if msgSeq(t, attempts[j].ID) <= msgSeq(t, attempts[j-1].ID) {
				t.Errorf("endpoint %d: %s after %s, out of order", i, attempts[j].ID, attempts[j-1].ID)
			}
		}
	}
}

func TestWebhookEventsWhileDown(t *testing.T) {
	down := newIdleServer(t)
	admin := down.register(t, "admin", "password1")
	rc := newReceiver(t)
	down.createWebhook(t, admin, rc, `{"name":"late"}`)
	for i := range 3 {
		down.createIncident(t, fmt.Sprintf("incident %d", i), "high")
	}
	up := down.replica(t)
	up.deliverUntil(t, "the events committed while no loop ran", func() bool { _, got := rc.counts(); return got == 3 })
}

func TestWebhookLeaseExpired(t *testing.T) {
	dying := newIdleServer(t)
	admin := dying.register(t, "admin", "password1")
	rc := newReceiver(t)
	dying.createWebhook(t, admin, rc, `{"name":"survivor"}`)
	dying.createIncident(t, "disk full", "high")
	// The dying replica queues the event and claims its attempt, then dies
	// before sending it.
	ctx := context.Background()
	seq, err := dying.st.LatestEventSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := dying.st.QueueWebhookEvents(ctx, seq, dying.clock.Now(), dying.srv.webhookBodies); err != nil {
		t.Fatal(err)
	}
	claimed, err := dying.st.ClaimDeliveries(ctx, 10, webhookLease, dying.clock.Now())
	if err != nil || len(claimed) != 1 {
		t.Fatalf("claimed %v, %v; want one delivery", claimed, err)
	}
	up := dying.replica(t)
	up.clock.Advance(dying.clock.Now().Sub(up.clock.Now())) // the same time
	up.deliver()
	if n, _ := rc.counts(); n != 0 {
		t.Fatalf("%d attempts while the lease holds, want 0", n)
	}
	up.clock.Advance(webhookLease)
	up.deliverUntil(t, "the attempt again once the lease expired", func() bool { _, got := rc.counts(); return got == 1 })
	if got, want := rc.messages()[0].ID, claimed[0].msgID(); got != want {
		t.Errorf("webhook-id %s, want the claimed attempt's %s", got, want)
	}
	var attempts int
	up.st.db.QueryRow(`SELECT attempts FROM webhook_deliveries`).Scan(&attempts)
	if attempts != 2 {
		t.Errorf("%d attempts recorded, want 2 (the lost one and the re-send)", attempts)
	}
}

func TestWebhookDeliveriesLog(t *testing.T) {
	ts := newTestServer(t)
	admin := ts.register(t, "admin", "password1")
	rc := newReceiver(t)
	rc.setMode("gone")
	wh := ts.createWebhook(t, admin, rc, `{"name":"log"}`)
	path := fmt.Sprintf("/api/v1/webhooks/%d", wh.ID)
	ts.createIncident(t, "disk full", "high")
	ts.deliverUntil(t, "the 410", func() bool { n, _ := rc.counts(); return n == 1 })
	var list []deliveryView
	ts.request(t, "GET", path+"/deliveries", "", bearer(admin)...).mustStatus(t, "deliveries", http.StatusOK).json(t, &list)
	if len(list) != 1 || list[0].Status != "failed" || list[0].ResponseCode == nil || *list[0].ResponseCode != http.StatusGone ||
		list[0].Attempts != 1 || list[0].Type != "incident.triggered" || list[0].MessageID != rc.allAttempts()[0].ID || list[0].NextAttemptAt != nil {
		t.Fatalf("deliveries %+v; want the one that failed with 410 after 1 attempt", list)
	}
	failed := list[0]

	// Enabled again, it sends what happened meanwhile; the failed event
	// goes again on request, with its webhook-id.
	ts.createIncident(t, "cpu hot", "high")
	rc.setMode("")
	ts.request(t, "PATCH", path, `{"enabled":true}`, bearer(admin)...).mustStatus(t, "enable", http.StatusOK)
	ts.deliverUntil(t, "the event from while it was disabled", func() bool { _, got := rc.counts(); return got == 1 })
	var retried deliveryView
	ts.request(t, "POST", fmt.Sprintf("%s/deliveries/%d/retry", path, failed.ID), "", bearer(admin)...).mustStatus(t, "retry", http.StatusOK).json(t, &retried)
	if retried.Status != "pending" || retried.Attempts != 0 || retried.NextAttemptAt == nil {
		t.Errorf("retried %+v; want pending, due now", retried)
	}
	ts.deliverUntil(t, "the retried event", func() bool { _, got := rc.counts(); return got == 2 })
	if got := rc.messages()[1].ID; got != failed.MessageID {
		t.Errorf("retried with webhook-id %s, want %s", got, failed.MessageID)
	}

	r := ts.request(t, "GET", path+"/deliveries?limit=1", "", bearer(admin)...).mustStatus(t, "first page", http.StatusOK)
	r.json(t, &list)
	if len(list) != 1 || list[0].ID == failed.ID || !strings.Contains(r.header.Get("Link"), fmt.Sprintf("before=%d", list[0].ID)) {
		t.Errorf("first page %+v, Link %q; want the newest and a next page before it", list, r.header.Get("Link"))
	}
	ts.st.db.Exec(`UPDATE webhook_deliveries SET lease_until = $2 WHERE id = $1`, failed.ID, ts.clock.Now().Add(time.Minute))
	for _, tt := range []struct {
		name, method, path string
		want               int
	}{
		{"in flight", "POST", fmt.Sprintf("%s/deliveries/%d/retry", path, failed.ID), http.StatusConflict},
		{"no such delivery", "POST", path + "/deliveries/999/retry", http.StatusNotFound},
		{"another webhook's", "POST", fmt.Sprintf("/api/v1/webhooks/%d/deliveries/%d/retry", wh.ID+1, failed.ID), http.StatusNotFound},
		{"bad delivery id", "POST", path + "/deliveries/x/retry", http.StatusUnprocessableEntity},
		{"no such webhook", "GET", "/api/v1/webhooks/999/deliveries", http.StatusNotFound},
		{"bad limit", "GET", path + "/deliveries?limit=0", http.StatusUnprocessableEntity},
	} {
		if r := ts.request(t, tt.method, tt.path, "", bearer(admin)...); r.status != tt.want {
			t.Errorf("%s: %s %s = %d %s, want %d", tt.name, tt.method, tt.path, r.status, r.body, tt.want)
		}
	}
}

func TestWebhookDenyPrivate(t *testing.T) {
	for _, tt := range []struct {
		addr string
		want bool
	}{
		{"127.0.0.1", true}, {"::1", true}, {"10.1.2.3", true}, {"172.16.0.1", true}, {"192.168.1.1", true},
		{"169.254.169.254", true}, {"fe80::1", true}, {"fd00:ec2::254", true}, {"100.64.0.1", true}, {"0.0.0.0", true},
		{"::ffff:127.0.0.1", true}, {"224.0.0.1", true},
		{"93.184.215.14", false}, {"2606:2800:21f:cb07:6820:80da:af6b:8b2c", false}, {"100.128.0.1", false},
	} {
		if got := deniedAddr(netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("deniedAddr(%s) = %v, want %v", tt.addr, got, tt.want)
		}
	}

	ts := newTestServer(t, func(c *config) { c.webhookDenyPrivate = true })
	admin := ts.register(t, "admin", "password1")
	rc := newReceiver(t)
	byIP := ts.createWebhook(t, admin, rc, `{"name":"by ip"}`)
	byName := ts.createWebhook(t, admin, rc, `{"name":"by name"}`)
	port := rc.URL[strings.LastIndex(rc.URL, ":")+1:]
	ts.request(t, "PATCH", fmt.Sprintf("/api/v1/webhooks/%d", byName.ID), `{"url":"http://localhost:`+port+`/"}`, bearer(admin)...).mustStatus(t, "patch", http.StatusOK)
	for _, wh := range []webhookWithSecret{byIP, byName} {
		var res webhookTestResult
		ts.request(t, "POST", fmt.Sprintf("/api/v1/webhooks/%d/test", wh.ID), "", bearer(admin)...).mustStatus(t, "test", http.StatusOK).json(t, &res)
		if res.Status != 0 || !strings.Contains(res.Error, "WEBHOOK_DENY_PRIVATE") {
			t.Errorf("test of %s: %+v; want it refused by WEBHOOK_DENY_PRIVATE", wh.Name, res)
		}
	}
	if n, _ := rc.counts(); n != 0 {
		t.Errorf("the receiver on loopback got %d requests, want 0", n)
	}
}

func TestWebhookShutdownWaits(t *testing.T) {
	ts := newTestServer(t)
	admin := ts.register(t, "admin", "password1")
	rc := newReceiver(t)
	rc.setMode("hang")
	ts.createWebhook(t, admin, rc, `{"name":"slow"}`)
	ts.createIncident(t, "disk full", "high")
	waitFor(t, "an attempt in flight", func() bool {
		ts.srv.deliverWebhooks(context.Background())
		n, _ := rc.counts()
		return n == 1
	})
	short, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if ts.srv.drainWebhooks(short) {
		t.Fatal("drainWebhooks returned true with an attempt still hanging")
	}
	rc.unblock()
	if !ts.srv.drainWebhooks(context.Background()) {
		t.Fatal("drainWebhooks returned false without a deadline")
	}
	var status string
	ts.st.db.QueryRow(`SELECT status FROM webhook_deliveries`).Scan(&status)
	if status != "succeeded" {
		t.Errorf("the attempt that finished while draining is %q, want succeeded (recorded before shutdown)", status)
	}
	// Draining, the server starts no attempt: the next event waits for
	// another replica.
	ts.createIncident(t, "cpu hot", "high")
	ts.caughtUp(t)
	ts.deliver()
	var claimed int
	ts.st.db.QueryRow(`SELECT count(*) FROM webhook_deliveries WHERE attempts > 0 AND status = 'pending'`).Scan(&claimed)
	if n, _ := rc.counts(); n != 1 || claimed != 0 {
		t.Errorf("%d attempts and %d claimed after draining began, want 1 and 0", n, claimed)
	}
}

func TestWebhookChatAndPushFormats(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.publicURL = "https://incidents.example.com" })
	admin := ts.register(t, "admin", "password1")
	slack, ntfy := newReceiver(t), newReceiver(t)
	ts.createWebhook(t, admin, slack, `{"name":"chat","format":"slack"}`)
	var wh webhookWithSecret
	ts.request(t, "POST", "/api/v1/webhooks", fmt.Sprintf(`{"name":"phone","format":"ntfy","url":"%s/ops-alerts"}`, ntfy.URL), bearer(admin)...).
		mustStatus(t, "create ntfy webhook", http.StatusCreated).json(t, &wh)
	ntfy.mu.Lock()
	ntfy.secrets = append(ntfy.secrets, wh.Secret)
	ntfy.mu.Unlock()
	inc := ts.createIncident(t, "disk full", "high")
	ts.transition(t, admin, inc.ID, "resolve")
	ts.deliverUntil(t, "both events to both", func() bool {
		_, a := slack.counts()
		_, b := ntfy.counts()
		return a == 2 && b == 2
	})
	link := fmt.Sprintf("https://incidents.example.com/api/v1/incidents/%d", inc.ID)

	var chat struct {
		Text        string `json:"text"`
		Attachments []struct {
			Color     string `json:"color"`
			Title     string `json:"title"`
			TitleLink string `json:"title_link"`
			Fields    []struct {
				Title string `json:"title"`
				Value string `json:"value"`
				Short bool   `json:"short"`
			} `json:"fields"`
		} `json:"attachments"`
	}
	for i, want := range []struct{ text, color, status string }{
		{fmt.Sprintf("[HIGH] Incident #%d opened: disk full", inc.ID), "#ff7a00", "open"},
		{fmt.Sprintf("[HIGH] Incident #%d resolved by admin: disk full", inc.ID), "#2eb886", "resolved"},
	} {
		if err := json.Unmarshal(slack.messages()[i].Body, &chat); err != nil {
			t.Fatal(err)
		}
		if chat.Text != want.text || len(chat.Attachments) != 1 || chat.Attachments[0].Color != want.color ||
			chat.Attachments[0].TitleLink != link || len(chat.Attachments[0].Fields) != 2 || chat.Attachments[0].Fields[0].Value != want.status {
			t.Errorf("slack message %d: %s; want text %q, colour %s, a link and the status %s", i, slack.messages()[i].Body, want.text, want.color, want.status)
		}
	}

	var push struct {
		Topic    string `json:"topic"`
		Title    string `json:"title"`
		Message  string `json:"message"`
		Priority int    `json:"priority"`
		Click    string `json:"click"`
	}
	got := ntfy.messages()[0]
	if err := json.Unmarshal(got.Body, &push); err != nil {
		t.Fatal(err)
	}
	if got.Path != "/" || push.Topic != "ops-alerts" || push.Priority != 4 || push.Click != link ||
		push.Title != fmt.Sprintf("[HIGH] Incident #%d opened: disk full", inc.ID) || push.Message != "d" {
		t.Errorf("ntfy message to %s: %s; want it at the root, topic ops-alerts, priority 4, a click action", got.Path, got.Body)
	}
	var res webhookTestResult
	ts.request(t, "POST", fmt.Sprintf("/api/v1/webhooks/%d/test", wh.ID), "", bearer(admin)...).mustStatus(t, "test", http.StatusOK).json(t, &res)
	if last := ntfy.allAttempts()[len(ntfy.allAttempts())-1]; res.Status != http.StatusNoContent || !strings.Contains(string(last.Body), `"topic":"ops-alerts"`) {
		t.Errorf("ntfy test: %+v, body %s; want it published to the topic", res, last.Body)
	}
}

func TestWebhookRetriesResumeAfterRestart(t *testing.T) {
	first := newIdleServer(t)
	admin := first.register(t, "admin", "password1")
	rc := newReceiver(t)
	rc.setMode("fail")
	first.createWebhook(t, admin, rc, `{"name":"flaky"}`)
	first.createIncident(t, "disk full", "high")
	// The first server makes two attempts of the retry series, then stops.
	ctx := context.Background()
	seq, err := first.st.LatestEventSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first.srv.hub.log.begin(seq) // as if its feed had reached the event
	first.deliverUntil(t, "the first attempt", func() bool { n, _ := rc.counts(); return n == 1 })
	first.clock.Advance(retrySchedule[0] + retrySchedule[0]/10 + time.Second)
	first.deliverUntil(t, "the second attempt", func() bool { n, _ := rc.counts(); return n == 2 })

	// Another server, started later, goes on with the series from the
	// database: not before the third attempt is due, then with the same
	// webhook-id.
	next := first.replica(t)
	next.clock.Advance(first.clock.Now().Sub(next.clock.Now()))
	next.deliver()
	if n, _ := rc.counts(); n != 2 {
		t.Fatalf("%d attempts before the third was due, want 2", n)
	}
	rc.setMode("")
	next.clock.Advance(retrySchedule[1] + retrySchedule[1]/10 + time.Second)
	next.deliverUntil(t, "the third attempt", func() bool { _, got := rc.counts(); return got == 1 })
	if a := rc.allAttempts(); a[2].ID != a[0].ID {
		t.Errorf("third attempt's webhook-id %s, want the series' %s", a[2].ID, a[0].ID)
	}
}

// Endpoints whose cursors stand at different events are each sent what
// follows their own cursor, from one read of the events.
func TestWebhookCursorsApart(t *testing.T) {
	ts := newTestServer(t)
	admin := ts.register(t, "admin", "password1")
	early, late := newReceiver(t), newReceiver(t)
	ts.createWebhook(t, admin, early, `{"name":"early"}`)
	ts.createIncident(t, "first", "high")
	ts.waitStream(t)
	ts.createWebhook(t, admin, late, `{"name":"late"}`)
	ts.createIncident(t, "second", "high")
	ts.deliverUntil(t, "both endpoints to catch up", func() bool { return len(early.messages()) == 2 && len(late.messages()) == 1 })
	titles := func(rc *receiver) (got []any) {
		for _, m := range rc.messages() {
			got = append(got, m.Data["title"])
		}
		return got
	}
	if got := fmt.Sprint(titles(early), titles(late)); got != "[first second] [second]" {
		t.Errorf("early and late endpoints got %s, want [first second] [second]", got)
	}
}
