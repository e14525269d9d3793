package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

var (
	integrationTypes = []string{"alertmanager", "grafana", "pagerduty", "generic"}
	groupModes       = []string{"alert", "group"}
)

// integrationRequest is the body of POST and PATCH /api/v1/integrations.
type integrationRequest struct {
	Name            jsonString `json:"name"`
	Type            jsonString `json:"type"`
	DefaultSeverity jsonString `json:"default_severity"`
	Labels          jsonLabels `json:"labels"`
	GroupBy         jsonString `json:"group_by"`
	HMACSecret      jsonString `json:"hmac_secret"`
	TimestampHeader jsonString `json:"timestamp_header"`
	Enabled         jsonValue  `json:"enabled"`
}

// apply validates in and applies what it sets to ig: every field for a
// create, those present for an update (where type cannot change).
func (in integrationRequest) apply(ig *integration, create bool) []fieldError {
	loc := func(name string) []string { return []string{"body", name} }
	var problems []fieldError
	problems = stringRule{required: create, min: 1, max: 100, notBlank: true}.check(problems, loc("name"), in.Name)
	if create {
		problems = stringRule{required: true, oneOf: integrationTypes}.check(problems, loc("type"), in.Type)
	} else if in.Type.Present {
		problems = append(problems, fieldError{Type: "value_error", Loc: loc("type"), Msg: "Value error, an integration's type cannot change; create another"})
	}
	problems = stringRule{oneOf: severities}.check(problems, loc("default_severity"), in.DefaultSeverity)
	problems = in.Labels.check(problems, loc("labels"))
	problems = stringRule{oneOf: groupModes}.check(problems, loc("group_by"), in.GroupBy)
	problems = stringRule{max: 200}.check(problems, loc("hmac_secret"), in.HMACSecret)
	problems = stringRule{max: 100}.check(problems, loc("timestamp_header"), in.TimestampHeader)
	enabled, problems := boolField(problems, loc("enabled"), in.Enabled)
	if len(problems) > 0 {
		return problems
	}
	set := func(dst *string, v jsonString) {
		if v.Present && !v.Null {
			*dst = v.Value
		}
	}
	set(&ig.Name, in.Name)
	set(&ig.Type, in.Type)
	set(&ig.DefaultSeverity, in.DefaultSeverity)
	set(&ig.GroupBy, in.GroupBy)
	if in.HMACSecret.Present { // null or "" removes it
		ig.HMACSecret = in.HMACSecret.Value
	}
	if in.TimestampHeader.Present {
		ig.TimestampHeader = in.TimestampHeader.Value
	}
	if in.Labels.Present {
		ig.Labels = in.Labels.values()
	}
	if enabled != nil {
		ig.Enabled = *enabled
	}
	return nil
}

// randomKey makes an integration's key, or the dedup key of a PagerDuty
// trigger that came without one: 32 lowercase hex digits, the shape of
// PagerDuty's keys, which some clients check.
func randomKey() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// integrationWithKey is an integration as its creation or rotation returns
// it: with its key, shown this once.
type integrationWithKey struct {
	integration
	Key string `json:"key"`
}

// handleIntegrationCreate handles POST /api/v1/integrations.
func (s *server) handleIntegrationCreate(w http.ResponseWriter, r *http.Request) error {
	var in integrationRequest
	if err := readJSON(w, r, &in); err != nil {
		return err
	}
	ig := integration{DefaultSeverity: "medium", GroupBy: "alert", Labels: map[string]string{}, Enabled: true}
	if err := invalid(in.apply(&ig, true)...); err != nil {
		return err
	}
	key, err := randomKey()
	if err != nil {
		return err
	}
	created, err := s.store.CreateIntegration(r.Context(), ig, secretHash(key), s.adminAudit(r, "integration.created"), s.now())
	if err != nil {
		return conflictAs(err, errIntegrationNameTaken)
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusCreated, integrationWithKey{created, key})
}

// handleIntegrationUpdate handles PATCH /api/v1/integrations/{id}.
func (s *server) handleIntegrationUpdate(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	var in integrationRequest
	if err := readJSON(w, r, &in); err != nil {
		return err
	}
	updated, err := s.store.UpdateIntegration(r.Context(), id, func(ig *integration) error { return invalid(in.apply(ig, false)...) },
		s.adminAudit(r, "integration.updated"), s.now())
	if err != nil {
		return notFoundAs(conflictAs(err, errIntegrationNameTaken), errIntegrationNotFound)
	}
	return writeJSON(w, http.StatusOK, updated)
}

// handleIntegrationRotate handles POST /api/v1/integrations/{id}/rotate:
// a new key, returned this once; the old one stops working at once.
func (s *server) handleIntegrationRotate(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	key, err := randomKey()
	if err != nil {
		return err
	}
	updated, err := s.store.RotateIntegrationKey(r.Context(), id, secretHash(key), s.adminAudit(r, "integration.key_rotated"), s.now())
	if err != nil {
		return notFoundAs(err, errIntegrationNotFound)
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusOK, integrationWithKey{updated, key})
}

// adminAudit is the audit entry of an admin's action.
func (s *server) adminAudit(r *http.Request, action string) auditEntry {
	return auditEntry{ActorID: &principalOf(r).user.ID, Action: action, IP: s.clientIP(r)}
}

// integrationKey is the key a sender put in the request: a bearer token,
// the password of HTTP Basic (any user name), or ?token= for senders that
// can set no header.
func integrationKey(r *http.Request) string {
	if _, password, ok := r.BasicAuth(); ok {
		return password
	}
	if token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(token)
	}
	return r.URL.Query().Get("token")
}

// hookIntegration finds the enabled integration of type hookType whose key
// is key, and spends a report from its rate limit. A disabled integration,
// or one of another type, is refused like a wrong key: its sender should
// stop, not retry.
func (s *server) hookIntegration(r *http.Request, key, hookType string) (integration, error) {
	if key == "" {
		return integration{}, errNotAuthenticated
	}
	ig, err := s.store.IntegrationByKey(r.Context(), secretHash(key))
	switch {
	case errors.Is(err, errNotFound):
		return integration{}, errBadIntegrationKey
	case err != nil:
		return integration{}, err
	case !ig.Enabled:
		return integration{}, errIntegrationDisabled
	case ig.Type != hookType:
		return integration{}, unauthorized(fmt.Sprintf("This key belongs to a %s integration; send to its hook", ig.Type))
	}
	if wait := s.limits.ingestKey.take("integration:"+strconv.FormatInt(ig.ID, 10), s.now()); wait > 0 {
		return integration{}, tooMany(wait, tooManyReports)
	}
	return ig, nil
}
