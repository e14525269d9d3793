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
	"strconv"
	"strings"
	"sync"
	"testing"
)

// receiverMsg is one request a test receiver got.
type receiverMsg struct {
	ID       string
	Time     int64
	Type     string
	Data     map[string]any
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
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{seen: map[string]bool{}, release: make(chan struct{})}
	rc.Server = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.Close)
	t.Cleanup(func() { close(rc.release) }) // runs first: hanging requests end before Close waits for them
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
	msg := receiverMsg{ID: id, SignedBy: verify(rc.secrets, id, timestamp, body, r.Header.Get("webhook-signature"))}
	msg.Time, _ = strconv.ParseInt(timestamp, 10, 64)
	var payload struct {
		Type string         `json:"type"`
		Data map[string]any `json:"data"`
	}
	_ = json.Unmarshal(body, &payload)
	msg.Type, msg.Data = payload.Type, payload.Data
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
	var wh webhookWithSecret
	body = strings.Replace(body, "{", fmt.Sprintf(`{"url":%q,`, rc.URL), 1)
	ts.request(t, "POST", "/api/v1/webhooks", body, bearer(admin)...).mustStatus(t, "create webhook "+body, http.StatusCreated).json(t, &wh)
	rc.mu.Lock()
	rc.secrets = append(rc.secrets, wh.Secret)
	rc.mu.Unlock()
	return wh
}

// deliver runs the webhooks' timed work once and waits for its attempts.
func (ts *testServer) deliver() { ts.srv.deliverWebhooks(context.Background())() }

// deliverUntil runs the webhooks' work until cond holds.
func (ts *testServer) deliverUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitFor(t, what, func() bool {
		ts.deliver()
		return cond()
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
	if wh.Format != "standard" || wh.MinSeverity != "low" || !wh.Enabled || len(wh.EventTypes) != 6 || contains(wh.EventTypes, "incident.occurred") {
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
		{"slack not yet", "POST", "/api/v1/webhooks", `{"name":"x","url":"https://example.com/","format":"slack"}`, admin, http.StatusUnprocessableEntity},
		{"ntfy not yet", "POST", "/api/v1/webhooks", `{"name":"x","url":"https://example.com/","format":"ntfy"}`, admin, http.StatusUnprocessableEntity},
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
	if r := ts.request(t, "POST", "/api/v1/webhooks", `{"name":"x","url":"https://example.com/","format":"slack"}`, bearer(admin)...); !strings.Contains(string(r.body), "not yet supported") {
		t.Errorf("slack: %s; want it to say not yet supported", r.body)
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
