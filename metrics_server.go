package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"os"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// serverMetrics is what the server counts as things happen; the rest of a
// scrape (open incidents, the pool, the runtime) is read when it asks.
// Label values are route patterns and fixed vocabularies, never incident
// ids, dedup keys, usernames or alert labels.
type serverMetrics struct {
	start time.Time // the server's start, for process_start_time_seconds
	build buildInfo

	requests        *family
	requestDuration *family
	reported        *family
	transitions     *family
	timeToAck       *family
	timeToResolve   *family
	// delivered counts events written to subscribers: a plain atomic, as
	// every subscriber's writer adds to it after every batch.
	delivered       atomic.Uint64
	dropped         *family
	hookEvents      *family
	webhookResults  *family
	webhookDuration *family
	subscribers     map[string]*gaugeInt // by transport; the keys are fixed
}

// dropReason names why the server ended a stream, as a label value.
func dropReason(reason endReason) string {
	switch reason {
	case endOverflow:
		return "slow"
	case endShutdown:
		return "shutdown"
	case endRevoked:
		return "revoked"
	case endHistory:
		return "history_unavailable"
	}
	return "write_failed"
}

// webhookResult names a recorded attempt's status as a label value.
func webhookResult(status string) string {
	if status == "pending" {
		return "retrying"
	}
	return status // succeeded or failed
}

func newServerMetrics(start time.Time) *serverMetrics {
	seconds := []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
	// Responders take minutes to hours: 30 s to a day.
	responder := []float64{30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400}
	// Label vocabularies, preset to zero so that every series exists from
	// the first scrape.
	var (
		reportSources   = []string{"api", "heartbeat", "alertmanager", "grafana", "pagerduty", "generic"}
		reportOutcomes  = []reportOutcome{reportNew, reportExisting, reportReopened, reportRepeated}
		hookResultNames = []string{"new", "existing", "reopened", "repeated", "acknowledged", "resolved", "ignored", "error"}
	)
	m := &serverMetrics{
		start: start,
		build: readBuildInfo(),
		requests: newCounter("incidents_http_requests_total",
			"HTTP requests answered, by route pattern, method and status code.", "route", "method", "code"),
		requestDuration: newHistogram("incidents_http_request_duration_seconds",
			"Time to answer an HTTP request, by route pattern and method; streams are left out.", seconds, "route", "method"),
		reported: newCounter("incidents_reported_total",
			"Reports of incidents, by where they came from and what they did.", "source", "outcome"),
		transitions: newCounter("incidents_incident_transitions_total",
			"Lifecycle changes of incidents, by action.", "action"),
		timeToAck: newHistogram("incidents_incident_time_to_acknowledge_seconds",
			"Time from an incident's creation to its acknowledgement, by severity.", responder, "severity"),
		timeToResolve: newHistogram("incidents_incident_time_to_resolve_seconds",
			"Time from an incident's creation to its resolution, by severity.", responder, "severity"),
		dropped: newCounter("incidents_stream_subscribers_dropped_total",
			"Streams the server ended, by reason: slow (fell behind the log), shutdown, revoked, history_unavailable, write_failed.", "reason"),
		hookEvents: newCounter("incidents_hook_events_received_total",
			"Events received on the integration hooks, by integration type and what they did; refused requests are in incidents_http_requests_total.",
			"integration_type", "result"),
		webhookResults: newCounter("incidents_webhook_deliveries_total",
			"Webhook delivery attempts, by result: succeeded, retrying (will be sent again) or failed (given up).", "result"),
		webhookDuration: newHistogram("incidents_webhook_delivery_duration_seconds",
			"Time a webhook attempt took, answer included.", []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15}),
		subscribers: map[string]*gaugeInt{},
	}
	for _, src := range reportSources {
		for _, o := range reportOutcomes {
			m.reported.preset(src, string(o))
		}
	}
	for _, a := range actionOrder {
		m.transitions.preset(a)
	}
	for _, sev := range severities {
		m.timeToAck.preset(sev)
		m.timeToResolve.preset(sev)
	}
	for _, reason := range []endReason{endOverflow, endShutdown, endRevoked, endHistory, endNone} {
		m.dropped.preset(dropReason(reason))
	}
	for _, typ := range hookTypes() {
		for _, res := range hookResultNames {
			m.hookEvents.preset(typ, res)
		}
	}
	for _, res := range []string{"succeeded", "pending", "failed"} {
		m.webhookResults.preset(webhookResult(res))
	}
	for _, t := range streamTransports() {
		m.subscribers[t] = &gaugeInt{}
	}
	return m
}

// hookTypes are the integration types, one hook each.
func hookTypes() []string { return []string{"alertmanager", "grafana", "pagerduty", "generic"} }

// streamTransports are the stream's two transports.
func streamTransports() []string { return []string{"websocket", "sse"} }

// request counts an answered request.
func (m *serverMetrics) request(pattern, method string, status int, took time.Duration) {
	if pattern == "" {
		pattern = "unmatched" // the mux's 404 and 405: the path may be anything
	}
	switch method {
	case "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS":
	default:
		method = "other"
	}
	m.requests.inc(pattern, method, strconv.Itoa(status))
	// A stream's request lasts as long as the stream: its duration says
	// nothing of the server's speed.
	if pattern != "GET /api/v1/ws" && pattern != "GET /api/v1/events" {
		m.requestDuration.observe(took.Seconds(), pattern, method)
	}
}

// reportedIncident counts a committed report.
func (m *serverMetrics) reportedIncident(in newIncident, outcome reportOutcome) {
	source := in.Kind
	switch {
	case in.Scope == 0:
		source = "api"
	case in.Scope == heartbeatScope:
		source = "heartbeat"
	case !slices.Contains(hookTypes(), source):
		source = "integration"
	}
	m.reported.inc(source, string(outcome))
}

// transitioned counts a committed transition, and observes how long the
// incident waited for it.
func (m *serverMetrics) transitioned(a action, inc incident) {
	m.transitions.inc(a.name)
	severity := inc.Severity
	if !slices.Contains(severities, severity) {
		severity = "unknown" // a row the original service wrote
	}
	switch {
	case a.name == "acknowledge" && inc.AcknowledgedAt != nil:
		m.timeToAck.observe(max(0, inc.AcknowledgedAt.Sub(inc.CreatedAt).Seconds()), severity)
	case a.name == "resolve" && inc.ResolvedAt != nil:
		m.timeToResolve.observe(max(0, inc.ResolvedAt.Sub(inc.CreatedAt).Seconds()), severity)
	}
}

// streamOpened counts a subscriber of transport until the returned
// function is called.
func (m *serverMetrics) streamOpened(transport string) (closed func()) {
	g := m.subscribers[transport]
	g.Add(1)
	return func() { g.Add(-1) }
}

// streamEnded counts a stream the server ended.
// A write that failed (endNone) is a client too slow to take it within
// the write timeout, or one that went away mid-write.
func (m *serverMetrics) streamEnded(reason endReason) { m.dropped.inc(dropReason(reason)) }

// hookEvent counts one event a hook received and what it did.
func (m *serverMetrics) hookEvent(integrationType, result string) {
	m.hookEvents.inc(integrationType, result)
}

// webhookAttempt counts a recorded webhook attempt.
func (m *serverMetrics) webhookAttempt(status string, took time.Duration) {
	m.webhookResults.inc(webhookResult(status))
	m.webhookDuration.observe(took.Seconds())
}

// metricsListenerKey marks a request that came in on METRICS_ADDR.
type metricsListenerKey struct{}

// metricsRoutes is the handler of the METRICS_ADDR listener: /metrics
// alone, with the same request log and counting as the main listener.
func (s *server) metricsRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", routeHandler{s.handle(route{"GET /metrics", accessOpen, s.handleMetrics})})
	h := s.logRequests(s.recoverPanics(securityHeaders(jsonMuxErrors(mux))))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), metricsListenerKey{}, true)))
	})
}

// errMetricsToken is a scrape without the METRICS_TOKEN bearer token.
var errMetricsToken = unauthorized("A valid METRICS_TOKEN bearer token is required")

// handleMetrics handles GET /metrics: the Prometheus text exposition. With
// METRICS_ADDR set it is served only there, so the main listener need not
// expose it; with METRICS_TOKEN set it asks for that bearer token.
func (s *server) handleMetrics(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.metricsAddr != "" && r.Context().Value(metricsListenerKey{}) == nil {
		return errRouteNotFound
	}
	if s.cfg.metricsToken != "" {
		got, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		// Hashes have one length, so the comparison's time says nothing
		// of the token's.
		gotSum, wantSum := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(s.cfg.metricsToken))
		if subtle.ConstantTimeCompare(gotSum[:], wantSum[:]) != 1 {
			return errMetricsToken
		}
	}
	body := s.scrape(r.Context())
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(body)
	return err
}

// scrape writes every metric. A database that does not answer leaves out
// what it counts and sets incidents_db_up to 0; the rest is still served.
func (s *server) scrape(ctx context.Context) []byte {
	m := s.metrics
	e := &exposition{}
	e.header("incidents_build_info", "The running build: version, VCS revision and Go version; always 1.", "gauge")
	e.sample("incidents_build_info", []string{"version", "revision", "goversion"}, []string{m.build.Version, m.build.Revision, m.build.GoVersion}, 1)

	m.requests.write(e)
	m.requestDuration.write(e)

	counts, err := s.store.MetricsCounts(ctx)
	if err != nil {
		s.log.Warn("metrics: count open incidents", "error", err)
	}
	up := 0.0
	if err == nil {
		up = 1
		e.header("incidents_open", "Unresolved incidents, by severity and status.", "gauge")
		// Rows the original service wrote may hold other severities and
		// statuses: they count, summed, as "unknown". Known pairs are
		// always written, so a series does not vanish at zero.
		open := map[[2]string]int64{}
		for k, n := range counts.open {
			sev, status := k[0], k[1]
			if !slices.Contains(severities, sev) {
				sev = "unknown"
			}
			if status != "open" && status != "acknowledged" {
				status = "unknown"
			}
			open[[2]string{sev, status}] += n
		}
		for _, status := range []string{"acknowledged", "open", "unknown"} {
			for _, sev := range append(slices.Clone(severities), "unknown") {
				n, seen := open[[2]string{sev, status}]
				if seen || sev != "unknown" && status != "unknown" {
					e.sample("incidents_open", []string{"severity", "status"}, []string{sev, status}, float64(n))
				}
			}
		}
		e.header("incidents_heartbeats", "Heartbeats, by state.", "gauge")
		for _, state := range []string{"down", "new", "paused", "up"} {
			e.sample("incidents_heartbeats", []string{"state"}, []string{state}, float64(counts.heartbeats[state]))
		}
		e.gauge("incidents_webhook_queue_pending", "Webhook deliveries waiting to be sent or sent again, on every replica.", float64(counts.webhooksPending))
	}
	e.gauge("incidents_db_up", "1 when this scrape could read the database's counts, else 0.", up)
	m.reported.write(e)
	m.transitions.write(e)
	m.timeToAck.write(e)
	m.timeToResolve.write(e)

	e.header("incidents_stream_subscribers", "Open streams on this replica, by transport.", "gauge")
	for _, t := range streamTransports() {
		e.sample("incidents_stream_subscribers", []string{"transport"}, []string{t}, float64(m.subscribers[t].Load()))
	}
	e.counter("incidents_stream_events_delivered_total", "Events written to WebSocket and SSE subscribers.", float64(m.delivered.Load()))
	m.dropped.write(e)
	e.gauge("incidents_stream_feed_lag_seconds", "How long the event feed has been behind the committed events; 0 when caught up.", s.feed.lag(time.Now()).Seconds())

	db := s.store.db.Stats()
	e.gauge("incidents_db_pool_open_connections", "Connections open in the pool, in use or idle.", float64(db.OpenConnections))
	e.gauge("incidents_db_pool_in_use_connections", "Connections of the pool in use.", float64(db.InUse))
	e.gauge("incidents_db_pool_max_connections", "The pool's limit (DB_MAX_CONNS).", float64(db.MaxOpenConnections))
	e.counter("incidents_db_pool_waits_total", "Times a query waited for a free connection.", float64(db.WaitCount))
	e.counter("incidents_db_pool_wait_seconds_total", "Total time queries waited for a free connection.", db.WaitDuration.Seconds())

	m.hookEvents.write(e)
	m.webhookResults.write(e)
	m.webhookDuration.write(e)

	writeRuntimeMetrics(e, m.start)
	return e.buf.Bytes()
}

// writeRuntimeMetrics writes the Go runtime and process basics under the
// names Prometheus's own client uses, so that existing dashboards work.
func writeRuntimeMetrics(e *exposition, start time.Time) {
	samples := []metrics.Sample{
		{Name: "/sched/goroutines:goroutines"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/gc/heap/objects:objects"},
		{Name: "/memory/classes/total:bytes"},
		{Name: "/gc/cycles/total:gc-cycles"},
		{Name: "/gc/heap/goal:bytes"},
		{Name: "/sched/gomaxprocs:threads"},
	}
	metrics.Read(samples)
	value := func(i int) float64 {
		if samples[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return float64(samples[i].Value.Uint64())
	}
	e.gauge("go_goroutines", "Goroutines that currently exist.", value(0))
	e.gauge("go_memstats_heap_alloc_bytes", "Bytes of allocated heap objects.", value(1))
	e.gauge("go_memstats_heap_objects", "Allocated heap objects.", value(2))
	e.gauge("go_memstats_sys_bytes", "Bytes of memory obtained from the OS.", value(3))
	e.counter("go_gc_cycles_total", "Completed garbage collection cycles.", value(4))
	e.gauge("go_gc_heap_goal_bytes", "The heap size the next garbage collection aims at.", value(5))
	e.gauge("go_gomaxprocs", "GOMAXPROCS: the threads that may run Go code at once.", value(6))
	e.gauge("process_start_time_seconds", "When the server started, in seconds since the Unix epoch.", float64(start.UnixNano())/1e9)
	// /proc is Linux's: elsewhere these are left out.
	if entries, err := os.ReadDir("/proc/self/fd"); err == nil {
		e.gauge("process_open_fds", "Open file descriptors.", float64(len(entries)))
	}
	if cpu, rss, ok := procStat(); ok {
		e.counter("process_cpu_seconds_total", "User and system CPU time spent, in seconds.", cpu)
		e.gauge("process_resident_memory_bytes", "Resident memory size, in bytes.", rss)
	}
}

// procStat reads the CPU time and resident memory from /proc/self/stat.
// Its times are in clock ticks, which Linux reports to processes as 100 a
// second on every architecture it runs on (USER_HZ).
func procStat() (cpuSeconds, rssBytes float64, ok bool) {
	raw, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, 0, false
	}
	// The command name, in parentheses, may hold spaces: fields start
	// after its last ')', with the state, field 3.
	i := strings.LastIndexByte(string(raw), ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(raw[i+1:]))
	if len(f) < 22 {
		return 0, 0, false
	}
	utime, err1 := strconv.ParseFloat(f[11], 64) // field 14
	stime, err2 := strconv.ParseFloat(f[12], 64) // field 15
	rss, err3 := strconv.ParseFloat(f[21], 64)   // field 24, in pages
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, 0, false
	}
	return (utime + stime) / 100, rss * float64(os.Getpagesize()), true
}
