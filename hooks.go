package main

import (
	"cmp"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// hookEvent is what every sender's format comes down to: a report of one
// alert, or an acknowledgement or resolve of one dedup key.
type hookEvent struct {
	action string      // trigger, acknowledge or resolve
	report newIncident // DedupKey always; the rest for trigger
}

// hookResults is the answer of the Alertmanager and Grafana hooks.
type hookResults struct {
	Results []hookResult `json:"results"`
}

// hookResult is what a hook did with one event, as its answer says.
type hookResult struct {
	DedupKey   string `json:"dedup_key"`
	Outcome    string `json:"outcome"` // new, existing, reopened, repeated, acknowledged, resolved or ignored
	IncidentID *int64 `json:"incident_id"`
}

// applyHook carries out ev for integration ig. An acknowledgement or
// resolve of a key with no unresolved incident, or one its status does not
// allow (a resolve sent twice), is ignored: senders repeat them.
func (s *server) applyHook(r *http.Request, ig integration, ev hookEvent) (hookResult, error) {
	in := ev.report
	in.By, in.Source, in.Scope, in.Kind = actorRef{IntegrationID: &ig.ID}, ig.Name, ig.ID, ig.Type
	res := hookResult{DedupKey: in.DedupKey, Outcome: "ignored"}
	var (
		inc incident
		err error
	)
	switch ev.action {
	case "trigger":
		in.Labels = fitLabels(in.Labels, ig.Labels)
		in.Severity = cmp.Or(in.Severity, ig.DefaultSeverity)
		var outcome reportOutcome
		inc, outcome, err = s.store.ReportIncident(r.Context(), in, s.cfg.reopenWindow, s.now())
		res.Outcome = string(outcome)
	default:
		inc, err = s.store.TransitionByKey(r.Context(), ig.ID, in.DedupKey, actions[ev.action], in.By, s.now())
		res.Outcome = actions[ev.action].event
	}
	var refused *transitionError
	switch {
	case errors.Is(err, errNotFound), errors.As(err, &refused):
		s.metrics.hookEvent(ig.Type, "ignored")
		return hookResult{DedupKey: in.DedupKey, Outcome: "ignored"}, nil
	case err != nil:
		s.metrics.hookEvent(ig.Type, "error")
		return hookResult{}, err
	}
	s.metrics.hookEvent(ig.Type, res.Outcome)
	res.IncidentID = &inc.ID
	return res, nil
}

// errBadPayload is a hook body that is not in its sender's format: a 400,
// which senders take as final, not a 5xx they would retry for ever.
func errBadPayload(format string, problems []fieldError) error {
	return &httpError{status: http.StatusBadRequest, detail: "The body is not a valid " + format + " payload",
		extra: map[string]any{"errors": problems}}
}

// Limits of what an incident holds, as for a report through the API.
const (
	maxTitleLen       = 200
	maxDescriptionLen = 10000
	maxDedupKeyLen    = 255
	maxLinks          = 20
	maxLinkLen        = 2000
)

// fitText makes s storable as an incident's text: no NUL characters, at
// most max characters.
func fitText(s string, max int) string {
	s = strings.ReplaceAll(s, "\x00", "")
	if utf8.RuneCountInString(s) <= max {
		return s
	}
	return string([]rune(s)[:max-1]) + "…"
}

// fitLabels merges a sender's labels with the integration's into what a
// report may carry: keys of 1 to 100 characters without ':', values of at
// most 1,000, at most 64 pairs. The integration's come first, and win.
func fitLabels(sent, static map[string]string) map[string]string {
	out := map[string]string{}
	for _, labels := range []map[string]string{static, sent} {
		for _, k := range slices.Sorted(maps.Keys(labels)) {
			_, have := out[k]
			if have || len(out) == maxLabels {
				continue
			}
			if n := utf8.RuneCountInString(k); n == 0 || n > maxLabelKeyLen || strings.ContainsAny(k, ":\x00") {
				continue
			}
			out[k] = fitText(labels[k], maxLabelValueLen)
		}
	}
	return out
}

// addLink appends a link to href when href is an absolute http(s) URL.
func addLink(links []link, href, text string) []link {
	u, err := url.Parse(href)
	if len(links) >= maxLinks || len(href) > maxLinkLen || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		strings.ContainsFunc(href, unicode.IsControl) {
		return links
	}
	return append(links, link{Href: href, Text: fitText(text, 200)})
}

// fitKey makes a sender's key a dedup key: a longer one keeps its start
// and ends in a hash of the whole, so that keys differing only past the
// limit (Alertmanager's group keys end in what tells groups apart) stay
// apart.
func fitKey(key string) string {
	key = strings.ReplaceAll(key, "\x00", "")
	if utf8.RuneCountInString(key) <= maxDedupKeyLen {
		return key
	}
	sum := sha256.Sum256([]byte(key))
	return string([]rune(key)[:maxDedupKeyLen-33]) + "#" + hex.EncodeToString(sum[:16])
}

// detailsJSON encodes details as an incident's details object.
func detailsJSON(details map[string]any) json.RawMessage {
	if len(details) == 0 {
		return nil
	}
	b, err := marshalJSON(details)
	if err != nil {
		return nil
	}
	return b
}

// Alertmanager (and Grafana, which sends the same shape with more) -----

// alertPayload is Alertmanager's webhook body, version 4, with the fields
// Grafana adds. Fields not listed are ignored.
type alertPayload struct {
	GroupKey          string            `json:"groupKey"`
	TruncatedAlerts   int               `json:"truncatedAlerts"`
	Status            string            `json:"status"`
	GroupLabels       map[string]string `json:"groupLabels"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
	Alerts            []alert           `json:"alerts"`
	Title             string            `json:"title"`   // Grafana
	Message           string            `json:"message"` // Grafana
}

// alert is one alert of a payload.
type alert struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
	DashboardURL string            `json:"dashboardURL"` // Grafana
	PanelURL     string            `json:"panelURL"`     // Grafana
	SilenceURL   string            `json:"silenceURL"`   // Grafana
	Values       json.RawMessage   `json:"values"`       // Grafana
}

// alertSeverities maps the severity labels in use to ours.
var alertSeverities = map[string]string{
	"critical": "critical", "page": "critical", "p1": "critical",
	"error": "high", "high": "high", "major": "high", "p2": "high",
	"warning": "medium", "warn": "medium", "medium": "medium", "p3": "medium",
	"info": "low", "low": "low", "none": "low", "p4": "low", "p5": "low",
}

// annotationsUsed are the annotations an incident takes as fields; the
// others go to its details.
var annotationsUsed = []string{"summary", "title", "description", "message", "runbook_url"}

// handleHookAlertmanager handles POST /api/v1/hooks/alertmanager.
func (s *server) handleHookAlertmanager(w http.ResponseWriter, r *http.Request) error {
	return s.alertHook(w, r, "alertmanager")
}

// handleHookGrafana handles POST /api/v1/hooks/grafana.
func (s *server) handleHookGrafana(w http.ResponseWriter, r *http.Request) error {
	return s.alertHook(w, r, "grafana")
}

// alertHook takes an Alertmanager-shaped payload: one event per alert, by
// its own status (a group's status says nothing of each alert), or one per
// group when the integration groups. An alert missing from the payload
// (truncatedAlerts) is never taken as resolved.
func (s *server) alertHook(w http.ResponseWriter, r *http.Request, hookType string) error {
	ig, err := s.hookIntegration(r, integrationKey(r), hookType)
	if err != nil {
		return err
	}
	body, err := readRawBody(w, r)
	if err != nil {
		return err
	}
	if hookType == "grafana" && ig.HMACSecret != "" && !grafanaSigned(r, body, ig) {
		return errBadSignature
	}
	var p alertPayload
	if problems := decodeForeign(body, &p); len(problems) > 0 {
		return errBadPayload(hookType, problems)
	}
	events, problems := p.events(ig)
	if len(problems) > 0 {
		return errBadPayload(hookType, problems)
	}
	answer := hookResults{Results: []hookResult{}}
	for _, ev := range events {
		res, err := s.applyHook(r, ig, ev)
		if err != nil {
			return err
		}
		answer.Results = append(answer.Results, res)
	}
	return writeJSON(w, http.StatusOK, answer)
}

// events turns the payload into hook events for ig.
func (p alertPayload) events(ig integration) ([]hookEvent, []fieldError) {
	var problems []fieldError
	for i, a := range p.Alerts {
		if a.Status != "firing" && a.Status != "resolved" {
			problems = append(problems, fieldError{Type: "enum", Loc: []string{"body", "alerts", fmt.Sprint(i), "status"}, Msg: "Input should be 'firing' or 'resolved'"})
		}
	}
	if ig.GroupBy == "group" && p.GroupKey == "" {
		problems = append(problems, fieldError{Type: "missing", Loc: []string{"body", "groupKey"}, Msg: "Field required: the integration makes one incident per group"})
	}
	if len(problems) > 0 {
		return nil, problems
	}
	if ig.GroupBy == "group" {
		return []hookEvent{p.groupEvent()}, nil
	}
	events := make([]hookEvent, 0, len(p.Alerts))
	for _, a := range p.Alerts {
		ev := hookEvent{action: "trigger", report: a.report(p)}
		if a.Status == "resolved" {
			ev.action = "resolve"
		}
		events = append(events, ev)
	}
	return events, nil
}

// report is the incident an alert makes.
func (a alert) report(p alertPayload) newIncident {
	in := newIncident{
		DedupKey:    a.key(),
		Title:       alertTitle(a.Annotations, a.Labels),
		Description: fitText(cmp.Or(a.Annotations["description"], a.Annotations["message"]), maxDescriptionLen),
		Severity:    alertSeverities[strings.ToLower(a.Labels["severity"])],
		Labels:      a.Labels,
	}
	if !a.StartsAt.IsZero() {
		started := a.StartsAt.UTC()
		in.StartedAt = &started
	}
	in.Links = addLink(in.Links, a.GeneratorURL, "Source")
	in.Links = addLink(in.Links, a.DashboardURL, "Dashboard")
	in.Links = addLink(in.Links, a.PanelURL, "Panel")
	in.Links = addLink(in.Links, a.SilenceURL, "Silence")
	in.Links = addLink(in.Links, a.Annotations["runbook_url"], "Runbook")
	in.Links = addLink(in.Links, p.ExternalURL, "Alertmanager")
	details := map[string]any{}
	for k, v := range a.Annotations {
		if !slices.Contains(annotationsUsed, k) {
			details[k] = v
		}
	}
	if len(a.Values) > 0 && string(a.Values) != "null" {
		details["values"] = a.Values
	}
	in.Details = detailsJSON(details)
	return in
}

// key is an alert's dedup key: its fingerprint, or where a sender leaves
// it out, a hash of its labels, which identify an alert in Alertmanager.
func (a alert) key() string {
	if a.Fingerprint != "" {
		return fitKey(a.Fingerprint)
	}
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(a.Labels)) {
		fmt.Fprintf(h, "%s=%q\n", k, a.Labels[k])
	}
	return "labels:" + hex.EncodeToString(h.Sum(nil))[:32]
}

// alertTitle is the summary, else the title annotation, else the alert's
// name and instance.
func alertTitle(annotations, labels map[string]string) string {
	title := cmp.Or(annotations["summary"], annotations["title"])
	if strings.TrimSpace(title) == "" {
		title = cmp.Or(labels["alertname"], "Alert")
		if instance := labels["instance"]; instance != "" {
			title += " on " + instance
		}
	}
	return fitText(strings.TrimSpace(title), maxTitleLen)
}

// groupEvent is the one event of a payload whose integration groups: the
// group resolves when its status is resolved. Its start is the newest of
// its firing alerts' starts, so an alert joining the group counts as an
// occurrence and a re-send does not.
func (p alertPayload) groupEvent() hookEvent {
	labels := maps.Clone(p.CommonLabels)
	if labels == nil {
		labels = p.GroupLabels
	}
	in := newIncident{
		DedupKey:    fitKey(p.GroupKey),
		Title:       alertTitle(p.CommonAnnotations, labels),
		Description: fitText(cmp.Or(p.CommonAnnotations["description"], p.Message), maxDescriptionLen),
		Severity:    alertSeverities[strings.ToLower(labels["severity"])],
		Labels:      labels,
	}
	if p.Title != "" && p.CommonAnnotations["summary"] == "" {
		in.Title = fitText(p.Title, maxTitleLen)
	}
	firing := 0
	for _, a := range p.Alerts {
		if a.Status == "firing" {
			firing++
			if in.StartedAt == nil || a.StartsAt.After(*in.StartedAt) {
				started := a.StartsAt.UTC()
				in.StartedAt = &started
			}
		}
	}
	in.Links = addLink(in.Links, p.ExternalURL, "Alertmanager")
	in.Details = detailsJSON(map[string]any{"firing_alerts": firing, "group_labels": p.GroupLabels})
	action := "trigger"
	if p.Status == "resolved" {
		action = "resolve"
	}
	return hookEvent{action: action, report: in}
}

// grafanaSigned checks Grafana's signature of body: the lowercase hex
// HMAC-SHA256 of the body, or of "<timestamp>:" and the body when the
// integration names a timestamp header. Grafana's documentation and its
// code name the signature header differently; either is read.
func grafanaSigned(r *http.Request, body []byte, ig integration) bool {
	sig := cmp.Or(r.Header.Get("X-Grafana-Alerting-Signature"), r.Header.Get("X-Grafana-Alert-Signature"))
	got, err := hex.DecodeString(sig)
	if err != nil || len(got) != sha256.Size {
		return false
	}
	mac := hmac.New(sha256.New, []byte(ig.HMACSecret))
	if ig.TimestampHeader != "" {
		ts := r.Header.Get(ig.TimestampHeader)
		if ts == "" {
			return false
		}
		mac.Write([]byte(ts + ":"))
	}
	mac.Write(body)
	return hmac.Equal(got, mac.Sum(nil))
}

// Generic ----------------------------------------------------------------

// genericEvent is the body of POST /api/v1/hooks/generic, for scripts and
// tools with a templated webhook.
type genericEvent struct {
	Title       string            `json:"title"`
	Description string            `json:"description"`
	Severity    string            `json:"severity"`
	DedupKey    string            `json:"dedup_key"`
	Action      string            `json:"action"`
	Labels      map[string]string `json:"labels"`
	Links       []link            `json:"links"`
	Details     map[string]any    `json:"details"`
}

// handleHookGeneric handles POST /api/v1/hooks/generic.
func (s *server) handleHookGeneric(w http.ResponseWriter, r *http.Request) error {
	ig, err := s.hookIntegration(r, integrationKey(r), "generic")
	if err != nil {
		return err
	}
	body, err := readRawBody(w, r)
	if err != nil {
		return err
	}
	var in genericEvent
	problems := decodeForeign(body, &in)
	if len(problems) == 0 {
		problems = in.validate()
	}
	if len(problems) > 0 {
		return errBadPayload("generic", problems)
	}
	ev := hookEvent{action: cmp.Or(in.Action, "trigger"), report: newIncident{
		Title:       fitText(strings.TrimSpace(in.Title), maxTitleLen),
		Description: fitText(in.Description, maxDescriptionLen),
		Severity:    in.Severity,
		DedupKey:    in.DedupKey,
		Labels:      in.Labels,
		Details:     detailsJSON(in.Details),
	}}
	for _, l := range in.Links {
		ev.report.Links = addLink(ev.report.Links, l.Href, l.Text)
	}
	res, err := s.applyHook(r, ig, ev)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, res)
}

func (in genericEvent) validate() []fieldError {
	loc := func(name string) []string { return []string{"body", name} }
	var problems []fieldError
	action := cmp.Or(in.Action, "trigger")
	switch {
	case action != "trigger" && action != "acknowledge" && action != "resolve":
		problems = append(problems, fieldError{Type: "enum", Loc: loc("action"), Msg: "Input should be 'trigger', 'acknowledge' or 'resolve'"})
	case action == "trigger" && strings.TrimSpace(in.Title) == "":
		problems = append(problems, fieldError{Type: "missing", Loc: loc("title"), Msg: "Field required"})
	case action != "trigger" && in.DedupKey == "":
		problems = append(problems, fieldError{Type: "missing", Loc: loc("dedup_key"), Msg: "Field required: " + action + " names the incident by its dedup_key"})
	}
	if in.Severity != "" && !slices.Contains(severities, in.Severity) {
		problems = append(problems, fieldError{Type: "enum", Loc: loc("severity"), Msg: "Input should be " + quoteList(severities)})
	}
	if utf8.RuneCountInString(in.DedupKey) > maxDedupKeyLen || strings.ContainsRune(in.DedupKey, 0) {
		problems = append(problems, fieldError{Type: "string_too_long", Loc: loc("dedup_key"), Msg: fmt.Sprintf("String should have at most %d characters", maxDedupKeyLen)})
	}
	return problems
}
