package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"
)

var (
	webhookFormats = []string{"standard", "slack", "ntfy"}
	// webhookEventTypes are the event types an endpoint can ask for, and
	// the timeline's event type each comes from.
	webhookEventTypes = map[string]string{
		"added":          "incident.triggered",
		"acknowledged":   "incident.acknowledged",
		"unacknowledged": "incident.unacknowledged",
		"resolved":       "incident.resolved",
		"reopened":       "incident.reopened",
		"occurred":       "incident.occurred",
		"noted":          "incident.note_added",
		"escalated":      "incident.escalated",
		"heartbeat_down": "heartbeat.down",
		"heartbeat_up":   "heartbeat.up",
	}
	// allWebhookEventTypes lists them in the order errors name them.
	allWebhookEventTypes = []string{"incident.triggered", "incident.acknowledged", "incident.unacknowledged",
		"incident.resolved", "incident.reopened", "incident.occurred", "incident.note_added", "incident.escalated",
		"heartbeat.down", "heartbeat.up"}
	// defaultWebhookEventTypes is every type but incident.occurred, which
	// is noisy: each repeated report of an open incident.
	defaultWebhookEventTypes = slices.DeleteFunc(slices.Clone(allWebhookEventTypes), func(t string) bool { return t == "incident.occurred" })
)

// secretOverlap is how long the previous secret still signs after a rotation.
const secretOverlap = 24 * time.Hour

// webhookRequest is the body of POST and PATCH /api/v1/webhooks.
type webhookRequest struct {
	Name        jsonString `json:"name"`
	URL         jsonString `json:"url"`
	Format      jsonString `json:"format"`
	EventTypes  jsonValue  `json:"event_types"`
	MinSeverity jsonString `json:"min_severity"`
	Labels      jsonLabels `json:"labels"`
	Enabled     jsonValue  `json:"enabled"`
}

// apply validates in and applies what it sets to wh: every required field
// for a create, those present for an update.
func (in webhookRequest) apply(wh *webhook, create bool) []fieldError {
	loc := func(name string) []string { return []string{"body", name} }
	var problems []fieldError
	problems = stringRule{required: create, min: 1, max: 100, notBlank: true}.check(problems, loc("name"), in.Name)
	problems = stringRule{required: create, min: 1, max: 2000}.check(problems, loc("url"), in.URL)
	if in.URL.Present && in.URL.IsText && len(in.URL.Value) <= 2000 {
		if u, err := url.Parse(in.URL.Value); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			problems = append(problems, fieldError{Type: "url_parsing", Loc: loc("url"), Msg: "Input should be an absolute http or https URL"})
		}
	}
	problems = stringRule{oneOf: webhookFormats}.check(problems, loc("format"), in.Format)
	var types []string
	if in.EventTypes.Present {
		err := json.Unmarshal(in.EventTypes.Raw, &types)
		switch {
		case err != nil || types == nil:
			problems = append(problems, fieldError{Type: "list_type", Loc: loc("event_types"), Msg: "Input should be a valid list of event types"})
		case len(types) == 0:
			problems = append(problems, fieldError{Type: "too_short", Loc: loc("event_types"), Msg: "List should have at least 1 item"})
		}
		for i, t := range types {
			if !slices.Contains(allWebhookEventTypes, t) {
				problems = append(problems, fieldError{Type: "enum", Loc: []string{"body", "event_types", strconv.Itoa(i)},
					Msg: "Input should be " + quoteList(allWebhookEventTypes)})
			}
		}
	}
	problems = stringRule{oneOf: severities}.check(problems, loc("min_severity"), in.MinSeverity)
	problems = in.Labels.check(problems, loc("labels"))
	enabled, problems := boolField(problems, loc("enabled"), in.Enabled)
	if len(problems) > 0 {
		return problems
	}
	format, target := wh.Format, wh.URL
	if in.Format.Present && !in.Format.Null {
		format = in.Format.Value
	}
	if in.URL.Present && !in.URL.Null {
		target = in.URL.Value
	}
	if _, topic := ntfyTopic(target); format == "ntfy" && topic == "" {
		return []fieldError{{Type: "value_error", Loc: loc("url"), Msg: "Value error, an ntfy URL ends with its topic, like https://ntfy.sh/mytopic"}}
	}
	set := func(dst *string, v jsonString) {
		if v.Present && !v.Null {
			*dst = v.Value
		}
	}
	set(&wh.Name, in.Name)
	set(&wh.URL, in.URL)
	set(&wh.Format, in.Format)
	set(&wh.MinSeverity, in.MinSeverity)
	if types != nil {
		slices.Sort(types)
		wh.EventTypes = slices.Compact(types)
	}
	if in.Labels.Present {
		wh.Labels = in.Labels.values()
	}
	if enabled != nil {
		if *enabled && !wh.Enabled {
			wh.DisabledReason = ""
		}
		wh.Enabled = *enabled
	}
	return nil
}

// newWebhookSecret makes a Standard Webhooks secret: whsec_ and the base64
// of 32 random bytes.
func newWebhookSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(b), nil
}

// webhookWithSecret is a webhook as its creation or rotation returns it:
// with its signing secret, shown this once.
type webhookWithSecret struct {
	webhook
	Secret string `json:"secret"`
}

// webhookTestResult is what the receiver answered a test event.
type webhookTestResult struct {
	Status int    `json:"status"` // 0 when no answer came
	Body   string `json:"body"`   // the first KiB of the answer
	Error  string `json:"error"`  // why the attempt failed; empty on a 2xx
}

// handleWebhookCreate handles POST /api/v1/webhooks.
func (s *server) handleWebhookCreate(w http.ResponseWriter, r *http.Request) error {
	var in webhookRequest
	if err := readJSON(w, r, &in); err != nil {
		return err
	}
	wh := webhook{Format: "standard", EventTypes: defaultWebhookEventTypes, MinSeverity: "low", Labels: map[string]string{}, Enabled: true}
	if err := invalid(in.apply(&wh, true)...); err != nil {
		return err
	}
	secret, err := newWebhookSecret()
	if err != nil {
		return err
	}
	wh.secret = secret
	created, err := s.store.CreateWebhook(r.Context(), wh, s.adminAudit(r, "webhook.created"), s.now())
	if err != nil {
		return conflictAs(err, errWebhookNameTaken)
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusCreated, webhookWithSecret{created, secret})
}

// handleWebhookUpdate handles PATCH /api/v1/webhooks/{id}.
func (s *server) handleWebhookUpdate(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	var in webhookRequest
	if err := readJSON(w, r, &in); err != nil {
		return err
	}
	updated, err := s.store.UpdateWebhook(r.Context(), id, func(wh *webhook) error { return invalid(in.apply(wh, false)...) },
		s.adminAudit(r, "webhook.updated"), s.now())
	if err != nil {
		return notFoundAs(conflictAs(err, errWebhookNameTaken), errWebhookNotFound)
	}
	return writeJSON(w, http.StatusOK, updated)
}

// handleWebhookRotate handles POST /api/v1/webhooks/{id}/rotate: a new
// secret, returned this once; the old one also signs for 24 hours, so a
// receiver can switch without losing a message.
func (s *server) handleWebhookRotate(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	secret, err := newWebhookSecret()
	if err != nil {
		return err
	}
	updated, err := s.store.RotateWebhookSecret(r.Context(), id, secret, s.adminAudit(r, "webhook.secret_rotated"), s.now())
	if err != nil {
		return notFoundAs(err, errWebhookNotFound)
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusOK, webhookWithSecret{updated, secret})
}

// handleWebhookTest handles POST /api/v1/webhooks/{id}/test: a test event
// sent now, outside the endpoint's queue, whether or not it is enabled.
func (s *server) handleWebhookTest(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	wh, err := s.store.Webhook(r.Context(), id)
	if err != nil {
		return notFoundAs(err, errWebhookNotFound)
	}
	now := s.now()
	msgID, err := randomKey()
	if err != nil {
		return err
	}
	const text = "A test event from the incident server."
	var msg any
	switch wh.Format {
	case "slack":
		msg = map[string]any{"text": text}
	case "ntfy":
		_, topic := ntfyTopic(wh.URL)
		msg = map[string]any{"topic": topic, "title": "Test", "message": text, "priority": 2}
	default:
		msg = map[string]any{"type": "webhook.test", "timestamp": now.UTC(), "data": map[string]any{"webhook_id": wh.ID, "message": text}}
	}
	body, err := marshalJSON(msg)
	if err != nil {
		return err
	}
	res := s.sendWebhook(r.Context(), wh, "msg_test_"+msgID, body, now)
	out := webhookTestResult{Status: res.status, Body: string(res.body), Error: res.errText()}
	return writeJSON(w, http.StatusOK, out)
}

// handleDeliveryList handles GET /api/v1/webhooks/{id}/deliveries: the
// webhook's deliveries, newest first, paged with before.
func (s *server) handleDeliveryList(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	var problems []fieldError
	limit, problems := queryInt(problems, q, "limit", 100, 1, 1000)
	before, problems := queryInt(problems, q, "before", 0, 1, 1<<63-1)
	if err := invalid(problems...); err != nil {
		return err
	}
	p := newPage(int(limit), func(d deliveryView) any { return d })
	if err := s.store.Deliveries(r.Context(), id, before, int(limit), p.add); err != nil {
		return notFoundAs(err, errWebhookNotFound)
	}
	return p.write(w, r, func(last deliveryView) (string, string) { return "before", strconv.FormatInt(last.ID, 10) })
}

// handleDeliveryRetry handles POST
// /api/v1/webhooks/{id}/deliveries/{delivery}/retry: the delivery is due
// now, with a fresh series of attempts. It goes in its endpoint's order:
// next, unless an earlier event is still pending.
func (s *server) handleDeliveryRetry(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	deliveryID, perr := parseIntParam([]string{"path", "delivery"}, r.PathValue("delivery"), -1<<63, 1<<63-1)
	if perr != nil {
		return invalid(*perr)
	}
	d, err := s.store.RetryDelivery(r.Context(), id, deliveryID, s.adminAudit(r, "webhook.delivery_retried"), s.now())
	if err != nil {
		return notFoundAs(conflictAs(err, errDeliveryInFlight), errDeliveryNotFound)
	}
	return writeJSON(w, http.StatusOK, d)
}
