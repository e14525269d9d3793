package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"
)

// pagerDutyEvent is an event of PagerDuty's Events API v2, which many
// libraries and tools send: POST /v2/enqueue on a base URL they let one
// set. routing_key is the integration's key.
type pagerDutyEvent struct {
	RoutingKey  string `json:"routing_key"`
	EventAction string `json:"event_action"`
	DedupKey    string `json:"dedup_key"`
	Payload     *struct {
		Summary       string          `json:"summary"`
		Source        string          `json:"source"`
		Severity      string          `json:"severity"`
		Component     string          `json:"component"`
		Group         string          `json:"group"`
		Class         string          `json:"class"`
		CustomDetails json.RawMessage `json:"custom_details"`
	} `json:"payload"`
	Client    string `json:"client"`
	ClientURL string `json:"client_url"`
	Links     []struct {
		Href string `json:"href"`
		Text string `json:"text"`
	} `json:"links"`
	Images []struct {
		Src  string `json:"src"`
		Href string `json:"href"`
		Alt  string `json:"alt"`
	} `json:"images"`
}

// pagerDutyAnswer is the Events API's answer: "success" with the event's
// dedup key, or "invalid event" with what is wrong.
type pagerDutyAnswer struct {
	Status   string   `json:"status"`
	Message  string   `json:"message"`
	DedupKey string   `json:"dedup_key,omitempty"`
	Errors   []string `json:"errors,omitempty"`
}

// pagerDutySeverities maps the Events API's severities to ours.
var pagerDutySeverities = map[string]string{"critical": "critical", "error": "high", "warning": "medium", "info": "low"}

// maxPagerDutyBody is the Events API's own limit on an event.
const maxPagerDutyBody = 512 << 10

// handlePagerDutyEnqueue handles POST /v2/enqueue. Its answers are the
// Events API's, which clients check: 202 and "success" only when the
// event was taken, 400 with the problems when it is not valid.
func (s *server) handlePagerDutyEnqueue(w http.ResponseWriter, r *http.Request) error {
	body, err := readRawBody(w, r)
	if err != nil {
		return err
	}
	var ev pagerDutyEvent
	var problems []string
	if len(body) > maxPagerDutyBody {
		problems = []string{fmt.Sprintf("The event is %d bytes; the limit is %d", len(body), maxPagerDutyBody)}
	} else if fields := decodeForeign(body, &ev); len(fields) > 0 {
		for _, p := range fields {
			problems = append(problems, strings.Join(p.Loc[1:], ".")+": "+p.Msg)
		}
	} else {
		problems = ev.validate()
	}
	if len(problems) > 0 {
		return writeJSON(w, http.StatusBadRequest, pagerDutyAnswer{Status: "invalid event", Message: "Event object is invalid", Errors: problems})
	}
	ig, err := s.hookIntegration(r, ev.RoutingKey, "pagerduty")
	if err != nil {
		return err
	}
	hook := hookEvent{action: ev.EventAction, report: newIncident{DedupKey: ev.DedupKey}}
	if ev.EventAction == "trigger" {
		if hook.report.DedupKey == "" {
			if hook.report.DedupKey, err = randomKey(); err != nil {
				return err
			}
		}
		hook.report = ev.report(hook.report.DedupKey)
	}
	res, err := s.applyHook(r, ig, hook)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusAccepted, pagerDutyAnswer{Status: "success", Message: "Event processed", DedupKey: res.DedupKey})
}

// validate lists what makes ev invalid, as the Events API words it.
func (ev pagerDutyEvent) validate() []string {
	var problems []string
	if ev.RoutingKey == "" {
		problems = append(problems, "'routing_key' is missing or blank")
	}
	switch ev.EventAction {
	case "trigger":
		switch p := ev.Payload; {
		case p == nil:
			problems = append(problems, "'payload' is missing")
		default:
			if strings.TrimSpace(p.Summary) == "" || utf8.RuneCountInString(p.Summary) > 1024 {
				problems = append(problems, "'payload.summary' is missing, blank or longer than 1024 characters")
			}
			if strings.TrimSpace(p.Source) == "" {
				problems = append(problems, "'payload.source' is missing or blank")
			}
			if pagerDutySeverities[p.Severity] == "" {
				problems = append(problems, "'payload.severity' must be one of critical, error, warning or info")
			}
		}
	case "acknowledge", "resolve":
		if ev.DedupKey == "" {
			problems = append(problems, "'dedup_key' is required to "+ev.EventAction)
		}
	default:
		problems = append(problems, "'event_action' must be one of trigger, acknowledge or resolve")
	}
	if utf8.RuneCountInString(ev.DedupKey) > maxDedupKeyLen || strings.ContainsRune(ev.DedupKey, 0) {
		problems = append(problems, fmt.Sprintf("'dedup_key' is longer than %d characters", maxDedupKeyLen))
	}
	return problems
}

// report is the incident a trigger makes: the summary as title (whole in
// the description when it is longer), source, component, group and class
// as labels, custom details as details, links and images as links.
func (ev pagerDutyEvent) report(key string) newIncident {
	p := ev.Payload
	in := newIncident{DedupKey: key, Title: fitText(strings.TrimSpace(p.Summary), maxTitleLen), Severity: pagerDutySeverities[p.Severity]}
	if utf8.RuneCountInString(p.Summary) > maxTitleLen {
		in.Description = fitText(p.Summary, maxDescriptionLen)
	}
	in.Labels = map[string]string{}
	for name, v := range map[string]string{"source": p.Source, "component": p.Component, "group": p.Group, "class": p.Class} {
		if v != "" {
			in.Labels[name] = v
		}
	}
	for _, l := range ev.Links {
		in.Links = addLink(in.Links, l.Href, cmp.Or(l.Text, l.Href))
	}
	for _, img := range ev.Images {
		in.Links = addLink(in.Links, cmp.Or(img.Href, img.Src), cmp.Or(img.Alt, "Image"))
	}
	in.Links = addLink(in.Links, ev.ClientURL, cmp.Or(ev.Client, "Client"))
	if len(p.CustomDetails) > 0 && string(p.CustomDetails) != "null" {
		if p.CustomDetails[0] == '{' {
			in.Details = p.CustomDetails
		} else {
			in.Details = detailsJSON(map[string]any{"custom_details": p.CustomDetails})
		}
	}
	return in
}
