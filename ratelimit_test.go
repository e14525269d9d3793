package main

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// rlPassword is the password of the users the rate-limit tests register.
const rlPassword = "correct-horse"

// xff is the header of a request a trusted proxy forwards for ip.
func xff(ip string) []string { return []string{"X-Forwarded-For", ip} }

// trustLoopback makes the test client (127.0.0.1) a trusted proxy, so
// X-Forwarded-For picks the client IP.
func trustLoopback(t testing.TB) func(*config) {
	t.Helper()
	tp, err := parseTrustedProxies("127.0.0.1/32")
	if err != nil {
		t.Fatalf("parseTrustedProxies: %v", err)
	}
	return func(cfg *config) { cfg.trustedProxies = tp }
}

// mustTooMany fails the test unless r is a 429 whose body is exactly
// {"detail": detail} and whose Retry-After is retryAfter.
// The 429 bodies, as the issue words the login one.
const (
	attemptsDetail = "Too many attempts, try again later"
	reportsDetail  = "Too many reports, slow down"
)

func mustTooMany(t testing.TB, r response, what, detail, retryAfter string) {
	t.Helper()
	r.mustStatus(t, what, http.StatusTooManyRequests)
	var body map[string]any
	r.json(t, &body)
	if want := map[string]any{"detail": detail}; !reflect.DeepEqual(body, want) {
		t.Errorf("%s: body = %v, want %v", what, body, want)
	}
	if got := r.header.Get("Retry-After"); got != retryAfter {
		t.Errorf("%s: Retry-After = %q, want %q", what, got, retryAfter)
	}
}

// mustBadLogin fails the test unless r is the 401 of a wrong password.
func mustBadLogin(t testing.TB, r response, what string) {
	t.Helper()
	r.mustStatus(t, what, http.StatusUnauthorized)
	if d := r.detail(t); d != "Incorrect username or password" {
		t.Errorf("%s: detail = %v, want Incorrect username or password", what, d)
	}
}

func TestLoginLimitPerUsername(t *testing.T) {
	ts := newTestServer(t)
	ts.register(t, "alice", rlPassword)
	ts.register(t, "bob", rlPassword)

	// Five failures a minute apart, from t0 to t0+4m.
	for i := range 5 {
		if i > 0 {
			ts.clock.Advance(time.Minute)
		}
		mustBadLogin(t, ts.attemptLogin(t, "alice", "wrong-password"), fmt.Sprintf("failure %d", i+1))
	}
	// At t0+4m30s the first failure leaves the 15-minute window in 630 s.
	ts.clock.Advance(30 * time.Second)
	mustTooMany(t, ts.attemptLogin(t, "alice", rlPassword), "6th attempt, right password", attemptsDetail, "630")
	mustTooMany(t, ts.attemptLogin(t, "alice", "wrong-password"), "6th attempt, wrong password", attemptsDetail, "630")
	mustTooMany(t, ts.attemptLogin(t, "ALICE", rlPassword), "6th attempt as ALICE", attemptsDetail, "630")

	// Another username from the same IP is not locked out.
	mustBadLogin(t, ts.attemptLogin(t, "bob", "wrong-password"), "bob, wrong password")
	ts.attemptLogin(t, "bob", rlPassword).mustStatus(t, "bob, right password", http.StatusOK)

	ts.clock.Advance(629 * time.Second) // t0+14m59s
	mustTooMany(t, ts.attemptLogin(t, "alice", rlPassword), "a second before the window", attemptsDetail, "1")
	ts.clock.Advance(time.Second) // t0+15m: the first failure is out
	ts.attemptLogin(t, "alice", rlPassword).mustStatus(t, "alice once the first failure expired", http.StatusOK)

	// The success gave its slot back; the failures at t0+1m..t0+4m remain,
	// so one more failure fits and then the one at t0+1m is waited for.
	mustBadLogin(t, ts.attemptLogin(t, "alice", "wrong-password"), "failure after the lockout")
	mustTooMany(t, ts.attemptLogin(t, "alice", rlPassword), "locked again", attemptsDetail, "60")
}

func TestLoginLimitPerIP(t *testing.T) {
	ts := newTestServer(t, trustLoopback(t))
	ts.register(t, "bob", rlPassword)
	ipA, ipB := xff("198.51.100.1"), xff("198.51.100.2")

	mustBadLogin(t, ts.attemptLogin(t, "user0", "wrong-password", ipA...), "A: failure 1")
	ts.clock.Advance(10 * time.Second)
	for i := 1; i < 20; i++ {
		mustBadLogin(t, ts.attemptLogin(t, fmt.Sprintf("user%d", i), "wrong-password", ipA...), fmt.Sprintf("A: failure %d", i+1))
	}
	// The first failure, at t0, leaves the one-minute window at t0+60s.
	mustTooMany(t, ts.attemptLogin(t, "user20", "wrong-password", ipA...), "A: 21st failure", attemptsDetail, "50")
	mustTooMany(t, ts.attemptLogin(t, "bob", rlPassword, ipA...), "A: right password", attemptsDetail, "50")

	mustBadLogin(t, ts.attemptLogin(t, "user21", "wrong-password", ipB...), "B: failure")
	ts.attemptLogin(t, "bob", rlPassword, ipB...).mustStatus(t, "B: bob logs in", http.StatusOK)
	mustTooMany(t, ts.attemptLogin(t, "user22", "wrong-password", ipA...), "A after B's success", attemptsDetail, "50")

	// A refusal for the IP gives the username's slot back: carol's four
	// failures from B and three refusals from A leave room for a fifth.
	for i := range 4 {
		mustBadLogin(t, ts.attemptLogin(t, "carol", "wrong-password", ipB...), fmt.Sprintf("B: carol failure %d", i+1))
	}
	for i := range 3 {
		mustTooMany(t, ts.attemptLogin(t, "carol", "wrong-password", ipA...), fmt.Sprintf("A: carol refusal %d", i+1), attemptsDetail, "50")
	}
	mustBadLogin(t, ts.attemptLogin(t, "carol", "wrong-password", ipB...), "B: carol failure 5")
	mustTooMany(t, ts.attemptLogin(t, "carol", "wrong-password", ipB...), "B: carol failure 6", attemptsDetail, "900")

	// At t0+60s only the failure at t0 has left A's window.
	ts.clock.Advance(50 * time.Second)
	mustBadLogin(t, ts.attemptLogin(t, "user23", "wrong-password", ipA...), "A: once the first failure expired")
	mustTooMany(t, ts.attemptLogin(t, "user24", "wrong-password", ipA...), "A: full again", attemptsDetail, "10")
}

func TestLoginLimitSuccessesDoNotCountPerIP(t *testing.T) {
	ts := newTestServer(t, trustLoopback(t))
	ts.register(t, "bob", rlPassword)
	ip := xff("198.51.100.1")
	for i := range 19 {
		mustBadLogin(t, ts.attemptLogin(t, fmt.Sprintf("user%d", i), "wrong-password", ip...), fmt.Sprintf("failure %d", i+1))
	}
	for i := range 5 {
		ts.attemptLogin(t, "bob", rlPassword, ip...).mustStatus(t, fmt.Sprintf("success %d", i+1), http.StatusOK)
	}
	mustBadLogin(t, ts.attemptLogin(t, "user19", "wrong-password", ip...), "failure 20")
	mustTooMany(t, ts.attemptLogin(t, "bob", rlPassword, ip...), "after 20 failures", attemptsDetail, "60")
}

func TestLoginLimitConcurrent(t *testing.T) {
	ts := newTestServer(t)
	ts.register(t, "alice", rlPassword)

	const n = 20
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		statuses = map[int]int{}
		errs     []error
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := ts.Client().Post(ts.URL+"/api/v1/login", "application/json",
				strings.NewReader(`{"username":"alice","password":"wrong-password"}`))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			resp.Body.Close()
			statuses[resp.StatusCode]++
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("POST /api/v1/login: %v", errs)
	}
	// Slots are taken before the password is checked, so no more than the
	// limit get to guess however many arrive at once.
	if want := map[int]int{http.StatusUnauthorized: 5, http.StatusTooManyRequests: n - 5}; !reflect.DeepEqual(statuses, want) {
		t.Errorf("statuses of %d parallel wrong logins = %v, want %v", n, statuses, want)
	}
	mustTooMany(t, ts.attemptLogin(t, "alice", rlPassword), "right password afterwards", attemptsDetail, "900")
}

func TestLoginLimitSuccessGivesBackItsSlot(t *testing.T) {
	ts := newTestServer(t)
	ts.register(t, "alice", rlPassword)
	for i := range 4 {
		mustBadLogin(t, ts.attemptLogin(t, "alice", "wrong-password"), fmt.Sprintf("failure %d", i+1))
		ts.clock.Advance(time.Second)
	}
	// The success takes the fifth slot and gives back only that one: the
	// four failures still count.
	ts.attemptLogin(t, "alice", rlPassword).mustStatus(t, "success after 4 failures", http.StatusOK)
	ts.attemptLogin(t, "alice", rlPassword).mustStatus(t, "second success", http.StatusOK)
	mustBadLogin(t, ts.attemptLogin(t, "alice", "wrong-password"), "failure 5")
	// Four seconds have passed since the first failure.
	mustTooMany(t, ts.attemptLogin(t, "alice", rlPassword), "after failure 5", attemptsDetail, "896")
}

func TestLoginLimitSharedWithPasswordChange(t *testing.T) {
	ts := newTestServer(t)
	token := ts.register(t, "alice", rlPassword)
	change := func(current string) response {
		body := fmt.Sprintf(`{"current_password":%q,"new_password":"a-new-password"}`, current)
		return ts.request(t, "PATCH", "/api/v1/me/password", body, bearer(token)...)
	}
	for i := range 5 {
		r := change("wrong-password").mustStatus(t, fmt.Sprintf("wrong current password %d", i+1), http.StatusForbidden)
		if d := r.detail(t); d != "Current password is incorrect" {
			t.Errorf("wrong current password: detail = %v, want Current password is incorrect", d)
		}
	}
	mustTooMany(t, change(rlPassword), "password change after 5 wrong guesses", attemptsDetail, "900")
	mustTooMany(t, ts.attemptLogin(t, "alice", rlPassword), "login after 5 wrong guesses", attemptsDetail, "900")
	ts.clock.Advance(15 * time.Minute)
	change(rlPassword).mustStatus(t, "password change once the window passed", http.StatusOK)
}

func TestRegisterLimitPerIP(t *testing.T) {
	ts := newTestServer(t, trustLoopback(t))
	ipA, ipB := xff("198.51.100.1"), xff("198.51.100.2")
	register := func(name string, headers ...string) response {
		return ts.request(t, "POST", "/api/v1/register", fmt.Sprintf(`{"username":%q,"password":%q}`, name, rlPassword), headers...)
	}
	// Ten registrations a minute apart, from t0 to t0+9m.
	for i := range 10 {
		if i > 0 {
			ts.clock.Advance(time.Minute)
		}
		register(fmt.Sprintf("user%d", i), ipA...).mustStatus(t, fmt.Sprintf("registration %d", i+1), http.StatusCreated)
	}
	// The first leaves the hour at t0+60m, 3060 s from t0+9m.
	mustTooMany(t, register("user10", ipA...), "11th registration", attemptsDetail, "3060")
	// Bodies are checked before the limit.
	ts.request(t, "POST", "/api/v1/register", `{}`, ipA...).mustStatus(t, "invalid body", http.StatusUnprocessableEntity)

	register("other", ipB...).mustStatus(t, "registration from another IP", http.StatusCreated)

	ts.clock.Advance(3060 * time.Second)
	register("user10", ipA...).mustStatus(t, "registration once the first expired", http.StatusCreated)
	mustTooMany(t, register("user11", ipA...), "full again", attemptsDetail, "60")
}

func TestIngestLimit(t *testing.T) {
	slow := func(cfg *config) {
		cfg.limits.ingest = rateLimit{rate: 1, burst: 3}
		cfg.limits.ingestKey = rateLimit{rate: 1, burst: 2}
	}
	// exhaust spends the anonymous burst of 3 with the given headers.
	exhaust := func(t *testing.T, ts *testServer, what string, headers ...string) {
		t.Helper()
		for i := range 3 {
			ts.postIncident(t, reportBody(fmt.Sprintf("%s %d", what, i), "high"), headers...).mustStatus(t, fmt.Sprintf("%s: report %d", what, i+1), http.StatusCreated)
		}
		mustTooMany(t, ts.postIncident(t, reportBody(what+" 4", "high"), headers...), what+": report 4", reportsDetail, "1")
	}

	t.Run("bucket", func(t *testing.T) {
		ts := newTestServer(t, slow)
		for range 3 {
			ts.request(t, "POST", "/api/v1/incidents", `{"title":""}`).mustStatus(t, "invalid report", http.StatusUnprocessableEntity)
		}
		exhaust(t, ts, "anonymous")
		ts.clock.Advance(500 * time.Millisecond)
		mustTooMany(t, ts.postIncident(t, reportBody("half a second later", "high")), "half a second later", reportsDetail, "1")
		ts.clock.Advance(500 * time.Millisecond)
		ts.postIncident(t, reportBody("a second later", "high")).mustStatus(t, "a second later", http.StatusCreated)
		mustTooMany(t, ts.postIncident(t, reportBody("then", "high")), "then", reportsDetail, "1")
		// An idle minute refills the burst, no more.
		ts.clock.Advance(time.Minute)
		exhaust(t, ts, "after a minute")
	})

	t.Run("per client IP behind a trusted proxy", func(t *testing.T) {
		ts := newTestServer(t, slow, trustLoopback(t))
		exhaust(t, ts, "A", xff("198.51.100.1")...)
		exhaust(t, ts, "B", xff("198.51.100.2")...)
		ts.postIncident(t, reportBody("direct", "high")).mustStatus(t, "the proxy itself", http.StatusCreated)
	})

	t.Run("X-Forwarded-For ignored without trusted proxies", func(t *testing.T) {
		ts := newTestServer(t, slow)
		for i := range 3 {
			ts.postIncident(t, reportBody(fmt.Sprint("spoofed ", i), "high"), xff(fmt.Sprintf("198.51.100.%d", i+1))...).mustStatus(t, fmt.Sprint("spoofed ", i+1), http.StatusCreated)
		}
		mustTooMany(t, ts.postIncident(t, reportBody("spoofed 4", "high"), xff("198.51.100.4")...), "spoofed 4", reportsDetail, "1")
		mustTooMany(t, ts.postIncident(t, reportBody("plain", "high")), "no X-Forwarded-For", reportsDetail, "1")
	})

	t.Run("signed-in users and API keys have their own buckets", func(t *testing.T) {
		ts := newTestServer(t, slow)
		alice := ts.register(t, "alice", rlPassword)
		bob := ts.register(t, "bob", rlPassword)
		exhaust(t, ts, "anonymous")
		// A token that does not validate is no credential: the IP's bucket.
		mustTooMany(t, ts.postIncident(t, reportBody("bad token", "high"), bearer("not-a-jwt")...), "bad token", reportsDetail, "1")

		for i := range 2 {
			ts.postIncident(t, reportBody(fmt.Sprint("alice ", i), "high"), bearer(alice)...).mustStatus(t, fmt.Sprint("alice ", i+1), http.StatusCreated)
		}
		mustTooMany(t, ts.postIncident(t, reportBody("alice 3", "high"), bearer(alice)...), "alice 3", reportsDetail, "1")
		ts.postIncident(t, reportBody("bob", "high"), bearer(bob)...).mustStatus(t, "bob", http.StatusCreated)

		var key struct {
			Key string `json:"key"`
		}
		ts.request(t, "POST", "/api/v1/api-keys", `{"name":"ci","scopes":["incidents:write"]}`, bearer(alice)...).
			mustStatus(t, "create key", http.StatusCreated).json(t, &key)
		for i := range 2 {
			ts.postIncident(t, reportBody(fmt.Sprint("key ", i), "high"), bearer(key.Key)...).mustStatus(t, fmt.Sprint("key ", i+1), http.StatusCreated)
		}
		mustTooMany(t, ts.postIncident(t, reportBody("key 3", "high"), bearer(key.Key)...), "key 3", reportsDetail, "1")
	})

	t.Run("rate 0 is off", func(t *testing.T) {
		ts := newTestServer(t, func(cfg *config) { cfg.limits.ingest = rateLimit{rate: 0, burst: 1} })
		for i := range 10 {
			ts.postIncident(t, reportBody(fmt.Sprint("unlimited ", i), "high")).mustStatus(t, fmt.Sprint("report ", i+1), http.StatusCreated)
		}
	})
}

func TestRateLimitsOff(t *testing.T) {
	ts := newTestServer(t, func(cfg *config) {
		cfg.rateLimits = false
		cfg.limits.ingest = rateLimit{rate: 1, burst: 1}
	})
	ts.register(t, "alice", rlPassword)
	// More than both the username's limit (5) and the IP's (20).
	for i := range 21 {
		mustBadLogin(t, ts.attemptLogin(t, "alice", "wrong-password"), fmt.Sprintf("failure %d", i+1))
	}
	ts.attemptLogin(t, "alice", rlPassword).mustStatus(t, "right password after 21 failures", http.StatusOK)
	for i := range 5 {
		ts.postIncident(t, reportBody(fmt.Sprint("report ", i), "high")).mustStatus(t, fmt.Sprint("report ", i+1), http.StatusCreated)
	}
}

func TestRateLimitTooMany(t *testing.T) {
	for _, tt := range []struct {
		wait time.Duration
		want string
	}{
		{time.Nanosecond, "1"},
		{time.Second, "1"},
		{time.Second + time.Millisecond, "2"},
		{15 * time.Minute, "900"},
		{0, "1"},
	} {
		err := tooMany(tt.wait, reportsDetail)
		var herr *httpError
		if !errors.As(err, &herr) {
			t.Fatalf("tooMany(%v) = %T, want *httpError", tt.wait, err)
		}
		if herr.status != http.StatusTooManyRequests || herr.detail != reportsDetail {
			t.Errorf("tooMany(%v) = %d %q, want 429 %q", tt.wait, herr.status, herr.detail, reportsDetail)
		}
		if got := herr.header.Get("Retry-After"); got != tt.want {
			t.Errorf("tooMany(%v) Retry-After = %q, want %q", tt.wait, got, tt.want)
		}
	}
}

func TestRateLimitWindow(t *testing.T) {
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	var none *windowLimit
	if got := none.take("k", t0); got != 0 {
		t.Errorf("nil limit take = %v, want 0", got)
	}
	none.giveBack("k", t0)
	off := newWindowLimit(0, time.Minute)
	for range 3 {
		if got := off.take("k", t0); got != 0 {
			t.Errorf("zero limit take = %v, want 0", got)
		}
	}

	l := newWindowLimit(2, time.Minute)
	for _, step := range []struct {
		key  string
		at   time.Duration
		want time.Duration
	}{
		{"a", 0, 0},
		{"a", 10 * time.Second, 0},
		{"a", 20 * time.Second, 40 * time.Second},
		{"b", 20 * time.Second, 0},
		{"a", 59 * time.Second, time.Second},
		{"a", time.Minute, 0}, // the event at 0 is out of the window
		{"a", time.Minute, 10 * time.Second},
	} {
		if got := l.take(step.key, t0.Add(step.at)); got != step.want {
			t.Errorf("take(%q) at +%v = %v, want %v", step.key, step.at, got, step.want)
		}
	}

	g := newWindowLimit(1, time.Minute)
	g.take("k", t0)
	g.giveBack("k", t0.Add(time.Second)) // never taken: nothing to undo
	if got := g.take("k", t0.Add(2*time.Second)); got != 58*time.Second {
		t.Errorf("take after giving back an untaken time = %v, want 58s", got)
	}
	g.giveBack("k", t0)
	if got := g.take("k", t0.Add(2*time.Second)); got != 0 {
		t.Errorf("take after giveBack = %v, want 0", got)
	}
}

func TestRateLimitTokenBucket(t *testing.T) {
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	var none *tokenBucket
	if got := none.take("k", t0); got != 0 {
		t.Errorf("nil bucket take = %v, want 0", got)
	}
	off := newTokenBucket(0, 1)
	for range 3 {
		if got := off.take("k", t0); got != 0 {
			t.Errorf("zero-rate bucket take = %v, want 0", got)
		}
	}

	b := newTokenBucket(2, 3)
	for _, step := range []struct {
		key  string
		at   time.Duration
		want time.Duration
	}{
		{"a", 0, 0},
		{"a", 0, 0},
		{"a", 0, 0},
		{"a", 0, 500 * time.Millisecond},
		{"b", 0, 0},
		{"a", 250 * time.Millisecond, 250 * time.Millisecond},
		{"a", 500 * time.Millisecond, 0},
		{"a", 500 * time.Millisecond, 500 * time.Millisecond},
		// An idle hour refills the burst and no more.
		{"a", time.Hour, 0},
		{"a", time.Hour, 0},
		{"a", time.Hour, 0},
		{"a", time.Hour, 500 * time.Millisecond},
	} {
		if got := b.take(step.key, t0.Add(step.at)); got != step.want {
			t.Errorf("take(%q) at +%v = %v, want %v", step.key, step.at, got, step.want)
		}
	}

	one := newTokenBucket(1, 0) // a burst under 1 is 1
	if got := one.take("k", t0); got != 0 {
		t.Errorf("burst 0: first take = %v, want 0", got)
	}
	if got := one.take("k", t0); got != time.Second {
		t.Errorf("burst 0: second take = %v, want 1s", got)
	}
}

func TestRateLimitWindowEviction(t *testing.T) {
	l := newWindowLimit(1, time.Minute)
	checkEviction(t, l.take, func() int { return len(l.keys) }, func(k string) bool { _, ok := l.keys[k]; return ok }, time.Second, 90*time.Second)
}

func TestRateLimitWindowEvictionAfterGiveBack(t *testing.T) {
	// A login that succeeds takes a slot and gives it back; the key stays
	// behind with no events. Eviction must cope with such keys.
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newWindowLimit(5, time.Minute)
	l.take("succeeded", t0)
	l.giveBack("succeeded", t0)
	for i := range maxLimiterKeys - 1 {
		l.take(strconv.Itoa(i), t0)
	}
	func() {
		defer func() {
			if v := recover(); v != nil {
				t.Errorf("take on a full limit with a given-back key panicked: %v", v)
			}
		}()
		if got := l.take("new", t0.Add(time.Second)); got != 0 {
			t.Errorf("take on a full limit = %v, want 0", got)
		}
	}()
	if len(l.keys) > maxLimiterKeys {
		t.Errorf("keys = %d, want at most %d", len(l.keys), maxLimiterKeys)
	}
}

func TestRateLimitBucketEviction(t *testing.T) {
	b := newTokenBucket(1, 1)
	checkEviction(t, b.take, func() int { return len(b.keys) }, func(k string) bool { _, ok := b.keys[k]; return ok }, time.Millisecond, 1500*time.Millisecond)
}

// checkEviction fills a limit to maxLimiterKeys keys, all busy at t0. A new
// key at busy must still get in (arbitrary keys go, down to half) and be
// kept. Then, at idle, when the old keys are idle and the limit is full
// again, only the old keys may go.
func checkEviction(t *testing.T, take func(string, time.Time) time.Duration, count func() int, has func(string) bool, busy, idle time.Duration) {
	t.Helper()
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range maxLimiterKeys {
		take(strconv.Itoa(i), t0)
	}
	if count() != maxLimiterKeys {
		t.Fatalf("keys = %d, want %d", count(), maxLimiterKeys)
	}
	for i := range 3 {
		key := fmt.Sprint("new", i)
		if got := take(key, t0.Add(busy)); got != 0 {
			t.Errorf("take(%q) on a full limit = %v, want 0", key, got)
		}
		if count() > maxLimiterKeys/2+i+1 {
			t.Fatalf("keys = %d after take(%q), want at most %d", count(), key, maxLimiterKeys/2+i+1)
		}
		if got := take(key, t0.Add(busy)); got == 0 {
			t.Errorf("second take(%q) = 0, want a wait: the new key was not kept", key)
		}
	}
	var fresh []string
	for i := count(); i < maxLimiterKeys; i++ {
		fresh = append(fresh, fmt.Sprint("fresh", i))
		take(fresh[len(fresh)-1], t0.Add(idle))
	}
	take("late", t0.Add(idle))
	if count() != len(fresh)+1 {
		t.Errorf("keys = %d after evicting the idle ones, want the %d fresh ones and late", count(), len(fresh))
	}
	for _, k := range append(fresh, "late") {
		if !has(k) {
			t.Fatalf("busy key %q was evicted while idle ones were left", k)
		}
	}
}

func TestRateLimitParseCountLimit(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want countLimit
	}{
		{"0", countLimit{}},
		{"5/15m", countLimit{n: 5, window: 15 * time.Minute}},
		{"20/1m", countLimit{n: 20, window: time.Minute}},
		{"10/h", countLimit{n: 10, window: time.Hour}},
		{"3/s", countLimit{n: 3, window: time.Second}},
		{"7/m", countLimit{n: 7, window: time.Minute}},
		{"2/1h30m", countLimit{n: 2, window: 90 * time.Minute}},
		{"0/1m", countLimit{n: 0, window: time.Minute}},
	} {
		got, err := parseCountLimit(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("parseCountLimit(%q) = %+v, %v; want %+v, nil", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{"", "5", "/15m", "x/15m", "-1/15m", "5/", "5/15", "5/0s", "5/-1m", "5/d", " 5/15m", "5/15m/1", "1.5/s"} {
		if got, err := parseCountLimit(in); err == nil {
			t.Errorf("parseCountLimit(%q) = %+v, nil; want an error", in, got)
		} else if want := "want a count per duration like 5/15m, or 0 for none"; err.Error() != want {
			t.Errorf("parseCountLimit(%q) error = %q, want %q", in, err, want)
		}
	}
}

func TestRateLimitParseRate(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want float64
	}{
		{"0", 0},
		{"0/s", 0},
		{"20/s", 20},
		{"600/1m", 10},
		{"1/2s", 0.5},
		{"36/h", 0.01},
	} {
		got, err := parseRate(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("parseRate(%q) = %v, %v; want %v, nil", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{"", "20", "fast", "20/0s", "-5/s", "20/week"} {
		if got, err := parseRate(in); err == nil {
			t.Errorf("parseRate(%q) = %v, nil; want an error", in, got)
		}
	}
}

func TestClientIP(t *testing.T) {
	tp, err := parseTrustedProxies("10.0.0.0/8, 127.0.0.1, ::1, fd00::/8")
	if err != nil {
		t.Fatalf("parseTrustedProxies: %v", err)
	}
	for _, tt := range []struct {
		name    string
		proxies trustedProxies
		remote  string
		xff     []string // one X-Forwarded-For header each
		want    string
	}{
		{"no proxies trusted", nil, "10.0.0.1:4000", []string{"198.51.100.7"}, "10.0.0.1"},
		{"untrusted peer", tp, "203.0.113.9:4000", []string{"198.51.100.7"}, "203.0.113.9"},
		{"untrusted peer claiming a proxy", tp, "203.0.113.9:4000", []string{"198.51.100.7, 10.0.0.2"}, "203.0.113.9"},
		{"trusted peer, no header", tp, "10.0.0.1:4000", nil, "10.0.0.1"},
		{"trusted peer, empty header", tp, "10.0.0.1:4000", []string{""}, "10.0.0.1"},
		{"trusted peer", tp, "10.0.0.1:4000", []string{"198.51.100.7"}, "198.51.100.7"},
		{"spaces", tp, "10.0.0.1:4000", []string{"  198.51.100.7  "}, "198.51.100.7"},
		{"right-most untrusted entry", tp, "10.0.0.1:4000", []string{"6.6.6.6, 198.51.100.7"}, "198.51.100.7"},
		{"chain of trusted proxies", tp, "10.0.0.1:4000", []string{"6.6.6.6, 198.51.100.7, 10.0.0.3, 10.0.0.2"}, "198.51.100.7"},
		{"client claims to be a proxy", tp, "10.0.0.1:4000", []string{"10.9.9.9, 198.51.100.7"}, "198.51.100.7"},
		{"only proxies", tp, "10.0.0.1:4000", []string{"10.0.0.3, 10.0.0.2"}, "10.0.0.3"},
		{"garbled right-most entry", tp, "10.0.0.1:4000", []string{"198.51.100.7, bogus"}, "10.0.0.1"},
		{"garbled entry behind a proxy", tp, "10.0.0.1:4000", []string{"198.51.100.7, bogus, 10.0.0.3"}, "10.0.0.3"},
		{"garbled entry left of the client", tp, "10.0.0.1:4000", []string{"bogus, 198.51.100.7"}, "198.51.100.7"},
		{"entry with a port", tp, "10.0.0.1:4000", []string{"198.51.100.7:5555"}, "198.51.100.7"},
		{"bracketed IPv6 entry", tp, "10.0.0.1:4000", []string{"[2001:db8::7]"}, "2001:db8::7"},
		{"bracketed IPv6 entry with a port", tp, "10.0.0.1:4000", []string{"[2001:db8::7]:443"}, "2001:db8::7"},
		{"trailing comma", tp, "10.0.0.1:4000", []string{"198.51.100.7,"}, "10.0.0.1"},
		{"IPv6 peer and client", tp, "[::1]:4000", []string{"2001:db8::7"}, "2001:db8::7"},
		{"IPv6 chain", tp, "[fd00::1]:4000", []string{"2001:db8::7, fd00::2"}, "2001:db8::7"},
		{"IPv6 client through an IPv4 proxy", tp, "127.0.0.1:4000", []string{"2001:db8::7"}, "2001:db8::7"},
		{"untrusted IPv6 peer", tp, "[2001:db8::9]:4000", []string{"198.51.100.7"}, "2001:db8::9"},
		{"IPv4-mapped trusted peer", tp, "[::ffff:10.0.0.1]:4000", []string{"198.51.100.7"}, "198.51.100.7"},
		{"IPv4-mapped client", tp, "10.0.0.1:4000", []string{"::ffff:198.51.100.7"}, "198.51.100.7"},
		{"IPv4-mapped proxy entry", tp, "10.0.0.1:4000", []string{"198.51.100.7, ::ffff:10.0.0.3"}, "198.51.100.7"},
		{"multiple headers", tp, "10.0.0.1:4000", []string{"6.6.6.6, 198.51.100.7", "10.0.0.3"}, "198.51.100.7"},
		{"multiple headers, last one wins", tp, "10.0.0.1:4000", []string{"198.51.100.7", "203.0.113.5"}, "203.0.113.5"},
		{"peer without a port", tp, "10.0.0.1", []string{"198.51.100.7"}, "198.51.100.7"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tt.remote
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := tt.proxies.clientIP(r); got != tt.want {
				t.Errorf("clientIP(%s, X-Forwarded-For %q) = %q, want %q", tt.remote, tt.xff, got, tt.want)
			}
		})
	}
}

func TestClientIPParseTrustedProxies(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{" , ", nil},
		{"10.0.0.0/8", []string{"10.0.0.0/8"}},
		{"10.1.2.3/8", []string{"10.0.0.0/8"}},
		{" 192.168.1.7 , ::1,fd00::/8 ", []string{"192.168.1.7/32", "::1/128", "fd00::/8"}},
	} {
		tp, err := parseTrustedProxies(tt.in)
		if err != nil {
			t.Errorf("parseTrustedProxies(%q) error = %v", tt.in, err)
			continue
		}
		var got []string
		for _, p := range tp {
			got = append(got, p.String())
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("parseTrustedProxies(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	for _, tt := range []struct{ in, want string }{
		{"10.0.0", `"10.0.0" is not a CIDR such as 10.0.0.0/8`},
		{"10.0.0.0/8, proxy.internal", `"proxy.internal" is not a CIDR such as 10.0.0.0/8`},
		{"10.0.0.0/33", `"10.0.0.0/33" is not a CIDR such as 10.0.0.0/8`},
	} {
		if _, err := parseTrustedProxies(tt.in); err == nil || err.Error() != tt.want {
			t.Errorf("parseTrustedProxies(%q) error = %v, want %q", tt.in, err, tt.want)
		}
	}
	tp, _ := parseTrustedProxies("10.0.0.0/8")
	if !tp.contains(netip.MustParseAddr("::ffff:10.1.1.1")) {
		t.Errorf("10.0.0.0/8 does not contain ::ffff:10.1.1.1, want it to")
	}
}

func TestIPLimitKey(t *testing.T) {
	for ip, want := range map[string]string{
		"198.51.100.7":         "198.51.100.7",
		"2001:db8:1:2:3:4:5:6": "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::1": "2001:db8:1:2::/64",
		"::ffff:198.51.100.7":  "::ffff:198.51.100.7",
		"not an address":       "not an address",
	} {
		if got := ipLimitKey(ip); got != want {
			t.Errorf("ipLimitKey(%q) = %q, want %q", ip, got, want)
		}
	}
}
