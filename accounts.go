package main

import (
	"bytes"
	"errors"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"unicode/utf8"
)

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
		return errWrongPassword
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
