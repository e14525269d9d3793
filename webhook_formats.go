package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// slackColors are the attachment colours of severities, and of a
// resolved incident.
var slackColors = map[string]string{"critical": "#d00000", "high": "#ff7a00", "medium": "#f2c744", "low": "#439fe0", "resolved": "#2eb886"}

// ntfyPriorities are ntfy's priorities of severities (5 is max, 1 min).
var ntfyPriorities = map[string]int{"critical": 5, "high": 4, "medium": 3, "low": 2}

// summaryFields are the incident fields the chat and push formats show.
type summaryFields struct {
	ID          int64  `json:"id"`
	Title       string `json:"title"`
	Description string `json:"description"`
	Severity    string `json:"severity"`
	Status      string `json:"status"`
	// What an escalated or heartbeat event is about.
	Escalation *escalationNotice `json:"escalation"`
	Heartbeat  *struct {
		Name string `json:"name"`
	} `json:"heartbeat"`
}

// headline is the one-line summary of an event, as chat and push show it.
func headline(eventType string, inc summaryFields, actor *actorView) string {
	sev := strings.ToUpper(inc.Severity)
	verb := strings.ReplaceAll(strings.TrimPrefix(eventType, "incident."), "_", " ")
	switch {
	case eventType == "incident.triggered":
		verb = "opened"
	case eventType == "incident.escalated" && inc.Escalation != nil:
		n := inc.Escalation
		verb = fmt.Sprintf("escalated (%s, step %d)", n.Policy, n.Step)
		if n.Repeat > 0 {
			verb = fmt.Sprintf("escalated again (%s, step %d, repeat %d)", n.Policy, n.Step, n.Repeat)
		}
	case strings.HasPrefix(eventType, "heartbeat.") && inc.Heartbeat != nil:
		state := map[string]string{"heartbeat.down": "is down", "heartbeat.up": "is up again"}[eventType]
		return fmt.Sprintf("[%s] Heartbeat %q %s (incident #%d)", sev, inc.Heartbeat.Name, state, inc.ID)
	}
	by := ""
	switch {
	case actor == nil:
	case actor.User != "":
		by = " by " + actor.User
	case actor.Integration != "":
		by = " by " + actor.Integration
	}
	return fmt.Sprintf("[%s] Incident #%d %s%s: %s", sev, inc.ID, verb, by, inc.Title)
}

// slackBody is an event as a Slack incoming webhook takes it (Mattermost,
// Rocket.Chat and Discord's /slack endpoint take it too): text, and a
// legacy attachment with the severity's colour, fields and a link back.
func slackBody(eventType string, data []byte, actor *actorView, link string, at time.Time) ([]byte, error) {
	var inc summaryFields
	if err := json.Unmarshal(data, &inc); err != nil {
		return nil, err
	}
	color := slackColors[inc.Severity]
	if inc.Status == "resolved" {
		color = slackColors["resolved"]
	}
	attachment := map[string]any{
		"fallback": headline(eventType, inc, actor),
		"color":    color,
		"title":    fmt.Sprintf("#%d %s", inc.ID, inc.Title),
		"text":     inc.Description,
		"fields": []map[string]any{
			{"title": "Status", "value": inc.Status, "short": true},
			{"title": "Severity", "value": inc.Severity, "short": true},
		},
		"ts": at.Unix(),
	}
	if link != "" {
		attachment["title_link"] = link
	}
	return marshalJSON(map[string]any{"text": headline(eventType, inc, actor), "attachments": []any{attachment}})
}

// ntfyBody is an event as ntfy's JSON publishing takes it: the topic (from
// the webhook's URL), a title, the description, a priority from the
// severity and, with PUBLIC_URL, a click action to the incident.
func ntfyBody(topic, eventType string, data []byte, actor *actorView, link string) ([]byte, error) {
	var inc summaryFields
	if err := json.Unmarshal(data, &inc); err != nil {
		return nil, err
	}
	msg := map[string]any{
		"topic":    topic,
		"title":    headline(eventType, inc, actor),
		"message":  inc.Description,
		"priority": ntfyPriorities[inc.Severity],
		"tags":     []string{inc.Severity, inc.Status},
	}
	if inc.Description == "" {
		msg["message"] = inc.Title
	}
	if link != "" {
		msg["click"] = link
	}
	return marshalJSON(msg)
}

// ntfyTopic splits an ntfy topic URL (https://ntfy.sh/mytopic) into the
// server's URL, where JSON is published, and the topic; topic is empty
// when the URL has none.
func ntfyTopic(raw string) (server, topic string) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", ""
	}
	path := strings.TrimSuffix(u.Path, "/")
	i := strings.LastIndex(path, "/")
	if i < 0 || path[i+1:] == "" {
		return "", ""
	}
	topic = path[i+1:]
	u.Path, u.RawPath = path[:i+1], ""
	return u.String(), topic
}
