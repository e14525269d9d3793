package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Limits of an escalation policy.
const (
	maxEscalationSteps    = 10
	maxStepWebhooks       = 10
	maxEscalationDelay    = 7 * 24 * time.Hour
	minRepeatEvery        = time.Minute
	maxEscalationRepeats  = 100
	escalationDelayFormat = "Value error, a duration in whole seconds like 90s, 10m or 1h30m"
)

// escalationPolicy notifies its steps' webhooks while an incident it
// matches stays open, that is unacknowledged: each step once its delay has
// passed since the incident opened, then the last step again every
// Repeat.Every, Repeat.Times more times.
type escalationPolicy struct {
	ID        int64             `json:"id"`
	Name      string            `json:"name"`
	Match     escalationMatch   `json:"match"`
	Steps     []escalationStep  `json:"steps"`
	Repeat    *escalationRepeat `json:"repeat"` // null: the last step is sent once
	CreatedAt time.Time         `json:"created_at"`
	UpdatedAt time.Time         `json:"updated_at"`
}

// escalationMatch selects the incidents a policy escalates: at least this
// severity, and every one of these labels.
type escalationMatch struct {
	MinSeverity string            `json:"min_severity"`
	Labels      map[string]string `json:"labels"`
}

// escalationStep is whom a policy notifies, and when: After (a duration
// such as "10m") since the incident opened.
type escalationStep struct {
	After    string  `json:"after"`
	Webhooks []int64 `json:"webhooks"`

	after time.Duration
}

// escalationRepeat repeats a policy's last step.
type escalationRepeat struct {
	Every string `json:"every"`
	Times int    `json:"times"`

	every time.Duration
}

// escalationNotice is what an escalated event records: the policy and
// step it notified (Repeat 0 for the step's first notice, then 1, 2…) and
// the step's webhooks.
type escalationNotice struct {
	PolicyID int64   `json:"policy_id"`
	Policy   string  `json:"policy"`
	Step     int     `json:"step"`
	Repeat   int     `json:"repeat"`
	Webhooks []int64 `json:"webhooks"`
}

// formatDelay writes d as the API shows delays: "0s", "45s", "10m",
// "1h30m", "2h5s".
func formatDelay(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	var b strings.Builder
	for _, unit := range []struct {
		size time.Duration
		name string
	}{{time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}} {
		if n := d / unit.size; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, unit.name)
			d -= n * unit.size
		}
	}
	return b.String()
}

// delayField reads a duration field: a Go duration string of whole
// seconds within [min, max].
func delayField(problems []fieldError, loc []string, raw json.RawMessage, min, max time.Duration) (time.Duration, []fieldError) {
	var s jsonString
	if raw != nil {
		s.UnmarshalJSON(raw)
	}
	if p := (stringRule{required: true, max: 50}).check(nil, loc, s); len(p) > 0 {
		return 0, append(problems, p...)
	}
	d, err := time.ParseDuration(s.Value)
	switch {
	case err != nil || d%time.Second != 0:
		return 0, append(problems, fieldError{Type: "value_error", Loc: loc, Msg: escalationDelayFormat})
	case d < min || d > max:
		return 0, append(problems, fieldError{Type: "value_error", Loc: loc,
			Msg: fmt.Sprintf("Value error, between %s and %s", formatDelay(min), formatDelay(max))})
	}
	return d, problems
}

// objectField decodes an optional JSON object field into dst; absent or
// null leave dst alone and return false.
func objectField(problems []fieldError, loc []string, v jsonValue, dst any) (bool, []fieldError) {
	if !v.Present || string(v.Raw) == "null" {
		return false, problems
	}
	if v.Raw[0] != '{' || unmarshalExact(v.Raw, dst) != nil {
		return false, append(problems, fieldError{Type: "dict_type", Loc: loc, Msg: "Input should be a valid dictionary"})
	}
	return true, problems
}

// escalationPolicyRequest is the body of POST and PATCH
// /api/v1/escalation-policies.
type escalationPolicyRequest struct {
	Name   jsonString `json:"name"`
	Match  jsonValue  `json:"match"`
	Steps  jsonValue  `json:"steps"`
	Repeat jsonValue  `json:"repeat"`
}

// apply validates in and applies what it sets to p: the name and steps are
// required to create one.
func (in escalationPolicyRequest) apply(p *escalationPolicy, create bool) []fieldError {
	loc := func(path ...string) []string { return append([]string{"body"}, path...) }
	problems := stringRule{required: create, min: 1, max: 100, notBlank: true}.check(nil, loc("name"), in.Name)

	var match struct {
		MinSeverity jsonString `json:"min_severity"`
		Labels      jsonLabels `json:"labels"`
	}
	hasMatch, problems := objectField(problems, loc("match"), in.Match, &match)
	if hasMatch {
		problems = stringRule{oneOf: severities}.check(problems, loc("match", "min_severity"), match.MinSeverity)
		problems = match.Labels.check(problems, loc("match", "labels"))
	}

	steps, problems := in.steps(problems, create)

	var repeat *escalationRepeat
	var rawRepeat struct {
		Every json.RawMessage `json:"every"`
		Times jsonValue       `json:"times"`
	}
	hasRepeat, problems := objectField(problems, loc("repeat"), in.Repeat, &rawRepeat)
	if hasRepeat {
		every, p := delayField(nil, loc("repeat", "every"), rawRepeat.Every, minRepeatEvery, maxEscalationDelay)
		times, p := intField(p, loc("repeat", "times"), rawRepeat.Times, true, 1, maxEscalationRepeats)
		if problems = append(problems, p...); len(p) == 0 {
			repeat = &escalationRepeat{Every: formatDelay(every), Times: int(*times), every: every}
		}
	}
	if len(problems) > 0 {
		return problems
	}

	if in.Name.Present && !in.Name.Null {
		p.Name = in.Name.Value
	}
	if hasMatch && match.MinSeverity.Present && !match.MinSeverity.Null {
		p.Match.MinSeverity = match.MinSeverity.Value
	}
	if hasMatch && match.Labels.Present {
		p.Match.Labels = match.Labels.values()
	}
	if steps != nil {
		p.Steps = steps
	}
	if in.Repeat.Present {
		p.Repeat = repeat // null removes it
	}
	return nil
}

// steps validates the steps field: 1 to 10 steps, each with a delay no
// shorter than the step before and 1 to 10 webhook ids. nil when absent.
func (in escalationPolicyRequest) steps(problems []fieldError, required bool) ([]escalationStep, []fieldError) {
	loc := []string{"body", "steps"}
	if !in.Steps.Present || string(in.Steps.Raw) == "null" {
		if required {
			problems = append(problems, fieldError{Type: "missing", Loc: loc, Msg: "Field required"})
		}
		return nil, problems
	}
	var items []jsonValue
	if in.Steps.Raw[0] != '[' || json.Unmarshal(in.Steps.Raw, &items) != nil {
		return nil, append(problems, fieldError{Type: "list_type", Loc: loc, Msg: "Input should be a valid list"})
	}
	if p := listLength(loc, len(items), maxEscalationSteps); p != nil {
		return nil, append(problems, *p)
	}
	steps := make([]escalationStep, 0, len(items))
	var previous time.Duration
	for i, item := range items {
		at := append(slices.Clone(loc), strconv.Itoa(i))
		var raw struct {
			After    json.RawMessage `json:"after"`
			Webhooks jsonValue       `json:"webhooks"`
		}
		ok, p := objectField(nil, at, item, &raw)
		if !ok && len(p) == 0 {
			p = append(p, fieldError{Type: "dict_type", Loc: at, Msg: "Input should be a valid dictionary"})
		}
		if len(p) > 0 {
			problems = append(problems, p...)
			continue
		}
		after, p := delayField(nil, append(slices.Clone(at), "after"), raw.After, 0, maxEscalationDelay)
		if len(p) == 0 && after < previous {
			p = append(p, fieldError{Type: "value_error", Loc: append(slices.Clone(at), "after"),
				Msg: "Value error, a step comes no sooner than the step before it"})
		}
		previous = max(previous, after)
		ids, p := webhookIDs(p, append(slices.Clone(at), "webhooks"), raw.Webhooks)
		problems = append(problems, p...)
		steps = append(steps, escalationStep{After: formatDelay(after), Webhooks: ids, after: after})
	}
	return steps, problems
}

// listLength is the problem with a list of n items that must have 1 to
// max, if there is one.
func listLength(loc []string, n, max int) *fieldError {
	switch {
	case n == 0:
		return &fieldError{Type: "too_short", Loc: loc, Msg: "List should have at least 1 item"}
	case n > max:
		return &fieldError{Type: "too_long", Loc: loc, Msg: fmt.Sprintf("List should have at most %d items", max)}
	}
	return nil
}

// webhookIDs validates a step's webhooks: a list of 1 to 10 ids; repeats
// are dropped.
func webhookIDs(problems []fieldError, loc []string, v jsonValue) ([]int64, []fieldError) {
	var ids []int64
	switch {
	case !v.Present || string(v.Raw) == "null":
		return nil, append(problems, fieldError{Type: "missing", Loc: loc, Msg: "Field required"})
	case v.Raw[0] != '[' || json.Unmarshal(v.Raw, &ids) != nil:
		return nil, append(problems, fieldError{Type: "list_type", Loc: loc, Msg: "Input should be a valid list of webhook ids"})
	}
	if p := listLength(loc, len(ids), maxStepWebhooks); p != nil {
		return nil, append(problems, *p)
	}
	seen := map[int64]bool{}
	unique := ids[:0]
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			unique = append(unique, id)
		}
	}
	return unique, problems
}

// unknownWebhooksError names the webhook ids a policy's steps give that no
// webhook has.
type unknownWebhooksError struct{ ids []int64 }

func (e *unknownWebhooksError) Error() string { return fmt.Sprintf("unknown webhooks %v", e.ids) }

// asInvalid turns an unknownWebhooksError into the 422 that names each
// unknown id where the steps give it.
func (p escalationPolicy) asInvalid(err error) error {
	var unknown *unknownWebhooksError
	if !errors.As(err, &unknown) {
		return err
	}
	var problems []fieldError
	for i, step := range p.Steps {
		for j, id := range step.Webhooks {
			if slices.Contains(unknown.ids, id) {
				problems = append(problems, fieldError{Type: "value_error", Loc: []string{"body", "steps", strconv.Itoa(i), "webhooks", strconv.Itoa(j)},
					Msg: fmt.Sprintf("Value error, no webhook has id %d", id)})
			}
		}
	}
	return invalid(problems...)
}

// handleEscalationPolicyCreate handles POST /api/v1/escalation-policies.
func (s *server) handleEscalationPolicyCreate(w http.ResponseWriter, r *http.Request) error {
	var in escalationPolicyRequest
	if err := readJSON(w, r, &in); err != nil {
		return err
	}
	p := escalationPolicy{Match: escalationMatch{MinSeverity: "low", Labels: map[string]string{}}}
	if err := invalid(in.apply(&p, true)...); err != nil {
		return err
	}
	created, err := s.store.CreateEscalationPolicy(r.Context(), p, s.adminAudit(r, "escalation_policy.created"), s.now())
	if err != nil {
		return p.asInvalid(conflictAs(err, errEscalationPolicyNameTaken))
	}
	return writeJSON(w, http.StatusCreated, created)
}

// handleEscalationPolicyUpdate handles PATCH
// /api/v1/escalation-policies/{id}. It applies to the incidents already
// escalating: a step already sent is not sent again.
func (s *server) handleEscalationPolicyUpdate(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	var in escalationPolicyRequest
	if err := readJSON(w, r, &in); err != nil {
		return err
	}
	var p escalationPolicy
	updated, err := s.store.UpdateEscalationPolicy(r.Context(), id, func(cur *escalationPolicy) error {
		err := invalid(in.apply(cur, false)...)
		p = *cur
		return err
	}, s.adminAudit(r, "escalation_policy.updated"), s.now())
	if err != nil {
		return p.asInvalid(notFoundAs(conflictAs(err, errEscalationPolicyNameTaken), errEscalationPolicyNotFound))
	}
	return writeJSON(w, http.StatusOK, updated)
}
