package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/argon2"
)

// argonParams are the cost parameters of an Argon2id hash.
type argonParams struct {
	memoryKiB uint32
	time      uint32
	threads   uint8
}

// newHashParams are OWASP's recommendation for Argon2id (m=19 MiB, t=2, p=1).
var newHashParams = argonParams{memoryKiB: 19456, time: 2, threads: 1}

// Limits on the parameters a stored hash may ask for, so a corrupt or hostile
// row cannot make one login allocate gigabytes.
const (
	maxHashMemoryKiB = 1 << 20
	maxHashTime      = 64
)

// passwords hashes and verifies passwords. Argon2id is memory-hard by
// design, so a burst of logins could exhaust memory; the semaphore allows one
// hash per CPU at a time and the rest wait their turn.
type passwords struct {
	sem       chan struct{}
	dummyHash string // verified when the user does not exist, to take the same time
}

func newPasswords() (*passwords, error) {
	p := &passwords{sem: make(chan struct{}, runtime.NumCPU())}
	dummy := make([]byte, 16)
	if _, err := rand.Read(dummy); err != nil {
		return nil, err
	}
	hash, err := p.hash(context.Background(), string(dummy))
	if err != nil {
		return nil, err
	}
	p.dummyHash = hash
	return p, nil
}

func (p *passwords) acquire(ctx context.Context) error {
	select {
	case p.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// hash returns the PHC string of a new Argon2id hash of password.
func (p *passwords) hash(ctx context.Context, password string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	if err := p.acquire(ctx); err != nil {
		return "", err
	}
	defer func() { <-p.sem }()
	prm := newHashParams
	key := argon2.IDKey([]byte(password), salt, prm.time, prm.memoryKiB, prm.threads, 32)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, prm.memoryKiB, prm.time, prm.threads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// verify tells whether password matches a PHC Argon2id hash, using the
// parameters the hash carries (the original service used m=65536,t=3,p=4).
// A hash it cannot read never matches.
func (p *passwords) verify(ctx context.Context, password, encoded string) (bool, error) {
	prm, salt, want, ok := parsePHC(encoded)
	if !ok {
		return false, nil
	}
	if err := p.acquire(ctx); err != nil {
		return false, err
	}
	defer func() { <-p.sem }()
	got := argon2.IDKey([]byte(password), salt, prm.time, prm.memoryKiB, prm.threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// currentHash tells whether encoded was made with today's parameters.
// Others (the original service's, m=65536,t=3,p=4) take longer to verify
// than the dummy hash of a name that does not exist, which tells the name
// exists; they are replaced at the owner's next login.
func currentHash(encoded string) bool {
	prm, _, _, ok := parsePHC(encoded)
	return ok && prm == newHashParams
}

// upgradeHash replaces u's hash with one of today's parameters. The login
// goes ahead if that fails: the old hash still works.
func (s *server) upgradeHash(ctx context.Context, u user, password string) {
	hash, err := s.passwords.hash(ctx, password)
	if err == nil {
		err = s.store.ReplacePasswordHash(ctx, u.ID, u.PasswordHash, hash)
	}
	if err != nil {
		s.log.Warn("upgrade password hash", "user", u.Username, "error", err)
	}
}

// parsePHC reads $argon2id$v=19$m=...,t=...,p=...$salt$hash.
func parsePHC(encoded string) (prm argonParams, salt, key []byte, ok bool) {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" || parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return prm, nil, nil, false
	}
	var m, t, threads uint64
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return prm, nil, nil, false
		}
		switch k {
		case "m":
			m = n
		case "t":
			t = n
		case "p":
			threads = n
		default:
			return prm, nil, nil, false
		}
	}
	if m < 8 || m > maxHashMemoryKiB || t < 1 || t > maxHashTime || threads < 1 || threads > 255 {
		return prm, nil, nil, false
	}
	b64 := base64.RawStdEncoding
	salt, err1 := b64.DecodeString(strings.TrimRight(parts[4], "="))
	key, err2 := b64.DecodeString(strings.TrimRight(parts[5], "="))
	if err1 != nil || err2 != nil || len(salt) < 8 || len(key) < 16 || len(key) > 1024 {
		return prm, nil, nil, false
	}
	return argonParams{memoryKiB: uint32(m), time: uint32(t), threads: uint8(threads)}, salt, key, true
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

var usernamePattern = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

const maxUsernameLen = 50

// registerRequest is the body of POST /api/v1/register.
type registerRequest struct {
	Username jsonString `json:"username"`
	Password jsonString `json:"password"`
}

func (in registerRequest) validate() []fieldError {
	var problems []fieldError
	problems = stringRule{required: true, min: 3, max: maxUsernameLen, pattern: usernamePattern}.check(problems, []string{"body", "username"}, in.Username)
	problems = stringRule{required: true, min: 8, max: 128}.check(problems, []string{"body", "password"}, in.Password)
	return problems
}

// handleRegister handles POST /api/v1/register. The first user becomes
// admin, later ones responders; with REGISTRATION=closed only the first.
func (s *server) handleRegister(w http.ResponseWriter, r *http.Request) error {
	var in registerRequest
	if err := readJSON(w, r, &in); err != nil {
		return err
	}
	if err := invalid(in.validate()...); err != nil {
		return err
	}
	if !s.cfg.registrationOpen {
		// Refuse before the costly hash; the transaction checks again.
		if first, err := s.store.NoUsers(r.Context()); err != nil || !first {
			if err != nil {
				return err
			}
			return errRegistrationClosedHTTP
		}
	}
	ip := s.clientIP(r)
	if wait := s.limits.registerIP.take(ipLimitKey(ip), s.now()); wait > 0 {
		return tooMany(wait, tooManyAttempts)
	}
	hash, err := s.passwords.hash(r.Context(), in.Password.Value)
	if err != nil {
		return err
	}
	u, err := s.store.RegisterUser(r.Context(), in.Username.Value, hash, s.cfg.registrationOpen,
		auditEntry{Action: "user.registered", IP: ip}, s.now())
	switch {
	case errors.Is(err, errRegistrationClosed):
		return errRegistrationClosedHTTP
	case errors.Is(err, errConflict):
		return errUsernameTaken
	case err != nil:
		return err
	}
	return writeJSON(w, http.StatusCreated, map[string]string{"message": "User registered successfully", "data": u.Username})
}

var errRegistrationClosedHTTP = &httpError{status: http.StatusForbidden, detail: "Registration is closed"}

var errUsernameTaken = &httpError{status: http.StatusConflict, detail: "Username already registered"}

// loginRequest is the body of POST /api/v1/login, as JSON or as an OAuth2
// password-flow form. No length rules: a password that would not pass
// registration today is just a wrong password.
type loginRequest struct {
	Username jsonString `json:"username"`
	Password jsonString `json:"password"`
}

func (in loginRequest) validate() []fieldError {
	var problems []fieldError
	problems = stringRule{required: true}.check(problems, []string{"body", "username"}, in.Username)
	problems = stringRule{required: true}.check(problems, []string{"body", "password"}, in.Password)
	return problems
}

var errBadLogin = unauthorized("Incorrect username or password")

// handleLogin handles POST /api/v1/login. Failed attempts are limited per
// username and per client IP; a slot is taken before the password is
// checked, so concurrent guesses cannot overrun the limit, and given back
// when the login succeeds.
func (s *server) handleLogin(w http.ResponseWriter, r *http.Request) error {
	in, err := readLogin(w, r)
	if err != nil {
		return err
	}
	// No account has a longer name, so a longer one is cut before it is
	// kept as a limit's key or in the audit log.
	attempted := in.Username.Value
	if utf8.RuneCountInString(attempted) > maxUsernameLen {
		attempted = string([]rune(attempted)[:maxUsernameLen])
	}
	now, ip, name := s.now(), s.clientIP(r), strings.ToLower(attempted)
	if wait := s.limits.loginUser.take(name, now); wait > 0 {
		return tooMany(wait, tooManyAttempts)
	}
	if wait := s.limits.loginIP.take(ipLimitKey(ip), now); wait > 0 {
		s.limits.loginUser.giveBack(name, now)
		return tooMany(wait, tooManyAttempts)
	}
	u, err := s.store.UserByUsername(r.Context(), in.Username.Value)
	if err != nil && !errors.Is(err, errNotFound) {
		return err
	}
	hash := u.PasswordHash
	if errors.Is(err, errNotFound) {
		hash = s.passwords.dummyHash // the same work, so timing does not tell which names exist
	}
	ok, verr := s.passwords.verify(r.Context(), in.Password.Value, hash)
	if verr != nil {
		return verr
	}
	if err != nil || !ok || u.Disabled {
		reason := "bad_credentials"
		if ok && u.Disabled {
			reason = "disabled"
		}
		// No actor: whoever failed is not known to be the account's owner.
		if aerr := s.store.Audit(r.Context(), auditEntry{Action: "login.failed", Target: attempted, IP: ip,
			Details: map[string]any{"username": attempted, "reason": reason}}, now); aerr != nil {
			return aerr
		}
		if reason == "disabled" {
			return errAccountDisabled
		}
		return errBadLogin
	}
	s.limits.loginUser.giveBack(name, now)
	s.limits.loginIP.giveBack(ipLimitKey(ip), now)
	if !currentHash(u.PasswordHash) {
		s.upgradeHash(r.Context(), u, in.Password.Value)
	}
	token, err := s.issueToken(u)
	if err != nil {
		return err
	}
	if err := s.store.Audit(r.Context(), auditEntry{ActorID: &u.ID, Action: "login.succeeded", Target: u.Username, IP: ip}, now); err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusOK, map[string]string{"access_token": token, "token_type": "bearer"})
}

// readLogin reads the login body in any of its encodings: JSON, or an
// OAuth2 password-flow form, urlencoded or multipart (clients send
// either).
func readLogin(w http.ResponseWriter, r *http.Request) (loginRequest, error) {
	var in loginRequest
	mediaType, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mediaType != "application/x-www-form-urlencoded" && mediaType != "multipart/form-data" {
		if err := readJSON(w, r, &in); err != nil {
			return in, err
		}
		return in, invalid(in.validate()...)
	}
	form, files, err := readForm(w, r, mediaType, params["boundary"])
	if err != nil {
		return in, err
	}
	for field, dst := range map[string]*jsonString{"username": &in.Username, "password": &in.Password} {
		switch values, ok := form[field]; {
		case ok:
			*dst = jsonString{Value: values[0], Present: true, IsText: true}
		case files[field]:
			*dst = jsonString{Present: true} // a file is not a string
		}
	}
	return in, invalid(in.validate()...)
}

// errBadForm is the 422 for a form body that cannot be parsed.
var errBadForm = invalid(fieldError{Type: "value_error", Loc: []string{"body"}, Msg: "Value error, the form body could not be parsed"})

// readForm reads a form body, urlencoded or multipart/form-data (whose
// boundary is given), with readRawBody's limit: its values, checked by
// badTextValues, and the names of its file fields.
func readForm(w http.ResponseWriter, r *http.Request, mediaType, boundary string) (url.Values, map[string]bool, error) {
	body, err := readRawBody(w, r)
	if err != nil {
		return nil, nil, err
	}
	var (
		form  url.Values
		files = map[string]bool{}
	)
	if mediaType == "multipart/form-data" {
		if boundary == "" {
			return nil, nil, errBadForm
		}
		// The whole body is in memory already, so its parts stay there.
		mf, err := multipart.NewReader(bytes.NewReader(body), boundary).ReadForm(maxBodyBytes)
		if err != nil {
			return nil, nil, errBadForm
		}
		defer mf.RemoveAll()
		form = url.Values(mf.Value)
		for name := range mf.File {
			files[name] = true
		}
	} else if form, err = url.ParseQuery(string(body)); err != nil {
		return nil, nil, errBadForm
	}
	if err := invalid(badTextValues("body", form)...); err != nil {
		return nil, nil, err
	}
	return form, files, nil
}

// handleMe handles GET /api/v1/me.
func (s *server) handleMe(w http.ResponseWriter, r *http.Request) error {
	u := principalOf(r).user
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusOK, map[string]any{"id": u.ID, "username": u.Username, "created_at": u.CreatedAt, "role": u.Role})
}

// passwordChange is the body of PATCH /api/v1/me/password.
type passwordChange struct {
	CurrentPassword jsonString `json:"current_password"`
	NewPassword     jsonString `json:"new_password"`
}

// handlePasswordChange handles PATCH /api/v1/me/password. Every token
// issued before, including the caller's, stops working.
func (s *server) handlePasswordChange(w http.ResponseWriter, r *http.Request) error {
	u := principalOf(r).user
	var in passwordChange
	if err := readJSON(w, r, &in); err != nil {
		return err
	}
	problems := stringRule{required: true}.check(nil, []string{"body", "current_password"}, in.CurrentPassword)
	problems = stringRule{required: true, min: 8, max: 128}.check(problems, []string{"body", "new_password"}, in.NewPassword)
	if err := invalid(problems...); err != nil {
		return err
	}
	now, ip := s.now(), s.clientIP(r)
	// Guessing the current password here is limited like logins are.
	name := strings.ToLower(u.Username)
	if wait := s.limits.loginUser.take(name, now); wait > 0 {
		return tooMany(wait, tooManyAttempts)
	}
	ok, err := s.passwords.verify(r.Context(), in.CurrentPassword.Value, u.PasswordHash)
	if err != nil {
		return err
	}
	if !ok {
		return &httpError{status: http.StatusForbidden, detail: "Current password is incorrect"}
	}
	s.limits.loginUser.giveBack(name, now)
	hash, err := s.passwords.hash(r.Context(), in.NewPassword.Value)
	if err != nil {
		return err
	}
	if err := s.store.ChangePassword(r.Context(), u.ID, hash, auditEntry{ActorID: &u.ID, Action: "password.changed", Target: u.Username, IP: ip}, now); err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusOK, map[string]string{"message": "Password changed; log in again"})
}
