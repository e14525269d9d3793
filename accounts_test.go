package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/argon2"
)

func TestRegisterValidation(t *testing.T) {
	ts := newTestServer(t)
	for _, tt := range []struct {
		name      string
		body      string
		wantTypes []string
	}{
		{"empty object", `{}`, []string{"missing@body.username", "missing@body.password"}},
		{"short username and password", `{"username":"ab","password":"1234567"}`, []string{"string_too_short@body.username", "string_too_short@body.password"}},
		{"long username", `{"username":"` + strings.Repeat("a", 51) + `","password":"admin123"}`, []string{"string_too_long@body.username"}},
		{"long password", `{"username":"alice","password":"` + strings.Repeat("p", 129) + `"}`, []string{"string_too_long@body.password"}},
		{"username with space", `{"username":"al ice","password":"admin123"}`, []string{"string_pattern_mismatch@body.username"}},
		{"username not a string", `{"username":123,"password":true}`, []string{"string_type@body.username", "string_type@body.password"}},
		{"null username", `{"username":null,"password":"admin123"}`, []string{"string_type@body.username"}},
		{"NUL in password", `{"username":"alice","password":"admin123\u0000"}`, []string{"value_error@body.password"}},
		{"not JSON", `{"username":`, []string{"json_invalid@body"}},
		{"not an object", `["alice","admin123"]`, []string{"model_attributes_type@body"}},
		{"trailing data", `{"username":"alice","password":"admin123"} {}`, []string{"json_invalid@body"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts.request(t, "POST", "/api/v1/register", tt.body).mustProblems(t, "POST /api/v1/register", tt.wantTypes...)
		})
	}
}

// TestRegisterAcceptsEdges registers names and passwords right at the
// limits of the rules; the refusals just past them are in
// TestRegisterValidation.
func TestRegisterAcceptsEdges(t *testing.T) {
	ts := newTestServer(t)
	for _, tt := range []struct {
		name, username, password string
	}{
		{"3-character username", "abc", "password1"},
		{"dot in username", "a.b", "password1"},
		{"underscore and hyphen in username", "x_y-z", "password1"},
		{"50-character username", strings.Repeat("u", 50), "password1"},
		{"128-character password", "longpass", strings.Repeat("p", 128)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := ts.request(t, "POST", "/api/v1/register", fmt.Sprintf(`{"username":%q,"password":%q}`, tt.username, tt.password))
			r.mustStatus(t, "POST /api/v1/register", http.StatusCreated)
			var reg map[string]any
			r.json(t, &reg)
			if want := map[string]any{"message": "User registered successfully", "data": tt.username}; !reflect.DeepEqual(reg, want) {
				t.Errorf("register body = %v, want %v", reg, want)
			}
			// The whole password was kept: it logs in.
			ts.login(t, tt.username, tt.password)
		})
	}
}

// TestLoginUnknownUserHashes checks that a login for a name no account has
// still verifies a password, against the dummy hash, so it waits for a
// hashing slot like a real one and its timing does not tell which names exist.
func TestLoginUnknownUserHashes(t *testing.T) {
	ts := newTestServer(t)
	sem := ts.srv.passwords.sem
	if got, want := cap(sem), runtime.NumCPU(); got != want {
		t.Errorf("cap(passwords.sem) = %d, want runtime.NumCPU() = %d", got, want)
	}
	for range cap(sem) {
		sem <- struct{}{}
	}
	drained := false
	drain := func() {
		if !drained {
			for range cap(sem) {
				<-sem
			}
			drained = true
		}
	}
	t.Cleanup(drain)

	type result struct {
		status int
		body   []byte
		err    error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := ts.Client().Post(ts.URL+"/api/v1/login", "application/json", strings.NewReader(`{"username":"nobody","password":"password1"}`))
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		done <- result{status: resp.StatusCode, body: b, err: err}
	}()

	var res result
	answered := false
	select {
	case res = <-done:
		answered = true
		t.Errorf("login of an unknown user answered %d %s with every hashing slot taken, want it to wait for one", res.status, res.body)
	case <-time.After(200 * time.Millisecond):
	}
	drain()
	if !answered {
		select {
		case res = <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("login of an unknown user did not answer within 10s of the hashing slots freeing")
		}
	}
	if res.err != nil {
		t.Fatalf("POST /api/v1/login: %v", res.err)
	}
	r := response{status: res.status, body: res.body}
	r.mustStatus(t, "POST /api/v1/login", http.StatusUnauthorized)
	if d := r.detail(t); d != "Incorrect username or password" {
		t.Errorf("detail = %v, want Incorrect username or password", d)
	}
}

func TestRegisterAndLogin(t *testing.T) {
	ts := newTestServer(t)

	r := ts.request(t, "POST", "/api/v1/register", `{"username":"admin","password":"admin123","extra":"ignored"}`)
	r.mustStatus(t, "register", http.StatusCreated)
	var reg map[string]any
	r.json(t, &reg)
	if want := map[string]any{"message": "User registered successfully", "data": "admin"}; !reflect.DeepEqual(reg, want) {
		t.Errorf("register body = %v, want %v", reg, want)
	}

	for _, name := range []string{"admin", "ADMIN", "Admin"} {
		r := ts.request(t, "POST", "/api/v1/register", fmt.Sprintf(`{"username":%q,"password":"other-password"}`, name))
		r.mustStatus(t, "duplicate register "+name, http.StatusConflict)
		if d := r.detail(t); d != "Username already registered" {
			t.Errorf("duplicate register detail = %v, want Username already registered", d)
		}
	}

	// JSON login, form login (the OAuth2 password flow) and any case of the name.
	for _, tt := range []struct {
		name, contentType, body string
	}{
		{"json", "application/json", `{"username":"admin","password":"admin123"}`},
		{"form", "application/x-www-form-urlencoded", "grant_type=password&username=admin&password=admin123&scope="},
		{"form with charset", "application/x-www-form-urlencoded; charset=utf-8", "username=admin&password=admin123"},
		{"other case", "application/json", `{"username":"ADMIN","password":"admin123"}`},
	} {
		t.Run("login "+tt.name, func(t *testing.T) {
			r := ts.request(t, "POST", "/api/v1/login", tt.body, "Content-Type", tt.contentType)
			r.mustStatus(t, "login", http.StatusOK)
			var tok map[string]string
			r.json(t, &tok)
			if tok["token_type"] != "bearer" || strings.Count(tok["access_token"], ".") != 2 {
				t.Fatalf("login body = %v, want a bearer JWT", tok)
			}
			if got := r.header.Get("Cache-Control"); got != "no-store" {
				t.Errorf("Cache-Control = %q, want no-store", got)
			}
			var me map[string]any
			ts.request(t, "GET", "/api/v1/me", "", bearer(tok["access_token"])...).mustStatus(t, "me", http.StatusOK).json(t, &me)
			if me["username"] != "admin" || me["id"] == nil || me["created_at"] == nil {
				t.Errorf("me = %v, want id, username admin, created_at", me)
			}
		})
	}

	for _, tt := range []struct {
		name, contentType, body string
		wantStatus              int
	}{
		{"wrong password", "application/json", `{"username":"admin","password":"admin124"}`, http.StatusUnauthorized},
		{"unknown user", "application/json", `{"username":"nobody","password":"admin123"}`, http.StatusUnauthorized},
		// A password registration would refuse is just wrong, never a 422.
		{"short password", "application/json", `{"username":"admin","password":"x"}`, http.StatusUnauthorized},
		{"empty password", "application/json", `{"username":"admin","password":""}`, http.StatusUnauthorized},
		{"huge username", "application/json", `{"username":"` + strings.Repeat("a", 500) + `","password":"admin123"}`, http.StatusUnauthorized},
		{"form wrong password", "application/x-www-form-urlencoded", "username=admin&password=nope", http.StatusUnauthorized},
		{"missing password", "application/json", `{"username":"admin"}`, http.StatusUnprocessableEntity},
		{"form missing username", "application/x-www-form-urlencoded", "password=admin123", http.StatusUnprocessableEntity},
	} {
		t.Run("login "+tt.name, func(t *testing.T) {
			r := ts.request(t, "POST", "/api/v1/login", tt.body, "Content-Type", tt.contentType)
			r.mustStatus(t, "login", tt.wantStatus)
			if tt.wantStatus == http.StatusUnauthorized {
				if d := r.detail(t); d != "Incorrect username or password" {
					t.Errorf("detail = %v, want Incorrect username or password", d)
				}
				if got := r.header.Get("WWW-Authenticate"); got != "Bearer" {
					t.Errorf("WWW-Authenticate = %q, want Bearer", got)
				}
			}
		})
	}
}

func TestRegisterConcurrentDuplicates(t *testing.T) {
	ts := newTestServer(t)
	const n = 8
	count := statusCounts(inParallel(t, n, func(t testing.TB, i int) response {
		name := "racer"
		if i%2 == 1 {
			name = "RACER"
		}
		return ts.request(t, "POST", "/api/v1/register", fmt.Sprintf(`{"username":%q,"password":"password-%d"}`, name, i))
	}))
	if count[http.StatusCreated] != 1 || count[http.StatusConflict] != n-1 {
		t.Errorf("statuses = %v, want one 201 and %d 409", count, n-1)
	}
}

func TestTokens(t *testing.T) {
	ts := newTestServer(t)
	token := ts.register(t, "alice", "password1")
	secret := ts.srv.cfg.secretKey
	now := ts.clock.Now()
	u, err := ts.st.UserByUsername(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	sign := func(method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(method, claims).SignedString(key)
		if err != nil {
			t.Fatalf("sign: %v", err)
		}
		return s
	}
	// The claims issueToken writes.
	valid := func() jwt.MapClaims {
		return jwt.MapClaims{"sub": strconv.FormatInt(u.ID, 10), "username": "alice", "ver": u.TokenVersion, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	}
	without := func(key string) jwt.MapClaims { c := valid(); delete(c, key); return c }
	withClaim := func(key string, v any) jwt.MapClaims { c := valid(); c[key] = v; return c }
	id := strconv.FormatInt(u.ID, 10)

	// Signed with the key and only just within the rules: accepted.
	for _, tt := range []struct {
		name   string
		claims jwt.MapClaims
	}{
		{"as issued", valid()},
		{"iat within the clock skew", withClaim("iat", now.Add(maxTokenClockSkew).Unix())},
		{"iat with a fraction", withClaim("iat", float64(now.Unix())+0.5)},
		{"no username", without("username")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts.request(t, "GET", "/api/v1/me", "", bearer(sign(jwt.SigningMethodHS256, secret, tt.claims))...).mustStatus(t, "GET /api/v1/me", http.StatusOK)
		})
	}

	for _, tt := range []struct {
		name       string
		header     string
		wantDetail string
	}{
		{"no header", "", "Not authenticated"},
		{"basic scheme", "Basic YWxpY2U6cGFzc3dvcmQx", "Not authenticated"},
		{"bearer without token", "Bearer ", "Not authenticated"},
		{"garbage", "Bearer not.a.jwt", "Could not validate credentials"},
		{"alg none", "Bearer " + sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, valid()), "Could not validate credentials"},
		{"another key", "Bearer " + sign(jwt.SigningMethodHS256, []byte(strings.Repeat("x", 32)), valid()), "Could not validate credentials"},
		{"another HS algorithm", "Bearer " + sign(jwt.SigningMethodHS512, secret, valid()), "Could not validate credentials"},
		{"no exp", "Bearer " + sign(jwt.SigningMethodHS256, secret, without("exp")), "Could not validate credentials"},
		{"expired", "Bearer " + sign(jwt.SigningMethodHS256, secret, withClaim("exp", now.Add(-time.Minute).Unix())), "Token expired"},
		{"no sub", "Bearer " + sign(jwt.SigningMethodHS256, secret, without("sub")), "Could not validate credentials"},
		{"unknown user", "Bearer " + sign(jwt.SigningMethodHS256, secret, withClaim("sub", "999999")), "Could not validate credentials"},
		{"non-numeric sub", "Bearer " + sign(jwt.SigningMethodHS256, secret, withClaim("sub", "alice")), "Could not validate credentials"},
		// Claims issueToken never writes, though signed with the key.
		{"sub with a plus", "Bearer " + sign(jwt.SigningMethodHS256, secret, withClaim("sub", "+"+id)), "Could not validate credentials"},
		{"sub with a leading zero", "Bearer " + sign(jwt.SigningMethodHS256, secret, withClaim("sub", "0"+id)), "Could not validate credentials"},
		{"sub with a space", "Bearer " + sign(jwt.SigningMethodHS256, secret, withClaim("sub", " "+id)), "Could not validate credentials"},
		{"sub as a decimal", "Bearer " + sign(jwt.SigningMethodHS256, secret, withClaim("sub", id+".0")), "Could not validate credentials"},
		{"sub as a number", "Bearer " + sign(jwt.SigningMethodHS256, secret, withClaim("sub", u.ID)), "Could not validate credentials"},
		{"no iat", "Bearer " + sign(jwt.SigningMethodHS256, secret, without("iat")), "Could not validate credentials"},
		{"iat as a string", "Bearer " + sign(jwt.SigningMethodHS256, secret, withClaim("iat", strconv.FormatInt(now.Unix(), 10))), "Could not validate credentials"},
		{"iat in the future", "Bearer " + sign(jwt.SigningMethodHS256, secret, withClaim("iat", now.Add(maxTokenClockSkew+time.Second).Unix())), "Could not validate credentials"},
		{"iat null", "Bearer " + sign(jwt.SigningMethodHS256, secret, withClaim("iat", nil)), "Could not validate credentials"},
		{"exp as a string", "Bearer " + sign(jwt.SigningMethodHS256, secret, withClaim("exp", strconv.FormatInt(now.Add(time.Hour).Unix(), 10))), "Could not validate credentials"},
		{"no ver", "Bearer " + sign(jwt.SigningMethodHS256, secret, without("ver")), "Could not validate credentials"},
		{"ver as a string", "Bearer " + sign(jwt.SigningMethodHS256, secret, withClaim("ver", "0")), "Could not validate credentials"},
		{"ver with a fraction", "Bearer " + sign(jwt.SigningMethodHS256, secret, withClaim("ver", 0.5)), "Could not validate credentials"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := ts.request(t, "GET", "/api/v1/me", "", "Authorization", tt.header)
			r.mustStatus(t, "GET /api/v1/me", http.StatusUnauthorized)
			if d := r.detail(t); d != tt.wantDetail {
				t.Errorf("detail = %v, want %q", d, tt.wantDetail)
			}
			if got := r.header.Get("WWW-Authenticate"); got != "Bearer" {
				t.Errorf("WWW-Authenticate = %q, want Bearer", got)
			}
		})
	}

	t.Run("issued token claims", func(t *testing.T) {
		claims := jwt.MapClaims{}
		if _, _, err := jwt.NewParser().ParseUnverified(token, claims); err != nil {
			t.Fatal(err)
		}
		if claims["sub"] != strconv.FormatInt(u.ID, 10) || claims["username"] != "alice" || claims["iat"] == nil {
			t.Errorf("claims = %v, want sub, username, iat", claims)
		}
		if exp, _ := claims["exp"].(float64); int64(exp) != now.Add(time.Hour).Unix() {
			t.Errorf("exp = %v, want iat + ACCESS_TOKEN_EXPIRE_MINUTES", claims["exp"])
		}
	})

	t.Run("token expires on the clock", func(t *testing.T) {
		ts.request(t, "GET", "/api/v1/me", "", bearer(token)...).mustStatus(t, "fresh token", http.StatusOK)
		ts.clock.Advance(61 * time.Minute)
		defer ts.clock.Advance(-61 * time.Minute)
		r := ts.request(t, "GET", "/api/v1/me", "", bearer(token)...)
		r.mustStatus(t, "old token", http.StatusUnauthorized)
		if d := r.detail(t); d != "Token expired" {
			t.Errorf("detail = %v, want Token expired", d)
		}
	})

	t.Run("deleted user", func(t *testing.T) {
		other := ts.register(t, "bob", "password2")
		if _, err := ts.st.db.Exec(`DELETE FROM users WHERE username = 'bob'`); err != nil {
			t.Fatal(err)
		}
		r := ts.request(t, "GET", "/api/v1/me", "", bearer(other)...)
		r.mustStatus(t, "deleted user's token", http.StatusUnauthorized)
	})
}

// legacyHash makes a hash the way the original service stored them.
func legacyHash(password string) string {
	salt := make([]byte, 16)
	rand.Read(salt)
	key := argon2.IDKey([]byte(password), salt, 3, 65536, 4, 32)
	b64 := base64.RawStdEncoding
	return "$argon2id$v=19$m=65536,t=3,p=4$" + b64.EncodeToString(salt) + "$" + b64.EncodeToString(key)
}

func TestPasswords(t *testing.T) {
	p, err := newPasswords()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	hash, err := p.hash(ctx, "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(hash, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Errorf("hash = %q, want OWASP parameters in PHC form", hash)
	}
	old := legacyHash("admin123")
	for _, tt := range []struct {
		name, password, hash string
		want                 bool
	}{
		{"new hash, right password", "correct horse", hash, true},
		{"new hash, wrong password", "correct horsE", hash, false},
		{"legacy hash, right password", "admin123", old, true},
		{"legacy hash, wrong password", "admin124", old, false},
		{"bcrypt hash", "admin123", "$2b$12$abcdefghijklmnopqrstuu5zZxkP4E1eKSYbqGNL2GZl7/bF4hxfi", false},
		{"argon2i", "admin123", strings.Replace(old, "argon2id", "argon2i", 1), false},
		{"absurd memory", "admin123", strings.Replace(old, "m=65536", "m=99999999", 1), false},
		{"empty", "admin123", "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := p.verify(ctx, tt.password, tt.hash)
			if err != nil || got != tt.want {
				t.Errorf("verify = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

// TestLoginMultipart logs in with a multipart/form-data body, as some
// OAuth2 password-flow clients send it: the same fields, limit and
// validation as the urlencoded form.
func TestLoginMultipart(t *testing.T) {
	ts := newTestServer(t)
	ts.register(t, "admin", "admin123")
	type part struct{ name, value, filename string }
	form := func(parts ...part) (string, string) {
		var b bytes.Buffer
		mw := multipart.NewWriter(&b)
		for _, p := range parts {
			var pw io.Writer
			var err error
			if p.filename != "" {
				pw, err = mw.CreateFormFile(p.name, p.filename)
			} else {
				pw, err = mw.CreateFormField(p.name)
			}
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(pw, p.value)
		}
		mw.Close()
		return mw.FormDataContentType(), b.String()
	}

	t.Run("OAuth2 password grant", func(t *testing.T) {
		contentType, body := form(part{"grant_type", "password", ""}, part{"username", "admin", ""},
			part{"password", "admin123", ""}, part{"scope", "", ""}, part{"username", "ignored", ""})
		r := ts.request(t, "POST", "/api/v1/login", body, "Content-Type", contentType).mustStatus(t, "multipart login", http.StatusOK)
		var tok map[string]string
		r.json(t, &tok)
		if tok["token_type"] != "bearer" || tok["access_token"] == "" {
			t.Fatalf("login body = %v, want a bearer token", tok)
		}
		var me map[string]any
		ts.request(t, "GET", "/api/v1/me", "", bearer(tok["access_token"])...).mustStatus(t, "me", http.StatusOK).json(t, &me)
		if me["username"] != "admin" {
			t.Errorf("me = %v, want username admin", me)
		}
	})

	t.Run("wrong password", func(t *testing.T) {
		contentType, body := form(part{"username", "admin", ""}, part{"password", "admin124", ""})
		r := ts.request(t, "POST", "/api/v1/login", body, "Content-Type", contentType).mustStatus(t, "multipart login", http.StatusUnauthorized)
		if d := r.detail(t); d != "Incorrect username or password" {
			t.Errorf("detail = %v, want Incorrect username or password", d)
		}
	})

	for _, tt := range []struct {
		name      string
		parts     []part
		wantTypes []string
	}{
		{"missing username", []part{{"password", "admin123", ""}}, []string{"missing@body.username"}},
		{"nothing", nil, []string{"missing@body.username", "missing@body.password"}},
		{"username as a file", []part{{"username", "admin", "name.txt"}, {"password", "admin123", ""}}, []string{"string_type@body.username"}},
		{"invalid UTF-8", []part{{"username", "adm\xffin", ""}, {"password", "admin123", ""}}, []string{"string_unicode@body.username"}},
		{"NUL", []part{{"username", "admin", ""}, {"password", "admin\x00123", ""}}, []string{"string_unicode@body.password"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			contentType, body := form(tt.parts...)
			ts.request(t, "POST", "/api/v1/login", body, "Content-Type", contentType).mustProblems(t, "multipart login", tt.wantTypes...)
		})
	}

	for _, tt := range []struct{ name, contentType, body string }{
		{"no boundary", "multipart/form-data", "--x\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nadmin\r\n--x--\r\n"},
		{"another boundary", "multipart/form-data; boundary=y", "--x\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nadmin\r\n--x--\r\n"},
		{"cut short", "multipart/form-data; boundary=x", "--x\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nadmin"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts.request(t, "POST", "/api/v1/login", tt.body, "Content-Type", tt.contentType).mustProblems(t, "multipart login", "value_error@body")
		})
	}

	t.Run("over 1 MiB", func(t *testing.T) {
		contentType, body := form(part{"username", "admin", ""}, part{"password", strings.Repeat("x", maxBodyBytes), ""})
		r := ts.request(t, "POST", "/api/v1/login", body, "Content-Type", contentType).mustStatus(t, "multipart login", http.StatusRequestEntityTooLarge)
		if d := r.detail(t); d != "Request body too large" {
			t.Errorf("detail = %v, want Request body too large", d)
		}
	})
}
