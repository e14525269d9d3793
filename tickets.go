package main

import (
	"errors"
	"net/http"
	"time"
)

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

// redeemTicket uses up a stream ticket and checks the user (and key) it was
// issued to as they are now.
func (s *server) redeemTicket(r *http.Request) (principal, error) {
	userID, keyID, err := s.store.RedeemStreamTicket(r.Context(), secretHash(r.URL.Query().Get("ticket")), s.now())
	if errors.Is(err, errNotFound) {
		return principal{}, errBadTicket
	}
	if err != nil {
		return principal{}, err
	}
	if keyID != nil {
		k, u, err := s.store.APIKeyByID(r.Context(), *keyID)
		if err != nil {
			return principal{}, notFoundAs(err, errBadTicket)
		}
		return s.keyPrincipal(k, u)
	}
	u, err := s.store.UserByID(r.Context(), userID)
	if err != nil {
		return principal{}, notFoundAs(err, errBadTicket)
	}
	// A password change deletes the user's tickets: any left are current.
	return userPrincipal(u, u.TokenVersion)
}
