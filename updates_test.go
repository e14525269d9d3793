package main

import (
	"fmt"
	"net/http"
	"testing"
)

// Two admins changing different settings of one thing at once both get
// their change: neither update writes back what it read before the other.
func TestConcurrentUpdatesBothCount(t *testing.T) {
	ts := newTestServer(t)
	admin := ts.register(t, "admin", "password1")
	ig := create[integrationWithKey](t, ts, admin, "/api/v1/integrations", `{"name":"am","type":"alertmanager"}`)
	hb := ts.createHeartbeat(t, admin, `{"name":"backup","interval":60}`)
	wh := ts.createWebhook(t, admin, newReceiver(t), `{"name":"chat"}`)
	for _, tt := range []struct {
		path        string
		first, then func(round int) string // two changes of different fields
		check       func(t *testing.T, r response, round int)
	}{
		{
			fmt.Sprintf("/api/v1/integrations/%d", ig.ID),
			func(n int) string { return fmt.Sprintf(`{"name":"am %d"}`, n) },
			func(n int) string { return fmt.Sprintf(`{"labels":{"round":"%d"}}`, n) },
			func(t *testing.T, r response, n int) {
				var got integration
				r.json(t, &got)
				if got.Name != fmt.Sprintf("am %d", n) || got.Labels["round"] != fmt.Sprint(n) {
					t.Fatalf("round %d: integration %+v, want both changes", n, got)
				}
			},
		},
		{
			fmt.Sprintf("/api/v1/heartbeats/%d", hb.ID),
			func(n int) string { return fmt.Sprintf(`{"name":"backup %d"}`, n) },
			func(n int) string { return fmt.Sprintf(`{"interval":%d}`, 60+n) },
			func(t *testing.T, r response, n int) {
				var got heartbeat
				r.json(t, &got)
				if got.Name != fmt.Sprintf("backup %d", n) || got.Interval != int64(60+n) {
					t.Fatalf("round %d: heartbeat %+v, want both changes", n, got)
				}
			},
		},
		{
			fmt.Sprintf("/api/v1/webhooks/%d", wh.ID),
			func(n int) string { return fmt.Sprintf(`{"name":"chat %d"}`, n) },
			func(n int) string { return fmt.Sprintf(`{"labels":{"round":"%d"}}`, n) },
			func(t *testing.T, r response, n int) {
				var got webhook
				r.json(t, &got)
				if got.Name != fmt.Sprintf("chat %d", n) || got.Labels["round"] != fmt.Sprint(n) {
					t.Fatalf("round %d: webhook %+v, want both changes", n, got)
				}
			},
		},
	} {
		t.Run(tt.path, func(t *testing.T) {
			for round := range 10 {
				inParallel(t, 2, func(t testing.TB, i int) response {
					body := tt.first(round)
					if i == 1 {
						body = tt.then(round)
					}
					return ts.request(t, "PATCH", tt.path, body, bearer(admin)...).mustStatus(t, "PATCH "+body, http.StatusOK)
				})
				tt.check(t, ts.request(t, "GET", tt.path, "", bearer(admin)...).mustStatus(t, "GET", http.StatusOK), round)
			}
		})
	}
}
