package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// principalOfJWT checks an access token: only the configured algorithm,
// only the claims issueToken writes (tokenClaims' UnmarshalJSON and
// userID), the user still there and enabled, and the token issued since
// the user's last password change.
func (s *server) principalOfJWT(r *http.Request, token string) (principal, error) {
	var claims tokenClaims
	_, err := jwt.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return s.cfg.secretKey, nil },
		jwt.WithValidMethods([]string{s.cfg.algorithm}),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(s.now),
	)
	if errors.Is(err, jwt.ErrTokenExpired) {
		return principal{}, errTokenExpired
	}
	if err != nil {
		return principal{}, errBadCredentials
	}
	id, err := claims.userID(s.now())
	if err != nil {
		return principal{}, err
	}
	u, err := s.store.UserByID(r.Context(), id)
	switch {
	case errors.Is(err, errNotFound):
		return principal{}, errBadCredentials
	case err != nil:
		return principal{}, err
	}
	return userPrincipal(u, claims.Version)
}

// tokenClaims are the claims of an access token.
type tokenClaims struct {
	Username string `json:"username"`
	// Version is the user's token version when the token was issued; a
	// password change bumps it.
	Version int64 `json:"ver"`
	jwt.RegisteredClaims
}

// maxTokenClockSkew is how far past now a token's iat may be: replicas
// that share the key may have clocks a little apart.
const maxTokenClockSkew = time.Minute

// UnmarshalJSON reads the claims of a token, refusing one whose exp, iat
// or ver is missing or not a JSON number: issueToken writes all three as
// numbers, and jwt.NumericDate would also read a string ("exp":
// "1714568400").
func (c *tokenClaims) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	for _, name := range []string{"exp", "iat", "ver"} {
		if v := raw[name]; len(v) == 0 || v[0] != '-' && (v[0] < '0' || v[0] > '9') {
			return fmt.Errorf("token claim %s: not a number", name)
		}
	}
	type plain tokenClaims // without this method
	return json.Unmarshal(b, (*plain)(c))
}

// userID checks the claims jwt's parser leaves alone and returns the
// user the token is for. It refuses what issueToken never writes: a sub
// that is not a user id in canonical decimal ("+1", "01", " 1" and "1.0"
// are not), and an iat more than maxTokenClockSkew after now. Such a
// token was not issued by this server, even if signed with its key.
func (c tokenClaims) userID(now time.Time) (int64, error) {
	id, err := strconv.ParseInt(c.Subject, 10, 64)
	if err != nil || strconv.FormatInt(id, 10) != c.Subject {
		return 0, errBadCredentials
	}
	if c.IssuedAt == nil || c.IssuedAt.After(now.Add(maxTokenClockSkew)) {
		return 0, errBadCredentials
	}
	return id, nil
}

// issueToken signs an access token for u.
func (s *server) issueToken(u user) (string, error) {
	now := s.now()
	claims := tokenClaims{
		Username: u.Username,
		Version:  u.TokenVersion,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   strconv.FormatInt(u.ID, 10),
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(s.cfg.tokenTTL)),
		},
	}
	return jwt.NewWithClaims(jwt.GetSigningMethod(s.cfg.algorithm), claims).SignedString(s.cfg.secretKey)
}
