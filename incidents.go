package main

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

var (
	severities = []string{"low", "medium", "high", "critical"}
	statuses   = []string{"open", "resolved"}
)

// incidentCreate is the body of POST /api/v1/incidents.
type incidentCreate struct {
	Title       jsonString `json:"title"`
	Description jsonString `json:"description"`
	Severity    jsonString `json:"severity"`
}

func (in incidentCreate) validate() []fieldError {
	var problems []fieldError
	problems = stringRule{required: true, min: 1, max: 200, notBlank: true}.check(problems, []string{"body", "title"}, in.Title)
	problems = stringRule{max: 10000}.check(problems, []string{"body", "description"}, in.Description)
	problems = stringRule{required: true, oneOf: severities}.check(problems, []string{"body", "severity"}, in.Severity)
	return problems
}

// handleIncidentCreate handles POST /api/v1/incidents. Scripts report
// without logging in, as they did with the original service.
func (s *server) handleIncidentCreate(w http.ResponseWriter, r *http.Request) error {
	var in incidentCreate
	if err := readJSON(w, r, &in); err != nil {
		return err
	}
	if err := invalid(in.validate()...); err != nil {
		return err
	}
	inc, err := s.store.CreateIncident(r.Context(), newIncident{
		Title:       in.Title.Value,
		Description: in.Description.Value,
		Severity:    in.Severity.Value,
	}, s.now())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, inc)
}

// handleIncidentList handles GET /api/v1/incidents.
func (s *server) handleIncidentList(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := incidentFilter{Limit: 100}
	var problems []fieldError
	f.Statuses, problems = queryEnum(problems, q, "status", statuses)
	f.Severities, problems = queryEnum(problems, q, "severity", severities)
	if v := q.Get("limit"); v != "" {
		n, perr := parseIntParam([]string{"query", "limit"}, v, 1, 1000)
		if perr != nil {
			problems = append(problems, *perr)
		}
		f.Limit = int(n)
	}
	if v := q.Get("before"); v != "" {
		n, perr := parseIntParam([]string{"query", "before"}, v, 1, 1<<63-1)
		if perr != nil {
			problems = append(problems, *perr)
		}
		f.Before = n
	}
	if err := invalid(problems...); err != nil {
		return err
	}
	list, more, err := s.store.ListIncidents(r.Context(), f)
	if err != nil {
		return err
	}
	if more {
		next := cloneQuery(q)
		next.Set("before", strconv.FormatInt(list[len(list)-1].ID, 10))
		w.Header().Set("Link", linkNext(r, next))
	}
	return writeJSON(w, http.StatusOK, list)
}

// queryEnum reads a query parameter that may repeat or hold a
// comma-separated list, every value one of allowed.
func queryEnum(problems []fieldError, q url.Values, name string, allowed []string) ([]string, []fieldError) {
	var values []string
	for _, raw := range q[name] {
		for _, v := range strings.Split(raw, ",") {
			v = strings.TrimSpace(v)
			if v == "" {
				continue
			}
			if !slices.Contains(allowed, v) {
				problems = append(problems, fieldError{Type: "enum", Loc: []string{"query", name}, Msg: "Input should be " + quoteList(allowed)})
				continue
			}
			values = append(values, v)
		}
	}
	return values, problems
}

func cloneQuery(q url.Values) url.Values {
	c := url.Values{}
	for k, v := range q {
		c[k] = append([]string(nil), v...)
	}
	return c
}

// linkNext is an RFC 8288 Link header for the next page: this path with the
// next page's query.
func linkNext(r *http.Request, q url.Values) string {
	return "<" + r.URL.Path + "?" + q.Encode() + `>; rel="next"`
}

// pathID reads the {id} path parameter.
func pathID(r *http.Request) (int64, error) {
	id, perr := parseIntParam([]string{"path", "id"}, r.PathValue("id"), -1<<63, 1<<63-1)
	if perr != nil {
		return 0, invalid(*perr)
	}
	return id, nil
}

var errIncidentNotFound = &httpError{status: http.StatusNotFound, detail: "Incident not found"}

// handleIncidentGet handles GET /api/v1/incidents/{id}.
func (s *server) handleIncidentGet(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	inc, err := s.store.Incident(r.Context(), id)
	if errors.Is(err, errNotFound) {
		return errIncidentNotFound
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, inc)
}

// handleIncidentResolve handles PATCH /api/v1/incidents/{id}/resolve.
func (s *server) handleIncidentResolve(w http.ResponseWriter, r *http.Request) error {
	u, err := s.authenticate(r)
	if err != nil {
		return err
	}
	id, err := pathID(r)
	if err != nil {
		return err
	}
	_, err = s.store.ResolveIncident(r.Context(), id, u.ID, s.now())
	switch {
	case errors.Is(err, errNotFound):
		return errIncidentNotFound
	case errors.Is(err, errConflict):
		return &httpError{status: http.StatusConflict, detail: "Incident already resolved"}
	case err != nil:
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]string{"message": "Incident resolved", "incident status": "resolved"})
}
