package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// webhookTimeout bounds one attempt, answer included.
	webhookTimeout = 15 * time.Second
	// webhookLease is how long a claimed attempt is a replica's own: past
	// it, the replica is taken for dead and another sends the attempt again.
	webhookLease = webhookTimeout + 45*time.Second
	// maxInFlight bounds the attempts one replica has under way.
	maxInFlight = 32
	// maxRetryAfter caps the wait a receiver's Retry-After asks for.
	maxRetryAfter = 24 * time.Hour
)

// retrySchedule is the wait before each retry after a failed attempt: ten
// attempts in all over about three days, after which the event is failed
// and the endpoint disabled.
var retrySchedule = []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour,
	5 * time.Hour, 10 * time.Hour, 14 * time.Hour, 20 * time.Hour, 24 * time.Hour}

// newWebhookClient is the client webhook attempts go through: redirects
// are answers (failures), never followed, and each attempt has its
// timeout. With denyPrivate, it refuses to connect to an address that
// deniedAddr refuses, checked at connect time on the resolved address, so
// that neither a name nor a DNS answer changed after the check can point
// it inside; it then uses no proxy, whose address would be checked instead.
func newWebhookClient(denyPrivate bool) *http.Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if denyPrivate {
		dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second,
			Control: func(network, address string, _ syscall.RawConn) error {
				host, _, err := net.SplitHostPort(address)
				if err != nil {
					return err
				}
				if ip, err := netip.ParseAddr(host); err != nil || deniedAddr(ip) {
					return fmt.Errorf("%w: %s", errPrivateAddress, host)
				}
				return nil
			}}
		transport.DialContext = dialer.DialContext
		transport.Proxy = nil
	}
	return &http.Client{
		Transport:     transport,
		Timeout:       webhookTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// errPrivateAddress is why WEBHOOK_DENY_PRIVATE refused a connection.
var errPrivateAddress = errors.New("WEBHOOK_DENY_PRIVATE refuses this address")

// sharedAddressSpace is 100.64.0.0/10 (RFC 6598), carrier-grade NAT.
var sharedAddressSpace = netip.MustParsePrefix("100.64.0.0/10")

// deniedAddr reports whether WEBHOOK_DENY_PRIVATE refuses ip: loopback,
// private, link-local (169.254.169.254, the cloud metadata service,
// included), shared, multicast or unspecified.
func deniedAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsMulticast() || ip.IsUnspecified() || sharedAddressSpace.Contains(ip)
}

// signWebhook is the webhook-signature header of the Standard Webhooks
// specification: for each secret, v1 and the base64 of the HMAC-SHA256 of
// "{id}.{timestamp}.{body}" keyed with the secret's decoded bytes,
// space-separated.
func signWebhook(secrets []string, msgID string, ts int64, body []byte) string {
	sigs := make([]string, 0, len(secrets))
	for _, secret := range secrets {
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
		if err != nil {
			continue // never: the server made the secret
		}
		mac := hmac.New(sha256.New, key)
		fmt.Fprintf(mac, "%s.%d.", msgID, ts)
		mac.Write(body)
		sigs = append(sigs, "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	}
	return strings.Join(sigs, " ")
}

// webhookBodies builds what event e sends to each of hooks: the body in
// the hook's format, or nil for a hook that does not want it. The event is
// decoded once, and a format's body built once, whatever the number of
// endpoints (ntfy's names the endpoint's topic, so it is built per
// topic). The Standard Webhooks body is the event's type, its time, and
// the incident as the REST API returns it plus the actor, a link back,
// and the escalation or heartbeat the event is about. An escalation step's
// webhooks are sent its escalated events whatever their event types and
// filters: the policy chose them.
func (s *server) webhookBodies(e storedEvent, hooks []webhook) [][]byte {
	bodies := make([][]byte, len(hooks))
	eventType, known := webhookEventTypes[e.Type]
	var data map[string]json.RawMessage
	if !known || json.Unmarshal(e.Data, &data) != nil {
		return bodies
	}
	var fields struct {
		Severity string            `json:"severity"`
		Labels   map[string]string `json:"labels"`
	}
	_ = json.Unmarshal(e.Data, &fields)
	var notice escalationNotice
	if e.Escalation != nil {
		_ = json.Unmarshal(e.Escalation, &notice)
	}
	actor, link := newEventView(e).Actor, ""
	if s.cfg.publicURL != "" {
		link = s.cfg.publicURL + "/api/v1/incidents/" + strconv.FormatInt(e.IncidentID, 10)
	}
	data["actor"], _ = marshalJSON(actor)
	data["url"] = json.RawMessage("null")
	if link != "" {
		data["url"], _ = marshalJSON(link)
	}
	if e.Escalation != nil {
		data["escalation"] = e.Escalation
	}
	if e.Heartbeat != nil {
		data["heartbeat"] = e.Heartbeat
	}
	full, err := marshalJSON(data)
	if err != nil {
		return bodies
	}
	built := map[string][]byte{} // by format, and ntfy topic
	for i, wh := range hooks {
		if !slices.Contains(notice.Webhooks, wh.ID) && !wh.wants(eventType, fields.Severity, fields.Labels) {
			continue
		}
		key := wh.Format
		_, topic := ntfyTopic(wh.URL)
		if wh.Format == "ntfy" {
			key += " " + topic
		}
		body, ok := built[key]
		if !ok {
			switch wh.Format {
			case "slack":
				body, err = slackBody(eventType, full, actor, link, e.CreatedAt)
			case "ntfy":
				body, err = ntfyBody(topic, eventType, full, actor, link)
			default:
				body, err = marshalJSON(map[string]any{"type": eventType, "timestamp": e.CreatedAt, "data": json.RawMessage(full)})
			}
			if err != nil {
				body = nil
			}
			built[key] = body
		}
		bodies[i] = body
	}
	return bodies
}

// wants reports whether wh asks for events of eventType about an incident
// of severity with labels: one of its event types, at least its severity,
// all its labels.
func (wh webhook) wants(eventType, severity string, labels map[string]string) bool {
	if !slices.Contains(wh.EventTypes, eventType) || severityRank(severity) < severityRank(wh.MinSeverity) {
		return false
	}
	for k, v := range wh.Labels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// severityRank orders severities, low first; -1 for an unknown one.
func severityRank(sev string) int {
	for i, s := range severities {
		if s == sev {
			return i
		}
	}
	return -1
}

// attemptResult is what a receiver answered an attempt.
type attemptResult struct {
	status     int
	body       []byte // the first KiB
	retryAfter time.Duration
	err        error // the request failed, or the status is not a 2xx
}

func (res attemptResult) errText() string {
	if res.err == nil {
		return ""
	}
	return res.err.Error()
}

// sendWebhook makes one attempt: it signs body as message msgID at now,
// and posts it to wh's URL. Every format is signed the same way; a chat
// or push service ignores the headers.
func (s *server) sendWebhook(ctx context.Context, wh webhook, msgID string, body []byte, now time.Time) attemptResult {
	ts := now.Unix()
	target := wh.URL
	if wh.Format == "ntfy" {
		target, _ = ntfyTopic(wh.URL) // ntfy takes JSON at its root, the topic in the body
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return attemptResult{err: fmt.Errorf("bad url: %w", err)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "incidents-webhooks/"+s.metrics.build.Version)
	req.Header.Set("webhook-id", msgID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", signWebhook(wh.secrets(now), msgID, ts, body))
	resp, err := s.webhooks.Do(req)
	if err != nil {
		var uerr interface{ Timeout() bool }
		if errors.As(err, &uerr) && uerr.Timeout() {
			return attemptResult{err: errors.New("timed out")}
		}
		return attemptResult{err: fmt.Errorf("request failed: %w", errors.Unwrap(err))}
	}
	defer resp.Body.Close()
	res := attemptResult{status: resp.StatusCode}
	res.body, _ = io.ReadAll(io.LimitReader(resp.Body, 1024))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // so the connection can be reused
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		res.err = fmt.Errorf("redirect (%d) to %q, not followed", resp.StatusCode, resp.Header.Get("Location"))
	default:
		res.err = fmt.Errorf("answered %d", resp.StatusCode)
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
			res.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), now)
		}
	}
	return res
}

// parseRetryAfter reads a Retry-After header, seconds or an HTTP date; 0
// when absent or unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
		return min(time.Duration(n)*time.Second, maxRetryAfter)
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), maxRetryAfter)
	}
	return 0
}

// outcome decides what attempt d comes to.
func (d delivery) outcome(res attemptResult, now time.Time) deliveryOutcome {
	out := deliveryOutcome{code: res.status, err: res.errText()}
	switch {
	case res.err == nil:
		out.status = "succeeded"
	case res.status == http.StatusGone:
		out.status, out.disable = "failed", "the receiver answered 410 Gone"
	case d.Attempts > len(retrySchedule):
		out.status = "failed"
		out.disable = fmt.Sprintf("event %d failed after %d attempts; last: %s", d.EventSeq, d.Attempts, out.err)
	default:
		wait := retrySchedule[d.Attempts-1]
		wait += time.Duration(rand.Int64N(int64(wait)/10 + 1)) // up to 10% later, so endpoints that failed together spread out
		out.status, out.next = "pending", now.Add(max(wait, res.retryAfter))
	}
	return out
}

// deliverWebhooks is the webhooks' share of the timed work: it queues the
// events committed since each endpoint's cursor, then claims the due
// attempts and sends each in its own goroutine, so that a slow receiver
// delays no other. wait returns once those attempts are recorded (tests).
func (s *server) deliverWebhooks(ctx context.Context) (wait func()) {
	// The feed's position, not the table's newest id: below it every
	// event has committed or never will (see feed.go).
	upTo := s.hub.log.current().position
	if err := s.store.QueueWebhookEvents(ctx, upTo, s.now(), s.webhookBodies); err != nil && ctx.Err() == nil {
		s.log.Warn("queue webhook events", "error", err)
	}
	var wg sync.WaitGroup
	s.attemptsMu.Lock()
	draining := s.draining
	s.attemptsMu.Unlock()
	room := maxInFlight - int(s.inFlight.Load())
	if room <= 0 || draining {
		return wg.Wait
	}
	claimed, err := s.store.ClaimDeliveries(ctx, room, webhookLease, s.now())
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("claim webhook deliveries", "error", err)
		}
		return wg.Wait
	}
	for _, d := range claimed {
		if !s.startAttempt() {
			break // shutting down: the lease runs out and the attempt is made again
		}
		s.inFlight.Add(1)
		wg.Go(func() {
			defer s.attempts.Done()
			defer s.inFlight.Add(-1)
			s.attempt(ctx, d)
		})
	}
	return wg.Wait
}

// startAttempt counts an attempt in s.attempts, unless the server is
// draining them for shutdown.
func (s *server) startAttempt() bool {
	s.attemptsMu.Lock()
	defer s.attemptsMu.Unlock()
	if s.draining {
		return false
	}
	s.attempts.Add(1)
	return true
}

// drainWebhooks stops new webhook attempts and waits for those in flight
// to be sent and recorded, until ctx ends; false if some were still
// running then (they are cut off when the timer loop's context ends, and
// made again once their lease runs out).
func (s *server) drainWebhooks(ctx context.Context) bool {
	s.attemptsMu.Lock()
	s.draining = true
	s.attemptsMu.Unlock()
	return waitDone(ctx, &s.attempts)
}

// attempt sends delivery d once and records the outcome. When ctx ends
// mid-send nothing is recorded: the lease runs out and the attempt is made
// again.
func (s *server) attempt(ctx context.Context, d delivery) {
	start := time.Now()
	res := s.sendWebhook(ctx, d.webhook, d.msgID(), d.Body, s.now())
	if ctx.Err() != nil {
		return
	}
	out := d.outcome(res, s.now())
	s.metrics.webhookAttempt(out.status, time.Since(start))
	if out.err != "" {
		s.log.Info("webhook attempt failed", "webhook", d.WebhookID, "event", d.EventSeq, "attempt", d.Attempts, "error", out.err)
	}
	if err := s.store.RecordDelivery(ctx, d, out, s.now()); err != nil && ctx.Err() == nil {
		s.log.Warn("record webhook attempt", "webhook", d.WebhookID, "event", d.EventSeq, "error", err)
	}
}
