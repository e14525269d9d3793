package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkMetricsScrape measures a whole GET /metrics with 1,000,000
// incidents in the table: 990,000 resolved and 10,000 unresolved across
// every severity and status, 100 heartbeats, 1,000 pending deliveries.
// Loading them takes about a minute; run it alone:
//
//	go test -run '^$' -bench MetricsScrape -benchtime 2000x .
//
// It reports the database's counts alone, the exposition in process, and
// a scrape over HTTP.
func BenchmarkMetricsScrape(b *testing.B) {
	st := newTestStore(b)
	ctx := context.Background()
	for _, q := range []string{
		`INSERT INTO incidents (title, severity, status, created_at, updated_at, last_occurred_at, resolved_at)
		SELECT 'incident ' || i, (ARRAY['low','medium','high','critical'])[1 + i % 4],
			CASE WHEN i % 100 = 0 THEN (ARRAY['open','acknowledged'])[1 + (i / 100) % 2] ELSE 'resolved' END,
			now(), now(), now(), CASE WHEN i % 100 = 0 THEN NULL ELSE now() END
		FROM generate_series(1, 1000000) i`,
		`INSERT INTO heartbeats (name, interval_s, grace_s, severity, token_hash, state, created_at, updated_at)
		SELECT 'hb ' || i, 60, 0, 'high', sha256(i::text::bytea), (ARRAY['new','up','down','paused'])[1 + i % 4], now(), now()
		FROM generate_series(1, 100) i`,
		`INSERT INTO webhooks (name, url, format, event_types, min_severity, secret, cursor_seq, created_at, updated_at)
		VALUES ('w', 'http://127.0.0.1:1/', 'standard', '[]', 'low', 's', 0, now(), now())`,
		`INSERT INTO webhook_deliveries (webhook_id, event_seq, event_type, body, next_attempt_at, created_at, updated_at)
		SELECT (SELECT id FROM webhooks), i, 'incident.triggered', '{}', now(), now(), now() FROM generate_series(1, 1000) i`,
		`VACUUM ANALYZE incidents`,
		`VACUUM ANALYZE heartbeats`,
		`VACUUM ANALYZE webhook_deliveries`,
	} {
		if _, err := st.db.ExecContext(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
	ts := newTestServerOn(b, st, testConfig())
	srv := httptest.NewServer(ts.srv.routes())
	defer srv.Close()
	// The database's counts alone, the whole exposition in process, and a
	// scrape over HTTP as Prometheus makes it.
	b.Run("counts", func(b *testing.B) {
		for b.Loop() {
			if _, err := st.MetricsCounts(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("exposition", func(b *testing.B) {
		for b.Loop() {
			ts.srv.scrape(ctx)
		}
	})
	b.Run("http", func(b *testing.B) {
		for b.Loop() {
			resp, err := http.Get(srv.URL + "/metrics")
			if err != nil || resp.StatusCode != http.StatusOK {
				b.Fatalf("GET /metrics: %v %v", resp, err)
			}
			// Read to the end, so the connection is reused as a scraper's is.
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
