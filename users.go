package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"
)

// userView is a user as admins see it.
type userView struct {
	ID        int64     `json:"id"`
	Username  string    `json:"username"`
	Role      string    `json:"role"`
	Disabled  bool      `json:"disabled"`
	CreatedAt time.Time `json:"created_at"`
}

func newUserView(u user) userView {
	return userView{ID: u.ID, Username: u.Username, Role: u.Role, Disabled: u.Disabled, CreatedAt: u.CreatedAt}
}

// jsonValue is a request field of a type without its own lenient decoder
// (a boolean, a number, an array): it keeps the raw value for validation.
type jsonValue struct {
	Present bool
	Raw     json.RawMessage
}

func (v *jsonValue) UnmarshalJSON(b []byte) error {
	v.Present, v.Raw = true, slices.Clone(b)
	return nil
}

// boolField validates an optional boolean.
func boolField(problems []fieldError, loc []string, v jsonValue) (*bool, []fieldError) {
	if !v.Present {
		return nil, problems
	}
	var b bool
	if string(v.Raw) == "null" || json.Unmarshal(v.Raw, &b) != nil {
		return nil, append(problems, fieldError{Type: "bool_type", Loc: loc, Msg: "Input should be a valid boolean"})
	}
	return &b, problems
}

// userCreate is the body of POST /api/v1/users.
type userCreate struct {
	registerRequest
	Role jsonString `json:"role"`
}

// handleUserCreate handles POST /api/v1/users: an admin adds a user, the
// way in when registration is closed.
func (s *server) handleUserCreate(w http.ResponseWriter, r *http.Request) error {
	var in userCreate
	if err := readJSON(w, r, &in); err != nil {
		return err
	}
	problems := in.registerRequest.validate()
	problems = stringRule{required: true, oneOf: roles}.check(problems, []string{"body", "role"}, in.Role)
	if err := invalid(problems...); err != nil {
		return err
	}
	hash, err := s.passwords.hash(r.Context(), in.Password.Value)
	if err != nil {
		return err
	}
	admin := principalOf(r).user
	u, err := s.store.CreateUser(r.Context(), in.Username.Value, hash, in.Role.Value,
		auditEntry{ActorID: &admin.ID, Action: "user.created", IP: s.clientIP(r)}, s.now())
	if errors.Is(err, errConflict) {
		return errUsernameTaken
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, newUserView(u))
}

// handleUserList handles GET /api/v1/users: by id, paged with limit and
// after like the other lists.
func (s *server) handleUserList(w http.ResponseWriter, r *http.Request) error {
	limit, after, err := pageParams(r.URL.Query())
	if err != nil {
		return err
	}
	p := newPage(limit, func(u user) any { return newUserView(u) })
	if err := s.store.Users(r.Context(), after, limit, p.add); err != nil {
		return err
	}
	return p.write(w, r, nextAfter(func(u user) int64 { return u.ID }))
}

// userUpdate is the body of PATCH /api/v1/users/{id}.
type userUpdate struct {
	Role     jsonString `json:"role"`
	Disabled jsonValue  `json:"disabled"`
}

var errUserNotFound = &httpError{status: http.StatusNotFound, detail: "User not found"}

// handleUserUpdate handles PATCH /api/v1/users/{id}: role and disabled. A
// disabled user's tokens and keys stop working with the next request.
func (s *server) handleUserUpdate(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	var in userUpdate
	if err := readJSON(w, r, &in); err != nil {
		return err
	}
	var change userChange
	problems := stringRule{oneOf: roles}.check(nil, []string{"body", "role"}, in.Role)
	if in.Role.Present && in.Role.IsText {
		change.Role = &in.Role.Value
	}
	change.Disabled, problems = boolField(problems, []string{"body", "disabled"}, in.Disabled)
	if len(problems) == 0 && change.Role == nil && change.Disabled == nil {
		problems = append(problems, fieldError{Type: "missing", Loc: []string{"body"}, Msg: "Field required: role or disabled"})
	}
	if err := invalid(problems...); err != nil {
		return err
	}
	admin := principalOf(r).user
	u, err := s.store.UpdateUser(r.Context(), id, change, auditEntry{ActorID: &admin.ID, IP: s.clientIP(r)}, s.now())
	switch {
	case errors.Is(err, errLastAdmin):
		return &httpError{status: http.StatusConflict, detail: "The last active admin cannot be demoted or disabled"}
	case err != nil:
		return notFoundAs(err, errUserNotFound)
	}
	return writeJSON(w, http.StatusOK, newUserView(u))
}

// handleAuditList handles GET /api/v1/audit: newest first, paged with
// limit and before, filtered by actor (a username) and action.
func (s *server) handleAuditList(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	var problems []fieldError
	limit, problems := queryInt(problems, q, "limit", 100, 1, 1000)
	before, problems := queryInt(problems, q, "before", 0, 1, 1<<63-1)
	if err := invalid(problems...); err != nil {
		return err
	}
	f := auditFilter{Before: before, Action: q.Get("action"), Limit: int(limit)}
	if name := q.Get("actor"); name != "" {
		u, err := s.store.UserByUsername(r.Context(), name)
		if errors.Is(err, errNotFound) {
			return writeJSON(w, http.StatusOK, []auditEntry{})
		}
		if err != nil {
			return err
		}
		f.ActorID = &u.ID
	}
	p := newPage(f.Limit, func(e auditEntry) any { return e })
	if err := s.store.AuditLog(r.Context(), f, p.add); err != nil {
		return err
	}
	return p.write(w, r, func(last auditEntry) (string, string) { return "before", strconv.FormatInt(last.ID, 10) })
}

// apiKeyCreate is the body of POST /api/v1/api-keys.
type apiKeyCreate struct {
	Name          jsonString `json:"name"`
	Scopes        jsonValue  `json:"scopes"`
	ExpiresInDays jsonValue  `json:"expires_in_days"`
}

// maxKeyDays is the longest a key may be made to last (ten years).
const maxKeyDays = 3650

func (in apiKeyCreate) validate() (scopes []string, days *int64, problems []fieldError) {
	problems = stringRule{required: true, min: 1, max: 100, notBlank: true}.check(problems, []string{"body", "name"}, in.Name)
	loc := []string{"body", "scopes"}
	switch {
	case !in.Scopes.Present:
		problems = append(problems, fieldError{Type: "missing", Loc: loc, Msg: "Field required"})
	case json.Unmarshal(in.Scopes.Raw, &scopes) != nil || scopes == nil:
		problems = append(problems, fieldError{Type: "list_type", Loc: loc, Msg: "Input should be a valid list of strings"})
	case len(scopes) == 0:
		problems = append(problems, fieldError{Type: "too_short", Loc: loc, Msg: "List should have at least 1 item"})
	default:
		for i, sc := range scopes {
			if !slices.Contains(keyScopes, sc) {
				problems = append(problems, fieldError{Type: "enum", Loc: append(loc, strconv.Itoa(i)), Msg: "Input should be " + quoteList(keyScopes)})
			}
		}
		slices.Sort(scopes)
		scopes = slices.Compact(scopes)
	}
	if in.ExpiresInDays.Present && string(in.ExpiresInDays.Raw) != "null" {
		loc := []string{"body", "expires_in_days"}
		var n int64
		if err := json.Unmarshal(in.ExpiresInDays.Raw, &n); err != nil {
			problems = append(problems, fieldError{Type: "int_type", Loc: loc, Msg: "Input should be a valid integer"})
		} else if _, ferr := parseIntParam(loc, strconv.FormatInt(n, 10), 1, maxKeyDays); ferr != nil {
			problems = append(problems, *ferr)
		} else {
			days = &n
		}
	}
	return scopes, days, problems
}

// handleAPIKeyCreate handles POST /api/v1/api-keys. The key is in this
// response only; the server keeps its SHA-256.
func (s *server) handleAPIKeyCreate(w http.ResponseWriter, r *http.Request) error {
	var in apiKeyCreate
	if err := readJSON(w, r, &in); err != nil {
		return err
	}
	scopes, days, problems := in.validate()
	if err := invalid(problems...); err != nil {
		return err
	}
	owner := principalOf(r)
	for _, sc := range scopes {
		if !owner.can(capability(sc)) {
			return &httpError{status: http.StatusForbidden, detail: fmt.Sprintf("Insufficient permissions: a %s cannot grant %s", owner.user.Role, sc)}
		}
	}
	secret, err := newSecret(apiKeyPrefix)
	if err != nil {
		return err
	}
	now := s.now()
	k := apiKey{UserID: owner.user.ID, Name: in.Name.Value, Scopes: scopes}
	if days != nil {
		expires := now.Add(time.Duration(*days) * 24 * time.Hour)
		k.ExpiresAt = &expires
	}
	k, err = s.store.CreateAPIKey(r.Context(), k, secretHash(secret),
		auditEntry{ActorID: &owner.user.ID, Action: "api_key.created", IP: s.clientIP(r)}, now)
	if errors.Is(err, errTooManyKeys) {
		return &httpError{status: http.StatusConflict, detail: fmt.Sprintf("At most %d active API keys per user; revoke one first", maxAPIKeys)}
	}
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusCreated, map[string]any{
		"id": k.ID, "name": k.Name, "scopes": k.Scopes, "key": secret, "created_at": k.CreatedAt, "expires_at": k.ExpiresAt,
	})
}

// handleAPIKeyList handles GET /api/v1/api-keys: the caller's keys that are
// not revoked, without their secrets.
func (s *server) handleAPIKeyList(w http.ResponseWriter, r *http.Request) error {
	keys, err := s.store.APIKeys(r.Context(), principalOf(r).user.ID)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusOK, keys)
}

// handleAPIKeyRevoke handles DELETE /api/v1/api-keys/{id}.
func (s *server) handleAPIKeyRevoke(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	owner := principalOf(r).user
	err = s.store.RevokeAPIKey(r.Context(), owner.ID, id, auditEntry{ActorID: &owner.ID, Action: "api_key.revoked", IP: s.clientIP(r)}, s.now())
	if err != nil {
		return notFoundAs(err, &httpError{status: http.StatusNotFound, detail: "API key not found"})
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// streamTicketTTL is how long a stream ticket can wait to be used.
const streamTicketTTL = 30 * time.Second

// handleStreamTicket handles POST /api/v1/stream-tickets: a single-use,
// short-lived ticket for ?ticket= on the WebSocket and SSE endpoints, where
// browsers cannot send headers.
func (s *server) handleStreamTicket(w http.ResponseWriter, r *http.Request) error {
	p := principalOf(r)
	ticket, err := newSecret("")
	if err != nil {
		return err
	}
	now := s.now()
	a := p.actor()
	details := map[string]any{}
	if p.key != nil {
		details["api_key"] = p.key.Name
	}
	err = s.store.CreateStreamTicket(r.Context(), secretHash(ticket), p.user.ID, a.KeyID, now.Add(streamTicketTTL),
		auditEntry{ActorID: &p.user.ID, Action: "stream_ticket.issued", Target: p.user.Username, IP: s.clientIP(r), Details: details}, now)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusCreated, map[string]any{"ticket": ticket, "expires_in": int(streamTicketTTL.Seconds())})
}
