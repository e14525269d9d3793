package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"slices"
	"strings"
)

// capability is something a caller may do. A role grants a set of them; an
// API key grants its scopes, never more than its owner's role.
type capability string

const (
	capRead   capability = "incidents:read"
	capWrite  capability = "incidents:write"
	capManage capability = "incidents:manage"
	capAdmin  capability = "admin" // users and the audit log; never a key scope
)

// roles, from least to most powerful, with what each may do. Every role may
// report incidents, as anyone may by default.
var roles = []string{"viewer", "responder", "admin"}

var roleCapabilities = map[string][]capability{
	"viewer":    {capRead, capWrite},
	"responder": {capRead, capWrite, capManage},
	"admin":     {capRead, capWrite, capManage, capAdmin},
}

// keyScopes are the scopes an API key may carry.
var keyScopes = []string{string(capRead), string(capWrite), string(capManage)}

// principal is who makes a request: nobody (anonymous), a signed-in user,
// or a user through one of their API keys.
type principal struct {
	user *user
	key  *apiKey
}

func (p principal) can(c capability) bool {
	if p.user == nil || !slices.Contains(roleCapabilities[p.user.Role], c) {
		return false
	}
	return p.key == nil || slices.Contains(p.key.Scopes, string(c))
}

// actor is who the timeline names for the principal's changes.
func (p principal) actor() actorRef {
	var a actorRef
	if p.user != nil {
		a.UserID = &p.user.ID
	}
	if p.key != nil {
		a.KeyID = &p.key.ID
	}
	return a
}

// access is what a route asks of its callers. Its name is the operation's
// x-access in openapi.json, which a test keeps equal.
type access struct {
	name      string
	open      bool              // no credentials are looked at
	need      capability        // "": any authenticated caller
	anonymous func(config) bool // nil: credentials are required
	signedIn  bool              // a JWT, not an API key
	ticket    bool              // a stream ticket in ?ticket= is accepted
}

func publicIngest(c config) bool { return c.publicIngest }
func publicRead(c config) bool   { return c.publicRead }

var (
	accessOpen   = access{name: "open", open: true}
	accessIngest = access{name: "ingest", need: capWrite, anonymous: publicIngest}
	accessRead   = access{name: "read", need: capRead, anonymous: publicRead}
	accessStream = access{name: "stream", need: capRead, anonymous: publicRead, ticket: true}
	accessReader = access{name: "reader", need: capRead}
	accessManage = access{name: "manage", need: capManage}
	accessAdmin  = access{name: "admin", need: capAdmin, signedIn: true}
	accessSelf   = access{name: "self", signedIn: true}
	accessAnyone = access{name: "anyone"}
	// accessHook: the handler authenticates the integration's key itself,
	// since a PagerDuty event carries it in its body.
	accessHook = access{name: "integration", open: true}
	// accessPing: the secret token in a heartbeat's ping URL is its
	// credential.
	accessPing = access{name: "ping", open: true}
)

type principalKey struct{}

// principalOf is the caller the access check found; anonymous when the
// route let one in.
func principalOf(r *http.Request) principal {
	p, _ := r.Context().Value(principalKey{}).(principal)
	return p
}

// authorize checks a request against a route's access and returns it with
// the principal attached.
func (s *server) authorize(r *http.Request, a access) (*http.Request, error) {
	if a.open {
		return r, nil
	}
	anonymousOK := a.anonymous != nil && a.anonymous(s.cfg)
	p, err := s.authenticate(r, a.ticket, anonymousOK)
	switch {
	case errors.Is(err, errNoCredentials) && anonymousOK:
		return r, nil
	case errors.Is(err, errNoCredentials):
		return nil, errNotAuthenticated
	case err != nil:
		return nil, err
	case a.signedIn && p.key != nil:
		return nil, errKeyNotAllowed
	case a.need != "" && !p.can(a.need) && anonymousOK:
		// Credentials never give less than none would, nor more than their
		// scope: the caller goes on as anonymous.
		return r, nil
	case a.need != "" && !p.can(a.need):
		return nil, errForbidden
	}
	return r.WithContext(context.WithValue(r.Context(), principalKey{}, p)), nil
}

// errNoCredentials means the request carries none; whether that is fine
// depends on the route.
var errNoCredentials = errors.New("no credentials")

// apiKeyPrefix tells API keys from JWTs in the same Authorization header.
const apiKeyPrefix = "ik_"

// authenticate finds the principal of a request from its bearer token (a
// JWT or an API key) or, where the route allows, a stream ticket. On a route
// anonymous callers may use, a JWT that does not validate is ignored, as the
// original service ignored it there (and any other scheme, like Basic); an
// API key that does not validate is always refused, so a revoked key fails
// loudly.
func (s *server) authenticate(r *http.Request, ticketOK, anonymousOK bool) (principal, error) {
	if ticketOK && r.URL.Query().Has("ticket") {
		return s.redeemTicket(r)
	}
	header := r.Header.Get("Authorization")
	scheme, token, _ := strings.Cut(header, " ")
	token = strings.TrimSpace(token)
	if header == "" {
		return principal{}, errNoCredentials
	}
	if !strings.EqualFold(scheme, "Bearer") || token == "" {
		if anonymousOK {
			return principal{}, errNoCredentials
		}
		return principal{}, errNotAuthenticated
	}
	if strings.HasPrefix(token, apiKeyPrefix) {
		return s.principalOfKey(r, token)
	}
	p, err := s.principalOfJWT(r, token)
	if err != nil && anonymousOK && !errors.Is(err, errUnavailable) {
		return principal{}, errNoCredentials
	}
	return p, err
}

// userPrincipal lets a user act while enabled, with a token issued since
// the user's last password change (tokenVersion, the token's "ver").
func userPrincipal(u user, tokenVersion int64) (principal, error) {
	switch {
	case u.Disabled:
		return principal{}, errAccountDisabled
	case tokenVersion != u.TokenVersion:
		return principal{}, errTokenRevoked
	}
	return principal{user: &u}, nil
}

// principalOfKey checks an API key.
func (s *server) principalOfKey(r *http.Request, key string) (principal, error) {
	k, u, err := s.store.APIKeyByHash(r.Context(), secretHash(key), s.now())
	if errors.Is(err, errNotFound) {
		return principal{}, errBadKey
	}
	if err != nil {
		return principal{}, err
	}
	return s.keyPrincipal(k, u)
}

// keyPrincipal lets a key act only while it is not revoked, not expired and
// its owner is enabled.
func (s *server) keyPrincipal(k apiKey, u user) (principal, error) {
	switch {
	case k.RevokedAt != nil:
		return principal{}, errKeyRevoked
	case k.ExpiresAt != nil && !s.now().Before(*k.ExpiresAt):
		return principal{}, errKeyExpired
	case u.Disabled:
		return principal{}, errAccountDisabled
	}
	return principal{user: &u, key: &k}, nil
}

// stillAllowed tells whether the credentials a stream opened with still
// work: the key not revoked or expired, the user enabled, and a token not
// ended by a password change. When the database cannot tell, the stream
// stays: the next change is re-checked again.
func (s *server) stillAllowed(p principal) bool {
	ctx, cancel := context.WithTimeout(context.Background(), s.store.timeout)
	defer cancel()
	if p.key != nil {
		k, u, err := s.store.APIKeyByID(ctx, p.key.ID)
		if err != nil {
			return !errors.Is(err, errNotFound)
		}
		_, err = s.keyPrincipal(k, u)
		return err == nil
	}
	u, err := s.store.UserByID(ctx, p.user.ID)
	if err != nil {
		return !errors.Is(err, errNotFound)
	}
	_, err = userPrincipal(u, p.user.TokenVersion)
	return err == nil
}

// newSecret returns prefix + 32 random bytes in base64url: an API key or a
// stream ticket.
func newSecret(prefix string) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return prefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// secretHash is how keys and tickets are stored and looked up. They carry
// 256 random bits, so a fast hash is enough: there is nothing to guess.
func secretHash(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

// clientIP is the caller's address for limits and the audit log.
func (s *server) clientIP(r *http.Request) string {
	return s.cfg.trustedProxies.clientIP(r)
}
