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
	days, problems = intField(problems, []string{"body", "expires_in_days"}, in.ExpiresInDays, false, 1, maxKeyDays)
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
		return notFoundAs(err, errAPIKeyNotFound)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
