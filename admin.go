package main

import (
	"errors"
	"net/http"
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
		return errLastAdminHTTP
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
