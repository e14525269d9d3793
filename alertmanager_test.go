package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// alertmanagerBinary finds a real Alertmanager: Debian's package, or one
// installed with go install.
func alertmanagerBinary(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"prometheus-alertmanager", "alertmanager"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	gobin := filepath.Join(os.Getenv("HOME"), "go", "bin", "alertmanager")
	if _, err := os.Stat(gobin); err == nil {
		return gobin
	}
	t.Fatal("no Alertmanager: install Debian's prometheus-alertmanager (apt-get install prometheus-alertmanager), " +
		"or go install github.com/prometheus/alertmanager/cmd/alertmanager@v0.28.1")
	return ""
}

// freeAddr is a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// The real Alertmanager, with a webhook receiver and a PagerDuty receiver
// both pointed at the server: each alert is its own incident, a second
// alert in a group is a second incident, Alertmanager's re-sends count no
// occurrence, and resolving the alerts resolves the incidents, on both
// paths.
func TestRealAlertmanager(t *testing.T) {
	binary := alertmanagerBinary(t)
	ts := newTestServer(t, func(c *config) { c.rateLimits = false })
	admin := ts.register(t, "admin", "password1")
	webhook := ts.createIntegration(t, admin, `{"name":"am-webhook","type":"alertmanager"}`)
	pd := ts.createIntegration(t, admin, `{"name":"am-pagerduty","type":"pagerduty"}`)

	// A proxy in front of the server counts Alertmanager's notifications.
	target, _ := url.Parse(ts.URL)
	var webhookPosts atomic.Int64
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1/hooks/alertmanager" {
			webhookPosts.Add(1)
		}
		httputil.NewSingleHostReverseProxy(target).ServeHTTP(w, r)
	}))
	defer proxy.Close()

	dir := t.TempDir()
	amAddr := freeAddr(t)
	config := fmt.Sprintf(`route:
  receiver: incidents
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 2s
receivers:
- name: incidents
  webhook_configs:
  - url: %[1]s/api/v1/hooks/alertmanager
    send_resolved: true
    http_config:
      authorization:
        credentials: %[2]s
  pagerduty_configs:
  - url: %[1]s/v2/enqueue
    routing_key: %[3]s
    send_resolved: true
`, proxy.URL, webhook.Key, pd.Key)
	if err := os.WriteFile(filepath.Join(dir, "alertmanager.yml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var logs bytes.Buffer
	cmd := exec.CommandContext(ctx, binary, "--config.file="+filepath.Join(dir, "alertmanager.yml"), "--storage.path="+dir,
		"--web.listen-address="+amAddr, "--cluster.listen-address=")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start Alertmanager: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		if t.Failed() {
			t.Logf("Alertmanager's log:\n%s", logs.String())
		}
	})
	amURL := "http://" + amAddr
	waitFor(t, "Alertmanager to be ready", func() bool {
		resp, err := http.Get(amURL + "/-/ready")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == http.StatusOK
	})

	postAlerts := func(endsAt time.Time, instances ...string) {
		t.Helper()
		var alerts []string
		for _, instance := range instances {
			alerts = append(alerts, fmt.Sprintf(`{"labels":{"alertname":"DiskFull","instance":%q,"severity":"critical"},
				"annotations":{"summary":"Disk full on %s"},"endsAt":%q}`, instance, instance, endsAt.UTC().Format(time.RFC3339)))
		}
		resp, err := http.Post(amURL+"/api/v2/alerts", "application/json", strings.NewReader("["+strings.Join(alerts, ",")+"]"))
		if err != nil {
			t.Fatalf("post alerts: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("post alerts: status %d", resp.StatusCode)
		}
	}
	type row struct {
		title, status string
		occurrences   int
	}
	incidentsFrom := func(source string) []row {
		rows, err := ts.st.db.Query(`SELECT title, status, occurrences FROM incidents WHERE source = $1 ORDER BY title`, source)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []row
		for rows.Next() {
			var r row
			rows.Scan(&r.title, &r.status, &r.occurrences)
			out = append(out, r)
		}
		return out
	}

	later := time.Now().Add(time.Hour)
	postAlerts(later, "db-1")
	waitFor(t, "the first alert's incident", func() bool { return len(incidentsFrom("am-webhook")) == 1 })
	postAlerts(later, "db-1", "db-2")
	waitFor(t, "the second alert's own incident", func() bool { return len(incidentsFrom("am-webhook")) == 2 })

	// Alertmanager re-sends the firing group every repeat_interval: wait
	// for a few, and still one occurrence each.
	sent := webhookPosts.Load()
	waitFor(t, "Alertmanager to re-send", func() bool { return webhookPosts.Load() >= sent+2 })
	for _, r := range incidentsFrom("am-webhook") {
		if r.status != "open" || r.occurrences != 1 {
			t.Errorf("after re-sends: %+v, want open with 1 occurrence", r)
		}
	}
	if got := incidentsFrom("am-pagerduty"); len(got) != 1 || got[0].status != "open" {
		t.Errorf("through the PagerDuty path: %+v, want one open incident for the group", got)
	}

	postAlerts(time.Now(), "db-1", "db-2")
	waitFor(t, "the incidents to resolve", func() bool {
		for _, source := range []string{"am-webhook", "am-pagerduty"} {
			for _, r := range incidentsFrom(source) {
				if r.status != "resolved" {
					return false
				}
			}
		}
		return true
	})
	want := []row{{"Disk full on db-1", "resolved", 1}, {"Disk full on db-2", "resolved", 1}}
	if got := incidentsFrom("am-webhook"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("webhook incidents = %v, want %v", got, want)
	}
}
