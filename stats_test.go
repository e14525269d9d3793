package main

import (
	"net/http"
	"net/url"
	"testing"
	"time"
)

// TestStatsResponseTimes measures time to acknowledge and to resolve on
// the server's clock: the first acknowledgement counts, not a later one;
// an incident acknowledged and resolved counts in both; the 7-day period
// leaves out what is older; since adds a range; until moves every period.
func TestStatsResponseTimes(t *testing.T) {
	ts := newTestServer(t)
	token := ts.register(t, "oncall", "password1")
	start := ts.clock.Now()

	// 20 days ago: a high incident acknowledged after 10 minutes.
	old := ts.createIncident(t, "old", "high")
	ts.clock.Advance(10 * time.Minute)
	ts.patch(t, old.ID, "acknowledge", token, "").mustStatus(t, "acknowledge", http.StatusOK)
	ts.clock.Advance(20*24*time.Hour - 10*time.Minute)
	token = ts.login(t, "oncall", "password1") // tokens last an hour

	// Now: two critical incidents, acknowledged after 1 and 3 minutes;
	// the first unacknowledged and acknowledged again later, and resolved
	// after an hour.
	a := ts.createIncident(t, "a", "critical")
	b := ts.createIncident(t, "b", "critical")
	ts.clock.Advance(time.Minute)
	ts.patch(t, a.ID, "acknowledge", token, "").mustStatus(t, "acknowledge", http.StatusOK)
	ts.patch(t, a.ID, "unacknowledge", token, "").mustStatus(t, "unacknowledge", http.StatusOK)
	ts.clock.Advance(2 * time.Minute)
	ts.patch(t, b.ID, "acknowledge", token, "").mustStatus(t, "acknowledge", http.StatusOK)
	ts.patch(t, a.ID, "acknowledge", token, "").mustStatus(t, "acknowledge", http.StatusOK)
	ts.clock.Advance(57 * time.Minute)
	token = ts.login(t, "oncall", "password1")
	ts.patch(t, a.ID, "resolve", token, "").mustStatus(t, "resolve", http.StatusOK)
	ts.clock.Advance(time.Minute)
	now := ts.clock.Now()

	stats := func(query string) incidentStats {
		t.Helper()
		var s incidentStats
		ts.request(t, "GET", "/api/v1/incidents/stats"+query, "").mustStatus(t, "stats"+query, http.StatusOK).json(t, &s)
		return s
	}
	secs := func(f *float64) float64 {
		if f == nil {
			return -1
		}
		return *f
	}
	check := func(what string, f timeFigures, acked int, ackMedian, ackP90 float64, resolved int, resMedian float64) {
		t.Helper()
		if f.Acknowledged != acked || secs(f.AckMedianSeconds) != ackMedian || secs(f.AckP90Seconds) != ackP90 ||
			f.Resolved != resolved || secs(f.ResolveMedianSeconds) != resMedian || secs(f.ResolveP90Seconds) != resMedian {
			t.Errorf("%s = acknowledged %d, median %v, p90 %v, resolved %d, median %v, p90 %v; want %d, %v, %v, %d, %v, %v",
				what, f.Acknowledged, secs(f.AckMedianSeconds), secs(f.AckP90Seconds), f.Resolved,
				secs(f.ResolveMedianSeconds), secs(f.ResolveP90Seconds), acked, ackMedian, ackP90, resolved, resMedian, resMedian)
		}
	}

	got := stats("")
	rt := got.ResponseTimes
	if !rt.Last7Days.Until.Equal(now) || !rt.Last7Days.Since.Equal(now.Add(-7*24*time.Hour)) || rt.Range != nil {
		t.Errorf("last_7_days = %v to %v, range %v; want %v to %v, no range", rt.Last7Days.Since, rt.Last7Days.Until, rt.Range, now.Add(-7*24*time.Hour), now)
	}
	// 60 and 180 seconds: the median 120, the 90th percentile 60+0.9*120.
	check("last_7_days.all", rt.Last7Days.All, 2, 120, 168, 1, 3600)
	check("last_7_days.critical", rt.Last7Days.BySeverity["critical"], 2, 120, 168, 1, 3600)
	check("last_7_days.high", rt.Last7Days.BySeverity["high"], 0, -1, -1, 0, -1)
	check("last_30_days.high", rt.Last30Days.BySeverity["high"], 1, 600, 600, 0, -1)
	check("last_30_days.all", rt.Last30Days.All, 3, 180, 516, 1, 3600)
	if len(rt.Last7Days.BySeverity) != 4 {
		t.Errorf("by_severity has %d severities, want all 4", len(rt.Last7Days.BySeverity))
	}

	r := stats("?since=" + url.QueryEscape(start.Format(time.RFC3339Nano)) + "&until=" + url.QueryEscape(start.Add(time.Hour).Format(time.RFC3339Nano)))
	if r.ResponseTimes.Range == nil {
		t.Fatal("stats with since: no range")
	}
	check("range.all", r.ResponseTimes.Range.All, 1, 600, 600, 0, -1)
	check("last_7_days.all until an hour after the start", r.ResponseTimes.Last7Days.All, 1, 600, 600, 0, -1)
}

// TestStatsValidation refuses bad since and until with a 422 naming the
// parameter, never a 500.
func TestStatsValidation(t *testing.T) {
	ts := newTestServer(t)
	for _, tt := range []struct {
		name  string
		query string
		want  []string
	}{
		{"since not a time", "since=yesterday", []string{"datetime_parsing@query.since"}},
		{"until not a time", "until=2026-13-01T00:00:00Z", []string{"datetime_parsing@query.until"}},
		{"both bad", "since=1&until=2", []string{"datetime_parsing@query.since", "datetime_parsing@query.until"}},
		{"since after until", "since=2026-11-02T00:00:00Z&until=2026-11-01T00:00:00Z", []string{"value_error@query.since"}},
		{"since equal to until", "since=2026-11-01T00:00:00Z&until=2026-11-01T00:00:00Z", []string{"value_error@query.since"}},
		{"over 366 days", "since=2025-01-01T00:00:00Z&until=2026-11-01T00:00:00Z", []string{"value_error@query.since"}},
		{"since in the future", "since=9999-01-01T00:00:00Z", []string{"value_error@query.since"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts.request(t, "GET", "/api/v1/incidents/stats?"+tt.query, "").mustProblems(t, "stats?"+tt.query, tt.want...)
		})
	}
	for _, query := range []string{
		"since=2026-01-01T00:00:00Z&until=2026-12-31T00:00:00Z", // 364 days
		"until=2000-01-01T00:00:00%2B01:00",
		"since=" + url.QueryEscape(time.Now().Add(-time.Hour).Format(time.RFC3339)),
	} {
		ts.request(t, "GET", "/api/v1/incidents/stats?"+query, "").mustStatus(t, "stats?"+query, http.StatusOK)
	}
	// At the start of year 1 the periods start there: the API writes no
	// time in year 0.
	var early incidentStats
	ts.request(t, "GET", "/api/v1/incidents/stats?until=0001-01-02T00:00:00Z", "").mustStatus(t, "stats in year 1", http.StatusOK).json(t, &early)
	first := time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	if rt := early.ResponseTimes; !rt.Last7Days.Since.Equal(first) || !rt.Last30Days.Since.Equal(first) {
		t.Errorf("periods until 0001-01-02 start at %v and %v, want %v", rt.Last7Days.Since, rt.Last30Days.Since, first)
	}
}
