package main

import "context"

// metricsCounts is what a scrape reads from the database.
type metricsCounts struct {
	open            map[[2]string]int64 // unresolved incidents by {severity, status}
	heartbeats      map[string]int64    // by state
	webhooksPending int64
}

// metricsCountsSQL counts in one round trip. Every part is read from an
// index alone: unresolved incidents from the partial index
// incidents_unresolved_idx, however many resolved ones the table holds;
// pending deliveries from webhook_deliveries_pending_idx; heartbeats are
// few.
const metricsCountsSQL = `SELECT 'incident', status, severity, count(*) FROM incidents WHERE status <> 'resolved' GROUP BY status, severity
	UNION ALL SELECT 'heartbeat', state, '', count(*) FROM heartbeats GROUP BY state
	UNION ALL SELECT 'webhook', '', '', count(*) FROM webhook_deliveries WHERE status = 'pending'`

// MetricsCounts reads the counts a scrape reports.
func (st *store) MetricsCounts(ctx context.Context) (metricsCounts, error) {
	ctx, cancel := st.withTimeout(ctx)
	defer cancel()
	c := metricsCounts{open: map[[2]string]int64{}, heartbeats: map[string]int64{}}
	stmt, err := st.prepared(ctx, nil, metricsCountsSQL)
	if err != nil {
		return c, err
	}
	rows, err := stmt.QueryContext(ctx)
	if err != nil {
		return c, st.mapErr(err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			kind, a, b string
			n          int64
		)
		if err := rows.Scan(&kind, &a, &b, &n); err != nil {
			return c, st.mapErr(err)
		}
		switch kind {
		case "incident":
			c.open[[2]string{b, a}] = n
		case "heartbeat":
			c.heartbeats[a] = n
		case "webhook":
			c.webhooksPending = n
		}
	}
	return c, st.mapErr(rows.Err())
}
