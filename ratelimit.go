package main

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Rate limits are kept in memory, per replica: they are a brake on abuse,
// not a quota. Their state is bounded: when a limit reaches maxLimiterKeys
// keys, idle ones are dropped and, if the keys are still too many, arbitrary
// ones (their callers start afresh), down to half.
const maxLimiterKeys = 100_000

// windowLimit allows at most n events per key in any window (a sliding
// log of the last n event times per key).
type windowLimit struct {
	n      int
	window time.Duration

	mu   sync.Mutex
	keys map[string][]time.Time
}

func newWindowLimit(n int, window time.Duration) *windowLimit {
	return &windowLimit{n: n, window: window, keys: map[string][]time.Time{}}
}

// take records an event for key if the window has room, and returns 0;
// otherwise it records nothing and returns how long until there is room.
// Taking before the work and giving back after it (a login that succeeded)
// keeps concurrent attempts from all slipping past the limit. A nil or
// zero limit always has room.
func (l *windowLimit) take(key string, now time.Time) time.Duration {
	if l == nil || l.n <= 0 {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	events := l.recent(key, now)
	if len(events) >= l.n {
		return events[0].Add(l.window).Sub(now)
	}
	if len(l.keys) >= maxLimiterKeys {
		l.evict(now)
	}
	l.keys[key] = append(events, now)
	return 0
}

// giveBack undoes a take made at the time at.
func (l *windowLimit) giveBack(key string, at time.Time) {
	if l == nil || l.n <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	events := l.keys[key]
	if i := slices.Index(events, at); i >= 0 {
		events = slices.Delete(events, i, i+1)
	}
	if len(events) == 0 {
		delete(l.keys, key)
		return
	}
	l.keys[key] = events
}

// recent returns key's events inside the window; the caller holds mu.
func (l *windowLimit) recent(key string, now time.Time) []time.Time {
	events := l.keys[key]
	i := 0
	for i < len(events) && !events[i].After(now.Add(-l.window)) {
		i++
	}
	if i == len(events) {
		delete(l.keys, key)
		return nil
	}
	return events[i:]
}

// evict drops keys with no event inside the window; the caller holds mu.
func (l *windowLimit) evict(now time.Time) {
	evictKeys(l.keys, func(events []time.Time) bool {
		return len(events) == 0 || !events[len(events)-1].After(now.Add(-l.window))
	})
}

// evictKeys deletes the idle entries of m and then, while more than half of
// maxLimiterKeys remain, arbitrary ones. Halving keeps the cost of a sweep
// spread over as many new keys as it frees.
func evictKeys[V any](m map[string]V, idle func(V) bool) {
	for key, v := range m {
		if idle(v) {
			delete(m, key)
		}
	}
	for key := range m {
		if len(m) <= maxLimiterKeys/2 {
			return
		}
		delete(m, key)
	}
}

// tokenBucket allows rate events per second per key, in bursts of up to
// burst.
type tokenBucket struct {
	rate  float64
	burst float64

	mu   sync.Mutex
	keys map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newTokenBucket(rate float64, burst int) *tokenBucket {
	return &tokenBucket{rate: rate, burst: float64(max(burst, 1)), keys: map[string]*bucket{}}
}

// take spends a token of key; when there is none it returns how long until
// there is one. A nil or zero-rate bucket never refuses.
func (tb *tokenBucket) take(key string, now time.Time) time.Duration {
	if tb == nil || tb.rate <= 0 {
		return 0
	}
	tb.mu.Lock()
	defer tb.mu.Unlock()
	b, ok := tb.keys[key]
	if !ok {
		if len(tb.keys) >= maxLimiterKeys {
			tb.evict(now)
		}
		b = &bucket{tokens: tb.burst, last: now}
		tb.keys[key] = b
	}
	b.tokens = math.Min(tb.burst, b.tokens+now.Sub(b.last).Seconds()*tb.rate)
	b.last = now
	if b.tokens < 1 {
		return time.Duration((1 - b.tokens) / tb.rate * float64(time.Second))
	}
	b.tokens--
	return 0
}

// evict drops buckets that have refilled (idle keys); the caller holds mu.
func (tb *tokenBucket) evict(now time.Time) {
	full := time.Duration(tb.burst / tb.rate * float64(time.Second))
	evictKeys(tb.keys, func(b *bucket) bool { return now.Sub(b.last) >= full })
}

// limits are the server's rate limits; nil members are off.
type limits struct {
	loginUser  *windowLimit // failed logins per username
	loginIP    *windowLimit // failed logins per client IP
	registerIP *windowLimit // registrations per client IP
	ingestIP   *tokenBucket // unauthenticated reports per client IP
	ingestKey  *tokenBucket // authenticated reports per key or user
}

func newLimits(cfg config) limits {
	if !cfg.rateLimits {
		return limits{}
	}
	rl := cfg.limits
	return limits{
		loginUser:  newWindowLimit(rl.loginUser.n, rl.loginUser.window),
		loginIP:    newWindowLimit(rl.loginIP.n, rl.loginIP.window),
		registerIP: newWindowLimit(rl.register.n, rl.register.window),
		ingestIP:   newTokenBucket(rl.ingest.rate, rl.ingest.burst),
		ingestKey:  newTokenBucket(rl.ingestKey.rate, rl.ingestKey.burst),
	}
}

// The details of 429s: sign-in attempts, and reports.
const (
	tooManyAttempts = "Too many attempts, try again later"
	tooManyReports  = "Too many reports, slow down"
)

// tooMany is the 429 for a limit, with Retry-After in whole seconds.
func tooMany(wait time.Duration, detail string) error {
	secs := int(math.Ceil(wait.Seconds()))
	return &httpError{status: http.StatusTooManyRequests, detail: detail,
		header: http.Header{"Retry-After": {strconv.Itoa(max(secs, 1))}}}
}

// countLimit is "n per window", as LOGIN_RATE_LIMIT=5/15m.
type countLimit struct {
	n      int
	window time.Duration
}

// rateLimit is "rate per second, burst", as INGEST_RATE_LIMIT=20/s and
// INGEST_BURST=100.
type rateLimit struct {
	rate  float64
	burst int
}

// parseCountLimit reads "n/duration" ("5/15m", "20/1m", "10/h"); "0" turns
// the limit off.
func parseCountLimit(v string) (countLimit, error) {
	if v == "0" {
		return countLimit{}, nil
	}
	n, per, ok := strings.Cut(v, "/")
	count, err := strconv.Atoi(n)
	if !ok || err != nil || count < 0 {
		return countLimit{}, fmt.Errorf("want a count per duration like 5/15m, or 0 for none")
	}
	window, err := parsePer(per)
	if err != nil {
		return countLimit{}, err
	}
	return countLimit{n: count, window: window}, nil
}

// parseRate reads "n/duration" as a rate per second ("20/s", "600/1m"); "0"
// turns the limit off.
func parseRate(v string) (float64, error) {
	cl, err := parseCountLimit(v)
	if err != nil || cl.n == 0 {
		return 0, err
	}
	return float64(cl.n) / cl.window.Seconds(), nil
}

// parsePer reads the duration of a limit: a Go duration, or a bare unit
// (s, m, h) meaning one of it.
func parsePer(per string) (time.Duration, error) {
	if per == "s" || per == "m" || per == "h" {
		per = "1" + per
	}
	d, err := time.ParseDuration(per)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("want a count per duration like 5/15m, or 0 for none")
	}
	return d, nil
}

// ipLimitKey is the key a client address is limited by. An IPv6 client
// usually holds a whole /64 and could take a new address per attempt, so
// its /64 is limited as one.
func ipLimitKey(ip string) string {
	addr, err := netip.ParseAddr(ip)
	if err != nil || !addr.Is6() || addr.Is4In6() {
		return ip
	}
	return netip.PrefixFrom(addr, 64).Masked().String()
}

// trustedProxies are the CIDRs whose X-Forwarded-For is believed.
type trustedProxies []netip.Prefix

func parseTrustedProxies(v string) (trustedProxies, error) {
	var tp trustedProxies
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !strings.Contains(s, "/") {
			if addr, err := netip.ParseAddr(s); err == nil {
				s = netip.PrefixFrom(addr, addr.BitLen()).String()
			}
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR such as 10.0.0.0/8", s)
		}
		tp = append(tp, p.Masked())
	}
	return tp, nil
}

func (tp trustedProxies) contains(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range tp {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// clientIP is the address limits and the audit log use: the TCP peer,
// unless the peer is a trusted proxy; then the right-most X-Forwarded-For
// entry that is not a trusted proxy (entries further left are what the
// client itself claimed).
func (tp trustedProxies) clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil || !tp.contains(peer) {
		return host
	}
	client := peer
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		entry := strings.TrimSpace(hops[i])
		if host, _, err := net.SplitHostPort(entry); err == nil {
			entry = host // "1.2.3.4:5555" or "[2001:db8::1]:443"
		}
		hop, err := netip.ParseAddr(strings.Trim(entry, "[]"))
		if err != nil {
			break // a garbled entry: trust nothing left of it
		}
		client = hop
		if !tp.contains(hop) {
			break
		}
	}
	return client.Unmap().String()
}
