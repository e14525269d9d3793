package main

import (
	"encoding/hex"
	"io"
	"net/http"
)

// Limits of a heartbeat's period, in seconds: 30 s to 365 days.
const (
	minHeartbeatInterval = 30
	maxHeartbeatInterval = 365 * 24 * 3600
)

// heartbeatRequest is the body of POST and PATCH /api/v1/heartbeats.
type heartbeatRequest struct {
	Name     jsonString `json:"name"`
	Interval jsonValue  `json:"interval"`
	Grace    jsonValue  `json:"grace"`
	Severity jsonString `json:"severity"`
	Labels   jsonLabels `json:"labels"`
	Paused   jsonValue  `json:"paused"`
}

// apply validates in and applies what it sets to hb: the name and interval
// are required to create one.
func (in heartbeatRequest) apply(hb *heartbeat, create bool) (paused *bool, problems []fieldError) {
	loc := func(name string) []string { return []string{"body", name} }
	problems = stringRule{required: create, min: 1, max: 100, notBlank: true}.check(problems, loc("name"), in.Name)
	interval, problems := intField(problems, loc("interval"), in.Interval, create, minHeartbeatInterval, maxHeartbeatInterval)
	grace, problems := intField(problems, loc("grace"), in.Grace, false, 0, maxHeartbeatInterval)
	problems = stringRule{oneOf: severities}.check(problems, loc("severity"), in.Severity)
	problems = in.Labels.check(problems, loc("labels"))
	paused, problems = boolField(problems, loc("paused"), in.Paused)
	if len(problems) > 0 {
		return nil, problems
	}
	if in.Name.Present && !in.Name.Null {
		hb.Name = in.Name.Value
	}
	if in.Severity.Present && !in.Severity.Null {
		hb.Severity = in.Severity.Value
	}
	if interval != nil {
		hb.Interval = *interval
	}
	if grace != nil {
		hb.Grace = *grace
	}
	if in.Labels.Present {
		hb.Labels = in.Labels.values()
	}
	return paused, nil
}

// pingAnswer is the answer to a ping: the heartbeat's state after it.
type pingAnswer struct {
	State string `json:"state"`
}

// heartbeatWithURL is a heartbeat as its creation returns it: with its ping
// URL, whose token is shown this once.
type heartbeatWithURL struct {
	heartbeat
	PingURL string `json:"ping_url"`
}

// handleHeartbeatCreate handles POST /api/v1/heartbeats.
func (s *server) handleHeartbeatCreate(w http.ResponseWriter, r *http.Request) error {
	var in heartbeatRequest
	if err := readJSON(w, r, &in); err != nil {
		return err
	}
	hb := heartbeat{Grace: 60, Severity: "high", Labels: map[string]string{}}
	if _, problems := in.apply(&hb, true); len(problems) > 0 {
		return invalid(problems...)
	}
	token, err := newSecret("")
	if err != nil {
		return err
	}
	created, err := s.store.CreateHeartbeat(r.Context(), hb, secretHash(token), s.adminAudit(r, "heartbeat.created"), s.now())
	if err != nil {
		return conflictAs(err, errHeartbeatNameTaken)
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusCreated, heartbeatWithURL{created, "/api/v1/heartbeats/ping/" + token})
}

// handleHeartbeatUpdate handles PATCH /api/v1/heartbeats/{id}.
func (s *server) handleHeartbeatUpdate(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	var in heartbeatRequest
	if err := readJSON(w, r, &in); err != nil {
		return err
	}
	updated, err := s.store.UpdateHeartbeat(r.Context(), id, func(hb *heartbeat) (*bool, error) {
		paused, problems := in.apply(hb, false)
		return paused, invalid(problems...)
	}, s.adminAudit(r, "heartbeat.updated"), s.now())
	if err != nil {
		return notFoundAs(conflictAs(err, errHeartbeatNameTaken), errHeartbeatNotFound)
	}
	return writeJSON(w, http.StatusOK, updated)
}

// handlePing handles HEAD, GET and POST /api/v1/heartbeats/ping/{token}
// and its /start and /fail: any body is read and dropped, so that
// Alertmanager's always-firing Watchdog alert can be routed here.
func (s *server) handlePing(signal string) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		if _, err := io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, maxBodyBytes)); err != nil {
			return errBodyTooLarge
		}
		hash := secretHash(r.PathValue("token"))
		if wait := s.limits.ingestKey.take("ping:"+hex.EncodeToString(hash[:8]), s.now()); wait > 0 {
			return tooMany(wait, tooManyReports)
		}
		hb, err := s.store.HeartbeatSignal(r.Context(), hash, signal, s.cfg.reopenWindow, s.now())
		if err != nil {
			return notFoundAs(err, errHeartbeatNotFound)
		}
		return writeJSON(w, http.StatusOK, pingAnswer{State: hb.State})
	}
}
