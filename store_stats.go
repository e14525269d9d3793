package main

import (
	"context"
	"database/sql"
	"time"

	"github.com/lib/pq"
)

// responseTimes are the team's times to acknowledge and to resolve over
// the last 7 and 30 days before a moment, and over a chosen range.
type responseTimes struct {
	Last7Days  periodTimes  `json:"last_7_days"`
	Last30Days periodTimes  `json:"last_30_days"`
	Range      *periodTimes `json:"range,omitempty"` // only when the caller gives since
}

// periodTimes are the response figures of one period, [Since, Until),
// for all incidents and by their current severity.
type periodTimes struct {
	Since      time.Time              `json:"since"`
	Until      time.Time              `json:"until"`
	All        timeFigures            `json:"all"`
	BySeverity map[string]timeFigures `json:"by_severity"`
}

// timeFigures are how many incidents were first acknowledged (resolved)
// in a period, and the median and 90th percentile of the seconds from
// their creation to that moment; nil when there were none.
type timeFigures struct {
	Acknowledged         int      `json:"acknowledged"`
	AckMedianSeconds     *float64 `json:"ack_median_seconds"`
	AckP90Seconds        *float64 `json:"ack_p90_seconds"`
	Resolved             int      `json:"resolved"`
	ResolveMedianSeconds *float64 `json:"resolve_median_seconds"`
	ResolveP90Seconds    *float64 `json:"resolve_p90_seconds"`
}

// PeriodTimes measures time to acknowledge and time to resolve over each
// of periods, [since, until), in one query and one read of the events
// the widest of them spans. Time to acknowledge runs from an incident's
// creation to its first acknowledged event (an incident unacknowledged
// and acknowledged again counts once, at the first); time to resolve from
// its creation to its resolution, for incidents still resolved. Both
// count under the incident's severity now.
func (st *store) PeriodTimes(ctx context.Context, periods ...[2]time.Time) ([]periodTimes, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	out := make([]periodTimes, len(periods))
	sinces, untils := make([]time.Time, len(periods)), make([]time.Time, len(periods))
	for i, p := range periods {
		sinces[i], untils[i] = p[0], p[1]
		out[i] = periodTimes{Since: p[0], Until: p[1], BySeverity: map[string]timeFigures{}}
		for _, sev := range severities {
			out[i].BySeverity[sev] = timeFigures{}
		}
	}
	rows, err := st.db.QueryContext(ctx, `WITH periods AS (
			SELECT since, until, n FROM unnest($1::timestamptz[], $2::timestamptz[]) WITH ORDINALITY AS p(since, until, n)
		), span AS (
			SELECT min(since) AS since, max(until) AS until FROM periods
		), acks AS (
			SELECT i.severity, e.created_at AS at, extract(epoch FROM e.created_at - i.created_at)::float8 AS secs
			FROM span, incident_events e JOIN incidents i ON i.id = e.incident_id
			WHERE e.type = 'acknowledged' AND e.created_at >= span.since AND e.created_at < span.until
				AND NOT EXISTS (SELECT 1 FROM incident_events f
					WHERE f.incident_id = e.incident_id AND f.type = 'acknowledged' AND f.id < e.id)
		), resolves AS (
			SELECT severity, resolved_at AS at, extract(epoch FROM resolved_at - created_at)::float8 AS secs
			FROM span, incidents WHERE status = 'resolved' AND resolved_at >= span.since AND resolved_at < span.until
		), measured AS (
			SELECT p.n, m.kind, m.severity, m.secs
			FROM (SELECT 'ack' AS kind, severity, at, secs FROM acks
				UNION ALL SELECT 'resolve', severity, at, secs FROM resolves) m
			JOIN periods p ON m.at >= p.since AND m.at < p.until
		)
		SELECT n, kind, severity, count(*),
			percentile_cont(0.5) WITHIN GROUP (ORDER BY secs),
			percentile_cont(0.9) WITHIN GROUP (ORDER BY secs)
		FROM measured GROUP BY GROUPING SETS ((n, kind, severity), (n, kind))`, pq.Array(sinces), pq.Array(untils))
	if err != nil {
		return out, st.mapErr(err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			n           int // the period, from 1
			kind        string
			severity    sql.NullString // NULL on the row of all severities
			count       int
			median, p90 float64
		)
		if err := rows.Scan(&n, &kind, &severity, &count, &median, &p90); err != nil {
			return out, st.mapErr(err)
		}
		p := &out[n-1]
		f := p.All
		if severity.Valid {
			f = p.BySeverity[severity.String]
		}
		if kind == "ack" {
			f.Acknowledged, f.AckMedianSeconds, f.AckP90Seconds = count, &median, &p90
		} else {
			f.Resolved, f.ResolveMedianSeconds, f.ResolveP90Seconds = count, &median, &p90
		}
		if severity.Valid {
			p.BySeverity[severity.String] = f
		} else {
			p.All = f
		}
	}
	return out, st.mapErr(rows.Err())
}
