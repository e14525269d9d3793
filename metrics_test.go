package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape is one parsed /metrics answer.
type scrape map[string]*dto.MetricFamily

// parseMetrics parses a body with Prometheus's own text parser.
func parseMetrics(t testing.TB, body []byte) scrape {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	families, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, body)
	}
	return families
}

// scrapeMetrics GETs /metrics and parses it.
func (ts *testServer) scrapeMetrics(t testing.TB, headers ...string) scrape {
	t.Helper()
	r := ts.request(t, "GET", "/metrics", "", headers...)
	r.mustStatus(t, "GET /metrics", http.StatusOK)
	if ct := r.header.Get("Content-Type"); ct != "text/plain; version=0.0.4; charset=utf-8" {
		t.Errorf("GET /metrics Content-Type = %q, want the text format 0.0.4", ct)
	}
	return parseMetrics(t, r.body)
}

// value is the value of the series of family name whose labels include
// labels (name=value pairs); for a histogram, its count. NaN when there is
// no such series.
func (s scrape) value(name string, labels ...string) float64 {
	mf, ok := s[name]
	if !ok {
		return math.NaN()
	}
	for _, m := range mf.Metric {
		if !hasLabels(m, labels) {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return math.NaN()
}

// sum is the sum of a histogram's series.
func (s scrape) sum(name string, labels ...string) float64 {
	for _, m := range s[name].GetMetric() {
		if hasLabels(m, labels) && m.Histogram != nil {
			return m.Histogram.GetSampleSum()
		}
	}
	return math.NaN()
}

func hasLabels(m *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		found := false
		for _, lp := range m.Label {
			found = found || lp.GetName() == labels[i] && lp.GetValue() == labels[i+1]
		}
		if !found {
			return false
		}
	}
	return true
}

// wantMetricTypes is every family /metrics must have, with its type.
var wantMetricTypes = map[string]dto.MetricType{
	"incidents_build_info":                           dto.MetricType_GAUGE,
	"incidents_http_requests_total":                  dto.MetricType_COUNTER,
	"incidents_http_request_duration_seconds":        dto.MetricType_HISTOGRAM,
	"incidents_open":                                 dto.MetricType_GAUGE,
	"incidents_reported_total":                       dto.MetricType_COUNTER,
	"incidents_incident_transitions_total":           dto.MetricType_COUNTER,
	"incidents_incident_time_to_acknowledge_seconds": dto.MetricType_HISTOGRAM,
	"incidents_incident_time_to_resolve_seconds":     dto.MetricType_HISTOGRAM,
	"incidents_stream_subscribers":                   dto.MetricType_GAUGE,
	"incidents_stream_events_delivered_total":        dto.MetricType_COUNTER,
	"incidents_stream_subscribers_dropped_total":     dto.MetricType_COUNTER,
	"incidents_stream_feed_lag_seconds":              dto.MetricType_GAUGE,
	"incidents_db_up":                                dto.MetricType_GAUGE,
	"incidents_db_pool_open_connections":             dto.MetricType_GAUGE,
	"incidents_db_pool_in_use_connections":           dto.MetricType_GAUGE,
	"incidents_db_pool_max_connections":              dto.MetricType_GAUGE,
	"incidents_db_pool_waits_total":                  dto.MetricType_COUNTER,
	"incidents_db_pool_wait_seconds_total":           dto.MetricType_COUNTER,
	"incidents_hook_events_received_total":           dto.MetricType_COUNTER,
	"incidents_webhook_deliveries_total":             dto.MetricType_COUNTER,
	"incidents_webhook_delivery_duration_seconds":    dto.MetricType_HISTOGRAM,
	"incidents_webhook_queue_pending":                dto.MetricType_GAUGE,
	"incidents_heartbeats":                           dto.MetricType_GAUGE,
	"go_goroutines":                                  dto.MetricType_GAUGE,
	"go_memstats_heap_alloc_bytes":                   dto.MetricType_GAUGE,
	"go_memstats_heap_objects":                       dto.MetricType_GAUGE,
	"go_memstats_sys_bytes":                          dto.MetricType_GAUGE,
	"go_gc_cycles_total":                             dto.MetricType_COUNTER,
	"go_gc_heap_goal_bytes":                          dto.MetricType_GAUGE,
	"go_gomaxprocs":                                  dto.MetricType_GAUGE,
	"process_start_time_seconds":                     dto.MetricType_GAUGE,
	"process_open_fds":                               dto.MetricType_GAUGE,
	"process_cpu_seconds_total":                      dto.MetricType_COUNTER,
	"process_resident_memory_bytes":                  dto.MetricType_GAUGE,
}

// TestMetricsNamesAndTypes checks every family: its type, a HELP line, the
// naming rules (prefix, _total on counters and only there, base units).
func TestMetricsNamesAndTypes(t *testing.T) {
	ts := newTestServer(t)
	admin := ts.register(t, "admin", "password1")
	rc := newReceiver(t)
	ts.createWebhook(t, admin, rc, `{"name":"ok"}`)
	ts.postIncident(t, `{"title":"disk full","severity":"high"}`).mustStatus(t, "report", http.StatusCreated)
	ts.caughtUp(t)
	ts.deliverUntil(t, "a webhook attempt", func() bool { _, got := rc.counts(); return got >= 1 })
	// Families without series yet (no request answered, no webhook sent)
	// are left out; by now every one has some.
	r := ts.request(t, "GET", "/metrics", "").mustStatus(t, "GET /metrics", http.StatusOK)
	got := parseMetrics(t, r.body)
	for name, typ := range wantMetricTypes {
		mf, ok := got[name]
		switch {
		case !ok:
			t.Errorf("/metrics has no %s", name)
		case mf.GetType() != typ:
			t.Errorf("%s is a %v, want a %v", name, mf.GetType(), typ)
		}
	}
	for name, mf := range got {
		if _, ok := wantMetricTypes[name]; !ok {
			t.Errorf("/metrics has %s, which this test does not know", name)
		}
		if strings.TrimSpace(mf.GetHelp()) == "" {
			t.Errorf("%s has no HELP", name)
		}
		if !strings.HasPrefix(name, "incidents_") && !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") {
			t.Errorf("%s: want the incidents_ prefix", name)
		}
		if counter := mf.GetType() == dto.MetricType_COUNTER; counter != strings.HasSuffix(name, "_total") {
			t.Errorf("%s is a %v: want _total on counters and only on them", name, mf.GetType())
		}
		for _, unit := range []string{"_milliseconds", "_ms", "_minutes", "_kb", "_mb"} {
			if strings.Contains(name, unit) {
				t.Errorf("%s: want base units (seconds, bytes)", name)
			}
		}
	}
	// Every family has its HELP and TYPE line once, before its samples.
	for _, kind := range []string{"HELP", "TYPE"} {
		lines := regexp.MustCompile(`(?m)^# `+kind+` (\S+) `).FindAllSubmatch(r.body, -1)
		seen := map[string]bool{}
		for _, l := range lines {
			if seen[string(l[1])] {
				t.Errorf("# %s %s appears twice", kind, l[1])
			}
			seen[string(l[1])] = true
		}
		if len(seen) != len(got) {
			t.Errorf("%d # %s lines for %d families", len(seen), kind, len(got))
		}
	}
	build := readBuildInfo()
	if v := got.value("incidents_build_info", "version", build.Version, "revision", build.Revision, "goversion", build.GoVersion); v != 1 {
		t.Errorf("incidents_build_info{version=%q,revision=%q,goversion=%q} = %v, want 1", build.Version, build.Revision, build.GoVersion, v)
	}
	var root struct{ Version, Revision, GoVersion string }
	ts.request(t, "GET", "/", "").json(t, &root)
	if root.Version != build.Version || root.Revision != build.Revision {
		t.Errorf("GET / says %+v, build_info says %+v", root, build)
	}
}

// TestMetricsCountWhatHappens makes requests and checks that the counters
// move with them, and that no label carries what a request sent.
func TestMetricsCountWhatHappens(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.rateLimits = false })
	admin := ts.register(t, "admin", "password1")
	before := ts.scrapeMetrics(t)

	var inc incident
	report := `{"title":"secret-title-db1","severity":"high","dedup_key":"secret-dedup-key","labels":{"secretlabel":"secretvalue"}}`
	ts.postIncident(t, report).mustStatus(t, "report", http.StatusCreated).json(t, &inc)
	ts.postIncident(t, report).mustStatus(t, "report again", http.StatusOK)
	mid := ts.scrapeMetrics(t)
	if got := mid.value("incidents_open", "severity", "high", "status", "open"); got != 1 {
		t.Errorf("incidents_open{high,open} = %v after a report, want 1", got)
	}
	ts.clock.Advance(90 * time.Second)
	ts.transition(t, admin, inc.ID, "acknowledge")
	ts.clock.Advance(30 * time.Second)
	ts.transition(t, admin, inc.ID, "resolve")
	ts.request(t, "PATCH", fmt.Sprintf("/api/v1/incidents/%d/resolve", inc.ID), "", bearer(admin)...).mustStatus(t, "resolve again", http.StatusConflict)

	// An integration's events, and a heartbeat that fails.
	hook := ts.createIntegration(t, admin, `{"name":"scripts","type":"generic"}`)
	ts.request(t, "POST", "/api/v1/hooks/generic", `{"title":"from a script","severity":"high","dedup_key":"k1"}`, bearer(hook.Key)...).mustStatus(t, "hook", http.StatusOK)
	ts.request(t, "POST", "/api/v1/hooks/generic", `{"action":"resolve","dedup_key":"nothing"}`, bearer(hook.Key)...).mustStatus(t, "hook", http.StatusOK)
	hb := ts.createHeartbeat(t, admin, `{"name":"nightly","interval":3600}`)
	ts.request(t, "POST", hb.PingURL+"/fail", "").mustStatus(t, "fail", http.StatusOK)

	// Streams: a WebSocket and an SSE subscriber get the next event.
	ws, _ := mustDial(t, ts, "/api/v1/ws")
	sse := openSSE(t, ts, "/api/v1/events")
	sse.next(t) // hello
	ts.postIncident(t, `{"title":"streamed","severity":"low"}`).mustStatus(t, "report", http.StatusCreated)
	ws.readMessage(t)
	sse.next(t)
	waitFor(t, "the delivered counter", func() bool {
		return float64(ts.srv.metrics.delivered.Load())-before.value("incidents_stream_events_delivered_total") >= 2
	})
	after := ts.scrapeMetrics(t)

	for _, tt := range []struct {
		name   string
		labels []string
		delta  float64
	}{
		{"incidents_reported_total", []string{"source", "api", "outcome", "new"}, 2},
		{"incidents_reported_total", []string{"source", "api", "outcome", "existing"}, 1},
		{"incidents_reported_total", []string{"source", "generic", "outcome", "new"}, 1},
		{"incidents_reported_total", []string{"source", "heartbeat", "outcome", "new"}, 1},
		{"incidents_incident_transitions_total", []string{"action", "acknowledge"}, 1},
		{"incidents_incident_transitions_total", []string{"action", "resolve"}, 1},
		{"incidents_incident_transitions_total", []string{"action", "reopen"}, 0},
		{"incidents_incident_time_to_acknowledge_seconds", []string{"severity", "high"}, 1},
		{"incidents_incident_time_to_resolve_seconds", []string{"severity", "high"}, 1},
		{"incidents_hook_events_received_total", []string{"integration_type", "generic", "result", "new"}, 1},
		{"incidents_hook_events_received_total", []string{"integration_type", "generic", "result", "ignored"}, 1},
		{"incidents_http_requests_total", []string{"route", "POST /api/v1/incidents", "method", "POST", "code", "201"}, 2},
		{"incidents_http_requests_total", []string{"route", "POST /api/v1/incidents", "method", "POST", "code", "200"}, 1},
		{"incidents_http_requests_total", []string{"route", "PATCH /api/v1/incidents/{id}/resolve", "method", "PATCH", "code", "409"}, 1},
		// A scrape is counted once answered: before's and mid's.
		{"incidents_http_requests_total", []string{"route", "GET /metrics", "method", "GET", "code", "200"}, 2},
		{"incidents_http_request_duration_seconds", []string{"route", "POST /api/v1/incidents", "method", "POST"}, 3},
		{"incidents_stream_subscribers", []string{"transport", "websocket"}, 1},
		{"incidents_stream_subscribers", []string{"transport", "sse"}, 1},
		{"incidents_heartbeats", []string{"state", "down"}, 1},
		{"incidents_open", []string{"severity", "high", "status", "open"}, 2}, // the heartbeat's and the script's
		{"incidents_open", []string{"severity", "low", "status", "open"}, 1},
	} {
		was := before.value(tt.name, tt.labels...)
		if math.IsNaN(was) {
			was = 0 // not yet answered: the series did not exist
		}
		if got := after.value(tt.name, tt.labels...) - was; got != tt.delta {
			t.Errorf("%s%v moved by %v, want %v", tt.name, tt.labels, got, tt.delta)
		}
	}
	if got := after.value("incidents_stream_events_delivered_total") - before.value("incidents_stream_events_delivered_total"); got < 2 {
		t.Errorf("incidents_stream_events_delivered_total moved by %v, want at least 2", got)
	}
	if got := after.sum("incidents_incident_time_to_acknowledge_seconds", "severity", "high"); got != 90 {
		t.Errorf("time to acknowledge: sum %v, want 90", got)
	}
	if got := after.sum("incidents_incident_time_to_resolve_seconds", "severity", "high"); got != 120 {
		t.Errorf("time to resolve: sum %v, want 120", got)
	}
	if got := after.value("incidents_db_up"); got != 1 {
		t.Errorf("incidents_db_up = %v, want 1", got)
	}
	if got := after.value("incidents_http_requests_total", "route", "unmatched"); !math.IsNaN(got) {
		t.Errorf("an unmatched route was counted before any was requested")
	}
	ts.request(t, "GET", "/api/v1/incidents/"+"secret-path", "").mustStatus(t, "bad id", http.StatusUnprocessableEntity)
	ts.request(t, "GET", "/no/such/secret-path", "").mustStatus(t, "no route", http.StatusNotFound)
	r := ts.request(t, "GET", "/metrics", "")
	last := parseMetrics(t, r.body)
	if got := last.value("incidents_http_requests_total", "route", "unmatched", "code", "404"); got != 1 {
		t.Errorf("unmatched 404s = %v, want 1", got)
	}
	for _, secret := range []string{"secret", "admin", "nightly", "scripts", "from a script"} {
		if bytes.Contains(r.body, []byte(secret)) {
			t.Errorf("/metrics contains %q, which a request sent", secret)
		}
	}

	// Closing the streams takes them off the gauge.
	ws.conn.Close()
	sse.resp.Body.Close()
	waitFor(t, "the subscribers gauge to go down", func() bool {
		return ts.srv.metrics.subscribers["websocket"].Load() == 0 && ts.srv.metrics.subscribers["sse"].Load() == 0
	})
	// The server ending a stream counts it by reason.
	sse2 := openSSE(t, ts, "/api/v1/events")
	sse2.next(t)
	ts.srv.hub.shutdown()
	waitFor(t, "the shutdown to be counted", func() bool {
		return ts.srv.metrics.dropped.value("shutdown") == 1
	})
}

// TestMetricsWebhookDeliveries counts attempts by result.
func TestMetricsWebhookDeliveries(t *testing.T) {
	ts := newTestServer(t)
	admin := ts.register(t, "admin", "password1")
	ok, failing := newReceiver(t), newReceiver(t)
	failing.setMode("fail")
	ts.createWebhook(t, admin, ok, `{"name":"ok"}`)
	ts.createWebhook(t, admin, failing, `{"name":"failing"}`)
	ts.postIncident(t, `{"title":"disk full","severity":"high"}`).mustStatus(t, "report", http.StatusCreated)
	ts.caughtUp(t)
	ts.deliverUntil(t, "both receivers to get an attempt", func() bool {
		_, got := ok.counts()
		attempts, _ := failing.counts()
		return got >= 1 && attempts >= 1
	})
	m := ts.scrapeMetrics(t)
	if got := m.value("incidents_webhook_deliveries_total", "result", "succeeded"); got < 1 {
		t.Errorf("succeeded deliveries = %v, want at least 1", got)
	}
	if got := m.value("incidents_webhook_deliveries_total", "result", "retrying"); got < 1 {
		t.Errorf("retrying deliveries = %v, want at least 1", got)
	}
	if got := m.value("incidents_webhook_delivery_duration_seconds"); got < 2 {
		t.Errorf("delivery durations observed = %v, want at least 2", got)
	}
	if got := m.value("incidents_webhook_queue_pending"); got != 1 {
		t.Errorf("incidents_webhook_queue_pending = %v, want 1 (the failing endpoint's, waiting to retry)", got)
	}
}

// TestMetricsToken checks METRICS_TOKEN: without it or with a wrong one a
// 401 in the API's error shape, with it the metrics.
func TestMetricsToken(t *testing.T) {
	const token = "metrics-token-0123456789"
	ts := newTestServer(t, func(c *config) { c.metricsToken = token })
	for _, tt := range []struct {
		name    string
		headers []string
		want    int
	}{
		{"no token", nil, http.StatusUnauthorized},
		{"wrong token", bearer("metrics-token-0123456788"), http.StatusUnauthorized},
		{"prefix of the token", bearer(token[:20]), http.StatusUnauthorized},
		{"not bearer", []string{"Authorization", "Basic " + token}, http.StatusUnauthorized},
		{"the token", bearer(token), http.StatusOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := ts.request(t, "GET", "/metrics", "", tt.headers...)
			if r.status != tt.want {
				t.Fatalf("GET /metrics status = %d, want %d", r.status, tt.want)
			}
			if tt.want != http.StatusUnauthorized {
				return
			}
			if got := r.header.Get("WWW-Authenticate"); got != "Bearer" {
				t.Errorf("WWW-Authenticate = %q, want Bearer", got)
			}
			if got := r.detail(t); got != "A valid METRICS_TOKEN bearer token is required" {
				t.Errorf("detail = %v", got)
			}
		})
	}
	// The API's own tokens do not open it.
	user := ts.register(t, "alice", "password1")
	ts.request(t, "GET", "/metrics", "", bearer(user)...).mustStatus(t, "a user's token", http.StatusUnauthorized)
}

// TestMetricsOnlyOnMetricsAddr: with METRICS_ADDR set, the main listener
// does not serve /metrics.
func TestMetricsOnlyOnMetricsAddr(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.metricsAddr = "127.0.0.1:0" })
	r := ts.request(t, "GET", "/metrics", "").mustStatus(t, "GET /metrics on the main listener", http.StatusNotFound)
	if got := r.detail(t); got != "Not Found" {
		t.Errorf("detail = %v, want Not Found", got)
	}
}

// TestMetricsExpositionEscapes checks label values and HELP are escaped
// so that the parser reads back what was written.
func TestMetricsExpositionEscapes(t *testing.T) {
	f := newCounter("incidents_test_total", "A help text with \\ and\na newline.", "route")
	odd := "GET /a\"b\\c\nd"
	f.inc(odd)
	h := newHistogram("incidents_test_seconds", "A histogram.", []float64{0.1, 1}, "route")
	h.observe(0.05, "x")
	h.observe(0.5, "x")
	h.observe(5, "x")
	e := &exposition{}
	f.write(e)
	h.write(e)
	got := parseMetrics(t, e.buf.Bytes())
	if got["incidents_test_total"].GetHelp() != "A help text with \\ and\na newline." {
		t.Errorf("help = %q", got["incidents_test_total"].GetHelp())
	}
	if v := got.value("incidents_test_total", "route", odd); v != 1 {
		t.Errorf("counter with an odd label = %v, want 1\n%s", v, e.buf.Bytes())
	}
	hist := got["incidents_test_seconds"].Metric[0].Histogram
	var cumulative []uint64
	for _, b := range hist.Bucket {
		cumulative = append(cumulative, b.GetCumulativeCount())
	}
	if !slices.Equal(cumulative, []uint64{1, 2, 3}) || hist.GetSampleCount() != 3 || hist.GetSampleSum() != 5.55 {
		t.Errorf("histogram buckets %v, count %d, sum %v; want [1 2 3], 3, 5.55", cumulative, hist.GetSampleCount(), hist.GetSampleSum())
	}
}

// TestMetricsDashboardAndAlerts checks docs/grafana-dashboard.json is
// JSON, and that every metric it and docs/alerts.yml query is one that
// /metrics serves.
func TestMetricsDashboardAndAlerts(t *testing.T) {
	name := regexp.MustCompile(`\b(?:incidents|go|process)_[a-z_]+\b`)
	for _, file := range []string{"docs/grafana-dashboard.json", "docs/alerts.yml"} {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(file, ".json") {
			var dash struct {
				Panels []struct {
					Targets []struct{ Expr string } `json:"targets"`
				} `json:"panels"`
			}
			if err := json.Unmarshal(raw, &dash); err != nil || len(dash.Panels) == 0 {
				t.Fatalf("%s: %v, %d panels; want JSON with panels", file, err, len(dash.Panels))
			}
		}
		found := 0
		for _, m := range name.FindAllString(string(raw), -1) {
			if m == "incidents_server" { // the dashboard's uid
				continue
			}
			found++
			base := m
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(m, suffix); ok && wantMetricTypes[b] == dto.MetricType_HISTOGRAM {
					base = b
				}
			}
			if _, ok := wantMetricTypes[base]; !ok {
				t.Errorf("%s queries %s, which /metrics does not serve", file, m)
			}
		}
		if found < 5 {
			t.Errorf("%s: %d metric names found; want the queries", file, found)
		}
	}
}

// Incidents the original service wrote may hold any severity or status
// (the constraints are NOT VALID): they count, summed, as "unknown", one
// series per pair, never the same series twice in one scrape.
func TestMetricsUnknownSeverities(t *testing.T) {
	ts := newTestServer(t)
	var ids []int64
	for _, title := range []string{"legacy one", "legacy two", "legacy three"} {
		ids = append(ids, ts.createIncident(t, title, "low").ID)
	}
	ctx := context.Background()
	for _, q := range []string{
		`ALTER TABLE incidents DROP CONSTRAINT incidents_severity_valid`,
		`ALTER TABLE incidents DROP CONSTRAINT incidents_status_valid_v2`,
	} {
		if _, err := ts.st.db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ts.st.db.ExecContext(ctx, `UPDATE incidents SET
		severity = CASE id WHEN $1 THEN 'warning' WHEN $2 THEN 'info' ELSE 'high' END,
		status = CASE id WHEN $3 THEN 'investigating' ELSE status END WHERE id = ANY($4)`,
		ids[0], ids[1], ids[2], pq.Array(ids)); err != nil {
		t.Fatal(err)
	}
	r := ts.request(t, "GET", "/metrics", "").mustStatus(t, "GET /metrics", http.StatusOK)
	var lines []string
	for _, line := range strings.Split(string(r.body), "\n") {
		if strings.HasPrefix(line, `incidents_open{`) && strings.Contains(line, "unknown") {
			lines = append(lines, line)
		}
	}
	want := []string{`incidents_open{severity="unknown",status="open"} 2`, `incidents_open{severity="high",status="unknown"} 1`}
	if !slices.Equal(lines, want) {
		t.Errorf("series with unknown values = %q, want %q", lines, want)
	}
}
