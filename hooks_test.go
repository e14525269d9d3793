package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// createIntegration makes an integration as the admin and returns it with
// its key.
func (ts *testServer) createIntegration(t *testing.T, admin, body string) integrationWithKey {
	t.Helper()
	return create[integrationWithKey](t, ts, admin, "/api/v1/integrations", body)
}

// hook posts body to a hook with the key as a bearer token.
func (ts *testServer) hook(t *testing.T, path, key, body string, headers ...string) response {
	t.Helper()
	return ts.request(t, "POST", path, body, append(bearer(key), headers...)...)
}

// incidentsWithKey lists the incidents with dedup key key, oldest first.
func (ts *testServer) incidentsWithKey(t *testing.T, key string) []incident {
	t.Helper()
	var list []incident
	ts.request(t, "GET", "/api/v1/incidents?sort=created_at&dedup_key="+key, "").mustStatus(t, "list", http.StatusOK).json(t, &list)
	return list
}

func TestIntegrationAdmin(t *testing.T) {
	ts := newTestServer(t)
	admin := ts.register(t, "admin", "password1")
	responder := ts.register(t, "responder", "password1")

	ig := ts.createIntegration(t, admin, `{"name":"prometheus","type":"alertmanager","default_severity":"high","labels":{"team":"infra"}}`)
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(ig.Key) || ig.Type != "alertmanager" || ig.DefaultSeverity != "high" ||
		ig.GroupBy != "alert" || !ig.Enabled || ig.Labels["team"] != "infra" {
		t.Errorf("created %+v; want a 32-hex-digit key and the settings sent", ig)
	}
	r := ts.request(t, "GET", "/api/v1/integrations", "", bearer(admin)...)
	if strings.Contains(string(r.body), ig.Key) || !strings.Contains(string(r.body), `"prometheus"`) {
		t.Errorf("list = %s; want the integration without its key", r.body)
	}
	for _, tt := range []struct {
		name, method, path, body, token string
		want                            int
	}{
		{"name taken", "POST", "/api/v1/integrations", `{"name":"Prometheus","type":"generic"}`, admin, http.StatusConflict},
		{"unknown type", "POST", "/api/v1/integrations", `{"name":"x","type":"nagios"}`, admin, http.StatusUnprocessableEntity},
		{"missing name", "POST", "/api/v1/integrations", `{"type":"generic"}`, admin, http.StatusUnprocessableEntity},
		{"bad severity", "POST", "/api/v1/integrations", `{"name":"x","type":"generic","default_severity":"urgent"}`, admin, http.StatusUnprocessableEntity},
		{"type cannot change", "PATCH", fmt.Sprintf("/api/v1/integrations/%d", ig.ID), `{"type":"generic"}`, admin, http.StatusUnprocessableEntity},
		{"not an admin", "POST", "/api/v1/integrations", `{"name":"y","type":"generic"}`, responder, http.StatusForbidden},
		{"no such integration", "GET", "/api/v1/integrations/999", "", admin, http.StatusNotFound},
	} {
		if r := ts.request(t, tt.method, tt.path, tt.body, bearer(tt.token)...); r.status != tt.want {
			t.Errorf("%s: %s %s = %d %s, want %d", tt.name, tt.method, tt.path, r.status, r.body, tt.want)
		}
	}

	firing := amPayload("firing", amAlert("firing", "fp1", "DiskFull", "critical", "2026-12-01T10:00:00Z"))
	ts.hook(t, "/api/v1/hooks/alertmanager", ig.Key, firing).mustStatus(t, "hook with the key", http.StatusOK)

	// A rotated key replaces the old one at once.
	var rotated integrationWithKey
	ts.request(t, "POST", fmt.Sprintf("/api/v1/integrations/%d/rotate", ig.ID), "", bearer(admin)...).mustStatus(t, "rotate", http.StatusOK).json(t, &rotated)
	if rotated.Key == ig.Key {
		t.Fatal("rotate returned the same key")
	}
	ts.hook(t, "/api/v1/hooks/alertmanager", ig.Key, firing).mustStatus(t, "old key after rotate", http.StatusUnauthorized)
	ts.hook(t, "/api/v1/hooks/alertmanager", rotated.Key, firing).mustStatus(t, "new key", http.StatusOK)

	// Disabled, then deleted: refused, and nothing changes.
	ts.request(t, "PATCH", fmt.Sprintf("/api/v1/integrations/%d", ig.ID), `{"enabled":false}`, bearer(admin)...).mustStatus(t, "disable", http.StatusOK)
	resolved := amPayload("resolved", amAlert("resolved", "fp1", "DiskFull", "critical", "2026-12-01T10:00:00Z"))
	if r := ts.hook(t, "/api/v1/hooks/alertmanager", rotated.Key, resolved); r.status != http.StatusUnauthorized || r.detail(t) != "Integration disabled" {
		t.Errorf("disabled integration: %d %s, want 401 Integration disabled", r.status, r.body)
	}
	ts.request(t, "DELETE", fmt.Sprintf("/api/v1/integrations/%d", ig.ID), "", bearer(admin)...).mustStatus(t, "delete", http.StatusNoContent)
	ts.request(t, "GET", fmt.Sprintf("/api/v1/integrations/%d", ig.ID), "", bearer(admin)...).mustStatus(t, "get deleted", http.StatusNotFound)
	ts.hook(t, "/api/v1/hooks/alertmanager", rotated.Key, resolved).mustStatus(t, "deleted integration", http.StatusUnauthorized)
	if list := ts.incidentsWithKey(t, "fp1"); len(list) != 1 || list[0].Status != "open" || list[0].Source != "prometheus" {
		t.Errorf("incidents = %+v; want the one alert, still open, from prometheus", list)
	}
	var audit []auditEntry
	ts.request(t, "GET", "/api/v1/audit?actor=admin", "", bearer(admin)...).json(t, &audit)
	var actions []string
	for _, e := range audit {
		actions = append(actions, e.Action)
	}
	if got := strings.Join(actions, ","); !strings.Contains(got, "integration.deleted,integration.updated,integration.key_rotated,integration.created") {
		t.Errorf("audit actions = %s, want the integration's life", got)
	}
}

// amAlert is one alert of an Alertmanager webhook payload.
func amAlert(status, fingerprint, name, severity, startsAt string) string {
	return fmt.Sprintf(`{"status":%q,"labels":{"alertname":%q,"instance":"db-1:9100","severity":%q,"job":"node"},
		"annotations":{"summary":"%s on db-1","description":"The data volume is full.","runbook_url":"https://runbooks.example/%s","dashboard":"node"},
		"startsAt":%q,"endsAt":"0001-01-01T00:00:00Z","generatorURL":"https://prometheus.example/graph?g0.expr=up","fingerprint":%q}`,
		status, name, severity, name, name, startsAt, fingerprint)
}

// amPayload is an Alertmanager webhook payload (version 4) with alerts.
func amPayload(status string, alerts ...string) string {
	return fmt.Sprintf(`{"version":"4","groupKey":"{}:{alertname=\"DiskFull\"}","truncatedAlerts":0,"status":%q,"receiver":"incidents",
		"groupLabels":{"alertname":"DiskFull"},"commonLabels":{"alertname":"DiskFull"},"commonAnnotations":{},
		"externalURL":"https://alertmanager.example","notification_reason":"new","alerts":[%s]}`, status, strings.Join(alerts, ","))
}

func TestAlertmanagerHook(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.rateLimits = false })
	admin := ts.register(t, "admin", "password1")
	am := ts.createIntegration(t, admin, `{"name":"am","type":"alertmanager","labels":{"team":"infra"}}`)
	other := ts.createIntegration(t, admin, `{"name":"am-eu","type":"alertmanager"}`)
	post := func(key, body string) []hookResult {
		t.Helper()
		var out struct {
			Results []hookResult `json:"results"`
		}
		ts.hook(t, "/api/v1/hooks/alertmanager", key, body).mustStatus(t, "alertmanager hook", http.StatusOK).json(t, &out)
		return out.Results
	}
	outcomes := func(results []hookResult) string {
		var o []string
		for _, r := range results {
			o = append(o, r.Outcome)
		}
		return strings.Join(o, ",")
	}

	// Two alerts of one group: two incidents, mapped field by field.
	disk := amAlert("firing", "fp-disk", "DiskFull", "page", "2026-12-01T10:00:00Z")
	cpu := amAlert("firing", "fp-cpu", "CPUHigh", "warning", "2026-12-01T10:01:00Z")
	if got := outcomes(post(am.Key, amPayload("firing", disk, cpu))); got != "new,new" {
		t.Fatalf("first firing: outcomes %s, want new,new", got)
	}
	inc := ts.incidentsWithKey(t, "fp-disk")[0]
	var details map[string]any
	json.Unmarshal(inc.Details, &details)
	wantLinks := []link{{"https://prometheus.example/graph?g0.expr=up", "Source"}, {"https://runbooks.example/DiskFull", "Runbook"}, {"https://alertmanager.example", "Alertmanager"}}
	if inc.Title != "DiskFull on db-1" || inc.Description != "The data volume is full." || inc.Severity != "critical" || inc.Source != "am" ||
		inc.Labels["team"] != "infra" || inc.Labels["job"] != "node" || fmt.Sprint(inc.Links) != fmt.Sprint(wantLinks) || details["dashboard"] != "node" {
		t.Errorf("incident from the alert = %+v (details %v); want its summary, description, severity page→critical, labels, links, other annotations", inc, details)
	}
	if cpuInc := ts.incidentsWithKey(t, "fp-cpu"); len(cpuInc) != 1 || cpuInc[0].Severity != "medium" {
		t.Errorf("second alert of the group: %+v, want its own incident, warning→medium", cpuInc)
	}

	// Alertmanager re-sends a firing alert: not a new occurrence. A new
	// start is.
	if got := outcomes(post(am.Key, amPayload("firing", disk, cpu))); got != "repeated,repeated" {
		t.Errorf("re-send: outcomes %s, want repeated,repeated", got)
	}
	post(am.Key, amPayload("firing", amAlert("firing", "fp-disk", "DiskFull", "page", "2026-12-01T11:00:00Z")))
	if got := ts.getIncident(t, inc.ID); got.Occurrences != 2 {
		t.Errorf("after a re-send and a new start: %d occurrences, want 2", got.Occurrences)
	}

	// The same fingerprint from another integration is another incident.
	post(other.Key, amPayload("firing", disk))
	if list := ts.incidentsWithKey(t, "fp-disk"); len(list) != 2 || list[1].Source != "am-eu" {
		t.Errorf("same key from two integrations: %d incidents, want 2", len(list))
	}

	// Each alert's own status decides: the group says firing, one alert is
	// resolved. The integration is the actor.
	resolvedDisk := amAlert("resolved", "fp-disk", "DiskFull", "page", "2026-12-01T11:00:00Z")
	if got := outcomes(post(am.Key, amPayload("firing", resolvedDisk, cpu))); got != "resolved,repeated" {
		t.Errorf("one alert resolved: outcomes %s, want resolved,repeated", got)
	}
	var timeline []eventView
	ts.request(t, "GET", fmt.Sprintf("/api/v1/incidents/%d/events", inc.ID), "").json(t, &timeline)
	if last := timeline[len(timeline)-1]; last.Type != "resolved" || last.Actor == nil || last.Actor.Integration != "am" || last.Actor.User != "" {
		t.Errorf("last event = %s by %+v, want resolved by the integration am", last.Type, last.Actor)
	}
	// A resolve sent again, and one for an alert never seen firing, change
	// nothing and still answer 200.
	if got := outcomes(post(am.Key, amPayload("resolved", resolvedDisk, amAlert("resolved", "fp-never", "Ghost", "info", "2026-12-01T09:00:00Z")))); got != "ignored,ignored" {
		t.Errorf("duplicate and unknown resolves: outcomes %s, want ignored,ignored", got)
	}
	if list := ts.incidentsWithKey(t, "fp-never"); len(list) != 0 {
		t.Errorf("a resolve of an unknown alert made %d incidents", len(list))
	}
	// Truncated: the alerts left out are not resolved.
	post(am.Key, strings.Replace(amPayload("firing"), `"truncatedAlerts":0`, `"truncatedAlerts":5`, 1))
	if got := ts.incidentsWithKey(t, "fp-cpu")[0]; got.Status != "open" {
		t.Errorf("after a truncated payload the other alert is %s, want open", got.Status)
	}

	// Firing again within REOPEN_WINDOW reopens.
	refired := amPayload("firing", amAlert("firing", "fp-disk", "DiskFull", "page", "2026-12-01T12:00:00Z"))
	if got := outcomes(post(am.Key, refired)); got != "reopened" {
		t.Errorf("firing after resolve: %s, want reopened", got)
	}
	if got := outcomes(post(am.Key, refired)); got != "repeated" {
		t.Errorf("the reopening alert sent again: %s, want repeated", got)
	}

	for _, tt := range []struct {
		name, key, body string
		want            int
	}{
		{"not JSON", am.Key, `{"alerts":`, http.StatusBadRequest},
		{"alerts not a list", am.Key, `{"alerts":{}}`, http.StatusBadRequest},
		{"bad status", am.Key, amPayload("firing", amAlert("pending", "x", "X", "", "2026-12-01T10:00:00Z")), http.StatusBadRequest},
		{"bad time", am.Key, `{"alerts":[{"status":"firing","startsAt":"yesterday"}]}`, http.StatusBadRequest},
		{"wrong key", strings.Repeat("0", 32), amPayload("firing", disk), http.StatusUnauthorized},
		{"no key", "", amPayload("firing", disk), http.StatusUnauthorized},
	} {
		r := ts.request(t, "POST", "/api/v1/hooks/alertmanager", tt.body, bearer(tt.key)...)
		if r.status != tt.want || r.detail(t) == nil {
			t.Errorf("%s: %d %s, want %d with a detail", tt.name, r.status, r.body, tt.want)
		}
	}
	// Basic auth (the key as password) and ?token= work too.
	ts.request(t, "POST", "/api/v1/hooks/alertmanager", amPayload("firing", disk), "Authorization", "Basic "+basic("alertmanager", am.Key)).mustStatus(t, "basic auth", http.StatusOK)
	ts.request(t, "POST", "/api/v1/hooks/alertmanager?token="+am.Key, amPayload("firing", disk)).mustStatus(t, "token in the query", http.StatusOK)
	// An alertmanager key on another hook is refused.
	ts.hook(t, "/api/v1/hooks/generic", am.Key, `{"title":"x"}`).mustStatus(t, "key of another type", http.StatusUnauthorized)
}

func TestAlertmanagerHookGroups(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.rateLimits = false })
	admin := ts.register(t, "admin", "password1")
	am := ts.createIntegration(t, admin, `{"name":"grouped","type":"alertmanager","group_by":"group"}`)
	a := amAlert("firing", "fp-a", "DiskFull", "critical", "2026-12-01T10:00:00Z")
	b := amAlert("firing", "fp-b", "DiskFull", "critical", "2026-12-01T10:05:00Z")
	ts.hook(t, "/api/v1/hooks/alertmanager", am.Key, amPayload("firing", a)).mustStatus(t, "first", http.StatusOK)
	ts.hook(t, "/api/v1/hooks/alertmanager", am.Key, amPayload("firing", a, b)).mustStatus(t, "an alert joins", http.StatusOK)
	ts.hook(t, "/api/v1/hooks/alertmanager", am.Key, amPayload("firing", amAlert("resolved", "fp-a", "DiskFull", "critical", "2026-12-01T10:00:00Z"), b)).mustStatus(t, "one resolves", http.StatusOK)
	key := `{}:{alertname="DiskFull"}`
	list := ts.incidentsWithKey(t, key)
	if len(list) != 1 || list[0].Occurrences != 2 || list[0].Status != "open" {
		t.Fatalf("grouped incidents = %+v; want one, counted twice, open while an alert fires", list)
	}
	ts.hook(t, "/api/v1/hooks/alertmanager", am.Key, amPayload("resolved", amAlert("resolved", "fp-b", "DiskFull", "critical", "2026-12-01T10:05:00Z"))).mustStatus(t, "group resolved", http.StatusOK)
	if got := ts.getIncident(t, list[0].ID); got.Status != "resolved" {
		t.Errorf("after the group resolved: %s, want resolved", got.Status)
	}
}

func basic(user, password string) string {
	req, _ := http.NewRequest("GET", "/", nil)
	req.SetBasicAuth(user, password)
	return strings.TrimPrefix(req.Header.Get("Authorization"), "Basic ")
}

func TestGrafanaHook(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.rateLimits = false })
	admin := ts.register(t, "admin", "password1")
	g := ts.createIntegration(t, admin, `{"name":"grafana","type":"grafana","hmac_secret":"s3cret","timestamp_header":"X-Grafana-Alerting-Signature-Timestamp"}`)
	body := `{"receiver":"incidents","status":"firing","orgId":1,"title":"[FIRING:1] HighLatency","message":"latency","state":"alerting",
		"groupKey":"g","externalURL":"https://grafana.example/","alerts":[{"status":"firing","labels":{"alertname":"HighLatency","severity":"error"},
		"annotations":{"summary":"p99 over 2 s"},"startsAt":"2026-12-01T10:00:00Z","fingerprint":"gf1",
		"dashboardURL":"https://grafana.example/d/abc","panelURL":"https://grafana.example/d/abc?viewPanel=2","silenceURL":"https://grafana.example/alerting/silence/new",
		"values":{"B":2.4}}]}`
	sign := func(secret, ts, body string) string {
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(ts + ":" + body))
		return hex.EncodeToString(mac.Sum(nil))
	}
	for _, tt := range []struct {
		name    string
		headers []string
		want    int
	}{
		{"no signature", nil, http.StatusUnauthorized},
		{"wrong secret", []string{"X-Grafana-Alerting-Signature", sign("other", "1700000000", body), "X-Grafana-Alerting-Signature-Timestamp", "1700000000"}, http.StatusUnauthorized},
		{"wrong timestamp", []string{"X-Grafana-Alerting-Signature", sign("s3cret", "1700000000", body), "X-Grafana-Alerting-Signature-Timestamp", "1700000001"}, http.StatusUnauthorized},
		{"signed", []string{"X-Grafana-Alerting-Signature", sign("s3cret", "1700000000", body), "X-Grafana-Alerting-Signature-Timestamp", "1700000000"}, http.StatusOK},
		{"signed, the other header name", []string{"X-Grafana-Alert-Signature", sign("s3cret", "1700000000", body), "X-Grafana-Alerting-Signature-Timestamp", "1700000000"}, http.StatusOK},
	} {
		if r := ts.hook(t, "/api/v1/hooks/grafana", g.Key, body, tt.headers...); r.status != tt.want {
			t.Errorf("%s: %d %s, want %d", tt.name, r.status, r.body, tt.want)
		}
	}
	list := ts.incidentsWithKey(t, "gf1")
	if len(list) != 1 {
		t.Fatalf("%d incidents, want 1", len(list))
	}
	inc := list[0]
	var details map[string]any
	json.Unmarshal(inc.Details, &details)
	if inc.Title != "p99 over 2 s" || inc.Severity != "high" || len(inc.Links) != 4 || inc.Links[0].Text != "Dashboard" || fmt.Sprint(details["values"]) != "map[B:2.4]" {
		t.Errorf("incident from Grafana = %+v (details %v); want its summary, error→high, dashboard, panel, silence and Grafana links, values in details", inc, details)
	}
}

func TestPagerDutyEvents(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.rateLimits = false })
	admin := ts.register(t, "admin", "password1")
	pd := ts.createIntegration(t, admin, `{"name":"pd-clients","type":"pagerduty"}`)
	event := func(action, key, extra string) string {
		return fmt.Sprintf(`{"routing_key":%q,"event_action":%q,"dedup_key":%q%s}`, pd.Key, action, key, extra)
	}
	payload := `,"payload":{"summary":"Checkout failing","source":"web-1","severity":"error","component":"checkout","group":"shop","class":"5xx",
		"custom_details":{"rate":"12%"}},"client":"Monitor","client_url":"https://monitor.example/x","links":[{"href":"https://a.example","text":"A"}],"images":[{"src":"https://img.example/g.png"}],"unknown":true`
	send := func(body string, want int) map[string]any {
		t.Helper()
		var out map[string]any
		ts.request(t, "POST", "/v2/enqueue", body).mustStatus(t, "enqueue "+body, want).json(t, &out)
		return out
	}
	out := send(event("trigger", "", payload), http.StatusAccepted)
	key, _ := out["dedup_key"].(string)
	if out["status"] != "success" || out["message"] != "Event processed" || len(key) != 32 {
		t.Fatalf("trigger without a key answered %v, want success with a generated dedup_key", out)
	}
	inc := ts.incidentsWithKey(t, key)[0]
	if inc.Title != "Checkout failing" || inc.Severity != "high" || inc.Labels["component"] != "checkout" || inc.Labels["class"] != "5xx" ||
		len(inc.Links) != 3 || string(inc.Details) != `{"rate":"12%"}` {
		t.Errorf("incident from the event = %+v, details %s", inc, inc.Details)
	}
	if out := send(event("acknowledge", key, ""), http.StatusAccepted); out["dedup_key"] != key {
		t.Errorf("acknowledge answered %v", out)
	}
	if got := ts.getIncident(t, inc.ID); got.Status != "acknowledged" {
		t.Errorf("after acknowledge: %s", got.Status)
	}
	send(event("resolve", key, ""), http.StatusAccepted)
	send(event("resolve", key, ""), http.StatusAccepted)              // again: dropped
	send(event("acknowledge", "never-seen", ""), http.StatusAccepted) // unknown: dropped
	if got := ts.getIncident(t, inc.ID); got.Status != "resolved" {
		t.Errorf("after resolve: %s", got.Status)
	}
	for _, tt := range []struct{ name, body string }{
		{"no payload", event("trigger", "k", "")},
		{"bad severity", event("trigger", "k", `,"payload":{"summary":"s","source":"x","severity":"fatal"}`)},
		{"bad action", event("escalate", "k", payload)},
		{"resolve without key", event("resolve", "", "")},
		{"no routing key", `{"event_action":"trigger"` + payload + `}`},
		{"not JSON", `{"routing_key":`},
	} {
		out := send(tt.body, http.StatusBadRequest)
		if out["status"] != "invalid event" || out["message"] != "Event object is invalid" || len(out["errors"].([]any)) == 0 {
			t.Errorf("%s: answered %v, want the Events API's invalid event", tt.name, out)
		}
	}
	wrong := strings.Replace(event("trigger", "k", payload), pd.Key, strings.Repeat("f", 32), 1)
	ts.request(t, "POST", "/v2/enqueue", wrong).mustStatus(t, "wrong routing key", http.StatusUnauthorized)
}

func TestGenericHook(t *testing.T) {
	ts := newTestServer(t)
	admin := ts.register(t, "admin", "password1")
	g := ts.createIntegration(t, admin, `{"name":"zabbix","type":"generic","default_severity":"low"}`)
	var res hookResult
	ts.hook(t, "/api/v1/hooks/generic", g.Key, `{"title":"Ping loss on router","dedup_key":"z-1","labels":{"host":"r1"},
		"links":[{"href":"https://zabbix.example/e/1","text":"Event"},{"href":"javascript:alert(1)","text":"x"}],"details":{"trigger_id":42}}`).
		mustStatus(t, "trigger", http.StatusOK).json(t, &res)
	inc := ts.getIncident(t, *res.IncidentID)
	if res.Outcome != "new" || inc.Severity != "low" || inc.Source != "zabbix" || len(inc.Links) != 1 || string(inc.Details) != `{"trigger_id":42}` {
		t.Errorf("generic trigger: %+v, incident %+v", res, inc)
	}
	ts.hook(t, "/api/v1/hooks/generic", g.Key, `{"action":"resolve","dedup_key":"z-1"}`).mustStatus(t, "resolve", http.StatusOK).json(t, &res)
	if res.Outcome != "resolved" || ts.getIncident(t, inc.ID).Status != "resolved" {
		t.Errorf("generic resolve: %+v", res)
	}
	for _, tt := range []struct{ name, body string }{
		{"no title", `{"severity":"low"}`},
		{"bad action", `{"title":"t","action":"snooze"}`},
		{"resolve without key", `{"action":"resolve"}`},
		{"bad severity", `{"title":"t","severity":"urgent"}`},
		{"labels not strings", `{"title":"t","labels":{"a":1}}`},
		{"duplicate key", `{"title":"t","title":"u"}`},
	} {
		r := ts.hook(t, "/api/v1/hooks/generic", g.Key, tt.body)
		var body struct {
			Detail string       `json:"detail"`
			Errors []fieldError `json:"errors"`
		}
		r.json(t, &body)
		if r.status != http.StatusBadRequest || len(body.Errors) == 0 {
			t.Errorf("%s: %d %s, want 400 naming the problem", tt.name, r.status, r.body)
		}
	}
	// Its own rate limit bucket.
	slow := newTestServer(t, func(c *config) { c.limits.ingestKey = rateLimit{rate: 1, burst: 1} })
	sa := slow.register(t, "admin", "password1")
	k := slow.createIntegration(t, sa, `{"name":"g","type":"generic"}`)
	slow.hook(t, "/api/v1/hooks/generic", k.Key, `{"title":"one"}`).mustStatus(t, "first", http.StatusOK)
	slow.hook(t, "/api/v1/hooks/generic", k.Key, `{"title":"two"}`).mustStatus(t, "over the limit", http.StatusTooManyRequests)
}

// What PostgreSQL cannot store is refused with a 400 naming it, never a
// 500 that a sender would retry for ever; keys too long to store stay
// apart.
func TestHookBodiesStorable(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.rateLimits = false })
	admin := ts.register(t, "admin", "password1")
	am := ts.createIntegration(t, admin, `{"name":"am","type":"alertmanager","group_by":"group"}`)
	g := ts.createIntegration(t, admin, `{"name":"g","type":"generic"}`)
	pd := ts.createIntegration(t, admin, `{"name":"pd","type":"pagerduty"}`)
	for _, tt := range []struct{ name, path, key, body string }{
		{"NUL in an annotation", "/api/v1/hooks/alertmanager", am.Key, `{"groupKey":"k","alerts":[{"status":"firing","annotations":{"foo":"a\u0000b"}}]}`},
		{"NUL in details", "/api/v1/hooks/generic", g.Key, `{"title":"t","details":{"a\u0000":1}}`},
		{"NUL in a link", "/api/v1/hooks/generic", g.Key, `{"title":"t","links":[{"href":"https://x/\u0000"}]}`},
		{"NUL as the title", "/api/v1/hooks/generic", g.Key, `{"title":"\u0000"}`},
		{"NUL in custom details", "/v2/enqueue", "", `{"routing_key":"` + pd.Key + `","event_action":"trigger","payload":{"summary":"s","source":"x","severity":"info","custom_details":"\u0000"}}`},
	} {
		if r := ts.hook(t, tt.path, tt.key, tt.body); r.status != http.StatusBadRequest {
			t.Errorf("%s: %d %s, want 400", tt.name, r.status, r.body)
		}
	}
	// An escaped backslash before u0000 is text.
	ts.hook(t, "/api/v1/hooks/generic", g.Key, `{"title":"C:\\u0000 path"}`).mustStatus(t, "escaped backslash", http.StatusOK)
	// Two group keys alike in their first 300 characters are two groups.
	prefix := strings.Repeat("{env=\"prod\"}/", 25)
	for _, tail := range []string{`:{alertname="A"}`, `:{alertname="B"}`} {
		body := fmt.Sprintf(`{"groupKey":%q,"status":"firing","alerts":[{"status":"firing","labels":{"alertname":"x"},"startsAt":"2026-12-01T10:00:00Z"}]}`, prefix+tail)
		ts.hook(t, "/api/v1/hooks/alertmanager", am.Key, body).mustStatus(t, "long group key", http.StatusOK)
	}
	var n int
	ts.st.db.QueryRow(`SELECT count(DISTINCT dedup_key) FROM incidents WHERE source = 'am'`).Scan(&n)
	if n != 2 {
		t.Errorf("two long group keys made %d incidents, want 2", n)
	}
}

// A sender's labels are cut to what a report may carry, and the
// integration's own labels always fit and win.
func TestFitLabels(t *testing.T) {
	sent := map[string]string{"team": "from-alert", "a:b": "x", "": "y", "aaa-long": strings.Repeat("v", 1200)}
	for i := range 100 {
		sent[fmt.Sprintf("k%03d", i)] = "v"
	}
	got := fitLabels(sent, map[string]string{"team": "infra", "zz": "static"})
	if len(got) != maxLabels || got["team"] != "infra" || got["zz"] != "static" || got["a:b"] != "" || len([]rune(got["aaa-long"])) != maxLabelValueLen {
		t.Errorf("fitLabels: %d labels, team %q, zz %q, a:b %q, long of %d; want %d, infra, static, dropped, %d",
			len(got), got["team"], got["zz"], got["a:b"], len([]rune(got["aaa-long"])), maxLabels, maxLabelValueLen)
	}
	if _, ok := got[""]; ok {
		t.Error("an empty key was kept")
	}
}
