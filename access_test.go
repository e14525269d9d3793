package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// team is a server with one user of each role; the admin registered first.
type team struct {
	*testServer
	tokens map[string]string // role -> JWT
	ids    map[string]int64  // role -> user id
}

func newTeam(t *testing.T, adjust ...func(*config)) *team {
	t.Helper()
	ts := newTestServer(t, adjust...)
	tm := &team{testServer: ts, tokens: map[string]string{}, ids: map[string]int64{}}
	tm.tokens["admin"] = ts.register(t, "root", "password-admin")
	for _, role := range []string{"responder", "viewer"} {
		tm.createUser(t, role+"1", role)
		tm.tokens[role] = ts.login(t, role+"1", "password-"+role)
	}
	for role, tok := range tm.tokens {
		var me struct {
			ID   int64  `json:"id"`
			Role string `json:"role"`
		}
		ts.request(t, "GET", "/api/v1/me", "", bearer(tok)...).mustStatus(t, "me", 200).json(t, &me)
		if me.Role != role {
			t.Fatalf("%s's /me role = %q", role, me.Role)
		}
		tm.ids[role] = me.ID
	}
	return tm
}

// createUser has the admin create a user whose password is "password-"+role.
func (tm *team) createUser(t *testing.T, name, role string) userView {
	t.Helper()
	var u userView
	tm.request(t, "POST", "/api/v1/users", fmt.Sprintf(`{"username":%q,"password":"password-%s","role":%q}`, name, role, role),
		bearer(tm.tokens["admin"])...).mustStatus(t, "create "+name, http.StatusCreated).json(t, &u)
	if u.Username != name || u.Role != role || u.Disabled {
		t.Fatalf("created user = %+v", u)
	}
	return u
}

// reportAsAdmin creates an incident as the admin, which works in private mode too.
func (tm *team) reportAsAdmin(t *testing.T, title string) incident {
	t.Helper()
	var inc incident
	tm.request(t, "POST", "/api/v1/incidents", fmt.Sprintf(`{"title":%q,"description":"d","severity":"low"}`, title),
		bearer(tm.tokens["admin"])...).mustStatus(t, "report "+title, http.StatusCreated).json(t, &inc)
	return inc
}

// newKey creates an API key for the holder of token.
func (tm *team) newKey(t *testing.T, token, name string, scopes ...string) (id int64, key string) {
	t.Helper()
	var out struct {
		ID  int64  `json:"id"`
		Key string `json:"key"`
	}
	body := fmt.Sprintf(`{"name":%q,"scopes":["%s"]}`, name, strings.Join(scopes, `","`))
	tm.request(t, "POST", "/api/v1/api-keys", body, bearer(token)...).mustStatus(t, "create key "+name, http.StatusCreated).json(t, &out)
	return out.ID, out.Key
}

// call is one route called in a way that passes validation only if the
// caller got through access control: 422 (or a route's own answer) means
// "let in".
type call struct {
	method, path, body string
}

func (tm *team) routeCalls(incidentID int64) map[string]call {
	inc := fmt.Sprintf("/api/v1/incidents/%d", incidentID)
	return map[string]call{
		"me":            {"GET", "/api/v1/me", ""},
		"password":      {"PATCH", "/api/v1/me/password", `{}`},
		"users.create":  {"POST", "/api/v1/users", `{}`},
		"users.list":    {"GET", "/api/v1/users", ""},
		"users.update":  {"PATCH", fmt.Sprintf("/api/v1/users/%d", tm.ids["viewer"]), `{}`},
		"audit":         {"GET", "/api/v1/audit", ""},
		"keys.create":   {"POST", "/api/v1/api-keys", `{}`},
		"keys.list":     {"GET", "/api/v1/api-keys", ""},
		"keys.revoke":   {"DELETE", "/api/v1/api-keys/999999", ""},
		"ticket":        {"POST", "/api/v1/stream-tickets", ""},
		"create":        {"POST", "/api/v1/incidents", `{}`},
		"list":          {"GET", "/api/v1/incidents", ""},
		"stats":         {"GET", "/api/v1/incidents/stats", ""},
		"get":           {"GET", inc, ""},
		"acknowledge":   {"PATCH", inc + "/acknowledge", `{"note":5}`},
		"unacknowledge": {"PATCH", inc + "/unacknowledge", `{"note":5}`},
		"resolve":       {"PATCH", inc + "/resolve", `{"note":5}`},
		"reopen":        {"PATCH", inc + "/reopen", `{"note":5}`},
		"note":          {"POST", inc + "/notes", `{}`},
		"notes":         {"GET", inc + "/notes", ""},
		"timeline":      {"GET", inc + "/events", ""},
	}
}

// letIn is the status each call gets once access control lets it in.
var letIn = map[string]int{
	"me": 200, "password": 422, "users.create": 422, "users.list": 200, "users.update": 422, "audit": 200,
	"keys.create": 422, "keys.list": 200, "keys.revoke": 404, "ticket": 201,
	"create": 422, "list": 200, "stats": 200, "get": 200, "acknowledge": 422, "unacknowledge": 422,
	"resolve": 422, "reopen": 422, "note": 422, "notes": 200, "timeline": 200,
}

// checkMatrix calls every route as each caller and compares the status with
// want[route][caller] ("in" meaning letIn), reporting every mismatch.
func (tm *team) checkMatrix(t *testing.T, callers map[string][]string, want map[string]map[string]any) {
	t.Helper()
	inc := tm.reportAsAdmin(t, "matrix")
	calls := tm.routeCalls(inc.ID)
	if len(calls) != len(want) {
		t.Fatalf("matrix has %d routes, want table %d", len(calls), len(want))
	}
	for name, c := range calls {
		for caller, headers := range callers {
			exp, ok := want[name][caller]
			if !ok {
				t.Fatalf("no expectation for %s as %s", name, caller)
			}
			status, detail := 0, ""
			switch e := exp.(type) {
			case string: // "in"
				status = letIn[name]
			case int:
				status = e
				detail = map[int]string{401: "Not authenticated", 403: "Insufficient permissions"}[e]
			}
			r := tm.request(t, c.method, c.path, c.body, headers...)
			if r.status != status {
				t.Errorf("%s %s as %s: status %d, want %d; body %s", c.method, c.path, caller, r.status, status, r.body)
				continue
			}
			if detail != "" && !strings.HasPrefix(fmt.Sprint(r.detail(t)), detail) {
				t.Errorf("%s %s as %s: detail %q, want %q", c.method, c.path, caller, r.detail(t), detail)
			}
		}
	}
}

func (tm *team) roleCallers() map[string][]string {
	return map[string][]string{
		"anonymous": nil,
		"viewer":    bearer(tm.tokens["viewer"]),
		"responder": bearer(tm.tokens["responder"]),
		"admin":     bearer(tm.tokens["admin"]),
	}
}

func TestRoleMatrix(t *testing.T) {
	const in = "in"
	everyone := map[string]any{"anonymous": in, "viewer": in, "responder": in, "admin": in}
	signedIn := map[string]any{"anonymous": 401, "viewer": in, "responder": in, "admin": in}
	responders := map[string]any{"anonymous": 401, "viewer": 403, "responder": in, "admin": in}
	admins := map[string]any{"anonymous": 401, "viewer": 403, "responder": 403, "admin": in}
	want := map[string]map[string]any{
		"me": signedIn, "password": signedIn,
		"users.create": admins, "users.list": admins, "users.update": admins, "audit": admins,
		"keys.create": signedIn, "keys.list": signedIn, "keys.revoke": signedIn, "ticket": signedIn,
		"create": everyone, "list": everyone, "stats": everyone, "get": everyone, "notes": everyone, "timeline": everyone,
		"acknowledge": responders, "unacknowledge": responders, "resolve": responders, "reopen": responders, "note": responders,
	}
	t.Run("public", func(t *testing.T) {
		tm := newTeam(t)
		tm.checkMatrix(t, tm.roleCallers(), want)
	})
	t.Run("private", func(t *testing.T) {
		tm := newTeam(t, func(c *config) { c.publicIngest, c.publicRead = false, false })
		private := map[string]map[string]any{}
		for route, row := range want {
			private[route] = row
		}
		for _, route := range []string{"create", "list", "stats", "get", "notes", "timeline"} {
			private[route] = signedIn
		}
		tm.checkMatrix(t, tm.roleCallers(), private)
	})
}

func TestKeyScopeMatrix(t *testing.T) {
	tm := newTeam(t, func(c *config) { c.publicIngest, c.publicRead = false, false })
	callers := map[string][]string{}
	for _, scope := range []string{"incidents:read", "incidents:write", "incidents:manage"} {
		_, key := tm.newKey(t, tm.tokens["admin"], "key "+scope, scope)
		callers[scope] = bearer(key)
	}
	const in = "in"
	read := map[string]any{"incidents:read": in, "incidents:write": 403, "incidents:manage": 403}
	write := map[string]any{"incidents:read": 403, "incidents:write": in, "incidents:manage": 403}
	manage := map[string]any{"incidents:read": 403, "incidents:write": 403, "incidents:manage": in}
	anyKey := map[string]any{"incidents:read": in, "incidents:write": in, "incidents:manage": in}
	noKey := map[string]any{"incidents:read": 403, "incidents:write": 403, "incidents:manage": 403}
	want := map[string]map[string]any{
		"me": anyKey, "password": noKey,
		"users.create": noKey, "users.list": noKey, "users.update": noKey, "audit": noKey,
		"keys.create": noKey, "keys.list": noKey, "keys.revoke": noKey, "ticket": read,
		"create": write, "list": read, "stats": read, "get": read, "notes": read, "timeline": read,
		"acknowledge": manage, "unacknowledge": manage, "resolve": manage, "reopen": manage, "note": manage,
	}
	tm.checkMatrix(t, callers, want)

	// A key never has more power than its owner's role.
	r := tm.request(t, "POST", "/api/v1/api-keys", `{"name":"too much","scopes":["incidents:manage"]}`, bearer(tm.tokens["viewer"])...)
	r.mustStatus(t, "viewer asks for manage", 403)
	if got := r.detail(t); got != "Insufficient permissions: a viewer cannot grant incidents:manage" {
		t.Errorf("detail = %q", got)
	}
	_, responderKey := tm.newKey(t, tm.tokens["responder"], "ops", "incidents:manage", "incidents:read")
	inc := tm.reportAsAdmin(t, "demoted")
	tm.request(t, "PATCH", fmt.Sprintf("/api/v1/users/%d", tm.ids["responder"]), `{"role":"viewer"}`, bearer(tm.tokens["admin"])...).mustStatus(t, "demote", 200)
	tm.patch(t, inc.ID, "acknowledge", responderKey, "").mustStatus(t, "demoted owner's key", 403)
}

func TestAPIKeyLifecycle(t *testing.T) {
	tm := newTeam(t, func(c *config) { c.publicIngest, c.publicRead = false, false })
	tok := tm.tokens["responder"]

	r := tm.request(t, "POST", "/api/v1/api-keys", `{"name":"nagios","scopes":["incidents:write","incidents:manage","incidents:write"],"expires_in_days":30}`, bearer(tok)...)
	r.mustStatus(t, "create key", 201)
	if r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", r.header.Get("Cache-Control"))
	}
	var created struct {
		ID        int64      `json:"id"`
		Name      string     `json:"name"`
		Scopes    []string   `json:"scopes"`
		Key       string     `json:"key"`
		CreatedAt time.Time  `json:"created_at"`
		ExpiresAt *time.Time `json:"expires_at"`
	}
	r.json(t, &created)
	now := tm.clock.Now()
	if created.Name != "nagios" || fmt.Sprint(created.Scopes) != "[incidents:manage incidents:write]" || !strings.HasPrefix(created.Key, "ik_") ||
		len(created.Key) != 3+43 || !created.CreatedAt.Equal(now) || created.ExpiresAt == nil || !created.ExpiresAt.Equal(now.Add(30*24*time.Hour)) {
		t.Fatalf("created = %+v", created)
	}

	// Only a SHA-256 of the key is stored.
	var stored []byte
	if err := tm.st.db.QueryRow(`SELECT key_hash FROM api_keys WHERE id = $1`, created.ID).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(created.Key))
	if !bytes.Equal(stored, sum[:]) {
		t.Error("key_hash is not the SHA-256 of the key")
	}
	var leaks int
	if err := tm.st.db.QueryRow(`SELECT count(*) FROM api_keys k WHERE position($1 in k::text) > 0`, created.Key[3:]).Scan(&leaks); err != nil {
		t.Fatal(err)
	}
	if leaks != 0 {
		t.Error("the key's secret is stored in clear")
	}

	// Using it: actions are attributed to the owner and the key.
	r = tm.request(t, "POST", "/api/v1/incidents", `{"title":"disk","description":"d","severity":"high"}`, bearer(created.Key)...)
	var inc incident
	r.mustStatus(t, "report with key", 201).json(t, &inc)
	tm.patch(t, inc.ID, "acknowledge", created.Key, "").mustStatus(t, "ack with key", 200)
	var timeline []eventView
	tm.request(t, "GET", fmt.Sprintf("/api/v1/incidents/%d/events", inc.ID), "", bearer(tok)...).mustStatus(t, "timeline", 200).json(t, &timeline)
	if len(timeline) != 2 {
		t.Fatalf("timeline has %d events", len(timeline))
	}
	for _, ev := range timeline {
		if ev.Actor == nil || ev.Actor.User != "responder1" || ev.Actor.APIKey != "nagios" {
			t.Errorf("%s actor = %+v, want responder1 through nagios", ev.Type, ev.Actor)
		}
	}

	// The list shows it without the secret, with its last use.
	var keys []map[string]any
	r = tm.request(t, "GET", "/api/v1/api-keys", "", bearer(tok)...).mustStatus(t, "list keys", 200)
	r.json(t, &keys)
	if len(keys) != 1 || keys[0]["name"] != "nagios" || keys[0]["last_used_at"] == nil || keys[0]["key"] != nil {
		t.Fatalf("keys = %v", keys)
	}
	if bytes.Contains(r.body, []byte(created.Key[3:])) {
		t.Error("the list shows the secret")
	}
	// Another user neither sees nor revokes it.
	var others []map[string]any
	tm.request(t, "GET", "/api/v1/api-keys", "", bearer(tm.tokens["viewer"])...).mustStatus(t, "other's list", 200).json(t, &others)
	if len(others) != 0 {
		t.Errorf("viewer sees %v", others)
	}
	r = tm.request(t, "DELETE", fmt.Sprintf("/api/v1/api-keys/%d", created.ID), "", bearer(tm.tokens["viewer"])...)
	if r.mustStatus(t, "revoke other's", 404); r.detail(t) != "API key not found" {
		t.Errorf("detail = %q", r.detail(t))
	}

	// Revoked: refused at once.
	tm.request(t, "DELETE", fmt.Sprintf("/api/v1/api-keys/%d", created.ID), "", bearer(tok)...).mustStatus(t, "revoke", 204)
	r = tm.request(t, "GET", "/api/v1/incidents", "", bearer(created.Key)...)
	if r.mustStatus(t, "revoked key", 401); r.detail(t) != "API key revoked" {
		t.Errorf("detail = %q", r.detail(t))
	}
	tm.request(t, "DELETE", fmt.Sprintf("/api/v1/api-keys/%d", created.ID), "", bearer(tok)...).mustStatus(t, "revoke again", 404)

	// Expired: refused from the second it expires.
	_, short := tm.newKey(t, tok, "short", "incidents:read")
	tm.request(t, "POST", "/api/v1/api-keys", `{"name":"day","scopes":["incidents:read"],"expires_in_days":1}`, bearer(tok)...).mustStatus(t, "day key", 201).json(t, &created)
	tm.request(t, "GET", "/api/v1/incidents", "", bearer(created.Key)...).mustStatus(t, "fresh key", 200)
	tm.clock.Advance(24 * time.Hour)
	r = tm.request(t, "GET", "/api/v1/incidents", "", bearer(created.Key)...)
	if r.mustStatus(t, "expired key", 401); r.detail(t) != "API key expired" {
		t.Errorf("detail = %q", r.detail(t))
	}
	tm.request(t, "GET", "/api/v1/incidents", "", bearer(short)...).mustStatus(t, "key without expiry", 200)

	// A key that never existed, even on a public route, is refused.
	r = newTestServer(t).request(t, "GET", "/api/v1/incidents", "", bearer("ik_nope")...)
	if r.mustStatus(t, "unknown key", 401); r.detail(t) != "Invalid API key" {
		t.Errorf("detail = %q", r.detail(t))
	}
}

func TestAPIKeyValidation(t *testing.T) {
	tm := newTeam(t)
	tok := tm.tokens["admin"]
	for _, tt := range []struct {
		body string
		loc  string
		msg  string
	}{
		{`{"scopes":["incidents:read"]}`, "name", "Field required"},
		{`{"name":"  ","scopes":["incidents:read"]}`, "name", ""},
		{`{"name":"x"}`, "scopes", "Field required"},
		{`{"name":"x","scopes":"incidents:read"}`, "scopes", "Input should be a valid list of strings"},
		{`{"name":"x","scopes":[]}`, "scopes", "List should have at least 1 item"},
		{`{"name":"x","scopes":["admin"]}`, "scopes.0", "Input should be 'incidents:read', 'incidents:write' or 'incidents:manage'"},
		{`{"name":"x","scopes":["incidents:read"],"expires_in_days":0}`, "expires_in_days", "Input should be greater than or equal to 1"},
		{`{"name":"x","scopes":["incidents:read"],"expires_in_days":3651}`, "expires_in_days", "Input should be less than or equal to 3650"},
		{`{"name":"x","scopes":["incidents:read"],"expires_in_days":"7"}`, "expires_in_days", "Input should be a valid integer"},
	} {
		r := tm.request(t, "POST", "/api/v1/api-keys", tt.body, bearer(tok)...).mustStatus(t, tt.body, 422)
		var body struct {
			Detail []fieldError `json:"detail"`
		}
		r.json(t, &body)
		if len(body.Detail) == 0 || strings.Join(body.Detail[0].Loc, ".") != "body."+tt.loc || (tt.msg != "" && body.Detail[0].Msg != tt.msg) {
			t.Errorf("%s: detail = %+v, want %s: %q", tt.body, body.Detail, tt.loc, tt.msg)
		}
	}
}

func TestFirstUserIsAdminAndClosedRegistration(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.registrationOpen = false })
	// The first user may register even when registration is closed.
	first := ts.register(t, "founder", "password-1")
	r := ts.request(t, "POST", "/api/v1/register", `{"username":"second","password":"password-2"}`)
	if r.mustStatus(t, "closed registration", 403); r.detail(t) != "Registration is closed" {
		t.Errorf("detail = %q", r.detail(t))
	}
	var me map[string]any
	ts.request(t, "GET", "/api/v1/me", "", bearer(first)...).mustStatus(t, "me", 200).json(t, &me)
	if me["role"] != "admin" || me["username"] != "founder" {
		t.Errorf("me = %v", me)
	}
	// The admin adds users instead.
	ts.request(t, "POST", "/api/v1/users", `{"username":"second","password":"password-2","role":"viewer"}`, bearer(first)...).mustStatus(t, "admin creates", 201)
	ts.login(t, "second", "password-2")
	r = ts.request(t, "POST", "/api/v1/users", `{"username":"SECOND","password":"password-2","role":"viewer"}`, bearer(first)...)
	if r.mustStatus(t, "duplicate", 409); r.detail(t) != "Username already registered" {
		t.Errorf("detail = %q", r.detail(t))
	}
	r = ts.request(t, "POST", "/api/v1/users", `{"username":"third","password":"password-3","role":"owner"}`, bearer(first)...).mustStatus(t, "bad role", 422)
	if !strings.Contains(string(r.body), `"loc":["body","role"]`) {
		t.Errorf("body = %s", r.body)
	}

	// With open registration, later users are responders; a race of first
	// registrations makes exactly one admin.
	open := newTestServer(t)
	if count := statusCounts(inParallel(t, 5, func(t testing.TB, i int) response {
		return open.request(t, "POST", "/api/v1/register", fmt.Sprintf(`{"username":"racer%d","password":"password-x"}`, i))
	})); count[201] != 5 {
		t.Errorf("racing registrations = %v, want 5 × 201", count)
	}
	var admins, responders int
	open.st.db.QueryRow(`SELECT count(*) FILTER (WHERE role = 'admin'), count(*) FILTER (WHERE role = 'responder') FROM users`).Scan(&admins, &responders)
	if admins != 1 || responders != 4 {
		t.Errorf("admins = %d, responders = %d; want 1 and 4", admins, responders)
	}
}

func TestUserAdministration(t *testing.T) {
	tm := newTeam(t, func(c *config) { c.publicRead = false })
	admin := bearer(tm.tokens["admin"])
	_, viewerKey := tm.newKey(t, tm.tokens["viewer"], "dash", "incidents:read")

	var users []userView
	r := tm.request(t, "GET", "/api/v1/users?limit=2", "", admin...).mustStatus(t, "list", 200)
	r.json(t, &users)
	if len(users) != 2 || users[0].Username != "root" || users[0].Role != "admin" || users[1].Username != "responder1" {
		t.Fatalf("page 1 = %+v", users)
	}
	if link := r.header.Get("Link"); !strings.Contains(link, fmt.Sprintf("after=%d", users[1].ID)) || !strings.Contains(link, `rel="next"`) {
		t.Errorf("Link = %q", link)
	}
	tm.request(t, "GET", fmt.Sprintf("/api/v1/users?limit=2&after=%d", users[1].ID), "", admin...).mustStatus(t, "page 2", 200).json(t, &users)
	if len(users) != 1 || users[0].Username != "viewer1" {
		t.Fatalf("page 2 = %+v", users)
	}
	tm.request(t, "GET", "/api/v1/users?limit=0", "", admin...).mustStatus(t, "bad limit", 422)

	// Disabling cuts off the user's token and keys at once, and login.
	viewerURL := fmt.Sprintf("/api/v1/users/%d", tm.ids["viewer"])
	var u userView
	tm.request(t, "PATCH", viewerURL, `{"disabled":true}`, admin...).mustStatus(t, "disable", 200).json(t, &u)
	if !u.Disabled || u.Role != "viewer" {
		t.Errorf("disabled user = %+v", u)
	}
	for what, headers := range map[string][]string{"token": bearer(tm.tokens["viewer"]), "key": bearer(viewerKey)} {
		r := tm.request(t, "GET", "/api/v1/incidents", "", headers...)
		if r.mustStatus(t, "disabled user's "+what, 401); r.detail(t) != "Account disabled" {
			t.Errorf("%s: detail = %q", what, r.detail(t))
		}
	}
	r = tm.request(t, "POST", "/api/v1/login", `{"username":"viewer1","password":"password-viewer"}`)
	if r.mustStatus(t, "disabled login", 401); r.detail(t) != "Account disabled" {
		t.Errorf("detail = %q", r.detail(t))
	}
	r = tm.request(t, "POST", "/api/v1/login", `{"username":"viewer1","password":"wrong-password"}`)
	if r.mustStatus(t, "disabled, wrong password", 401); r.detail(t) != "Incorrect username or password" {
		t.Errorf("a wrong password must not tell the account is disabled: %q", r.detail(t))
	}
	tm.request(t, "PATCH", viewerURL, `{"disabled":false,"role":"responder"}`, admin...).mustStatus(t, "enable", 200).json(t, &u)
	if u.Disabled || u.Role != "responder" {
		t.Errorf("enabled user = %+v", u)
	}
	tm.request(t, "GET", "/api/v1/incidents", "", bearer(viewerKey)...).mustStatus(t, "key works again", 200)

	for _, tt := range []struct{ body, want string }{
		{`{}`, "Field required: role or disabled"},
		{`{"role":"boss"}`, "Input should be 'viewer', 'responder' or 'admin'"},
		{`{"disabled":"yes"}`, "Input should be a valid boolean"},
		{`{"disabled":null}`, "Input should be a valid boolean"},
	} {
		r := tm.request(t, "PATCH", viewerURL, tt.body, admin...).mustStatus(t, tt.body, 422)
		if !strings.Contains(string(r.body), tt.want) {
			t.Errorf("%s: body %s, want %q", tt.body, r.body, tt.want)
		}
	}
	r = tm.request(t, "PATCH", "/api/v1/users/999999", `{"role":"viewer"}`, admin...)
	if r.mustStatus(t, "unknown user", 404); r.detail(t) != "User not found" {
		t.Errorf("detail = %q", r.detail(t))
	}
}

func TestLastAdminIsProtected(t *testing.T) {
	tm := newTeam(t)
	admin := bearer(tm.tokens["admin"])
	self := fmt.Sprintf("/api/v1/users/%d", tm.ids["admin"])
	for _, body := range []string{`{"role":"responder"}`, `{"disabled":true}`} {
		r := tm.request(t, "PATCH", self, body, admin...)
		if r.mustStatus(t, body, 409); r.detail(t) != "The last active admin cannot be demoted or disabled" {
			t.Errorf("detail = %q", r.detail(t))
		}
	}
	// With two admins, demoting both at once leaves one: the second request
	// is refused by the store (409) or, if the first committed before it was
	// authorized, by access control (403).
	tm.request(t, "PATCH", fmt.Sprintf("/api/v1/users/%d", tm.ids["responder"]), `{"role":"admin"}`, admin...).mustStatus(t, "promote", 200)
	targets := []string{self, fmt.Sprintf("/api/v1/users/%d", tm.ids["responder"])}
	got := statusCounts(inParallel(t, 2, func(t testing.TB, i int) response {
		return tm.request(t, "PATCH", targets[i], `{"role":"viewer"}`, admin...)
	}))
	if got[200] != 1 || got[409]+got[403] != 1 {
		t.Errorf("statuses = %v, want one 200 and one 409 or 403", got)
	}
	var active int
	tm.st.db.QueryRow(`SELECT count(*) FROM users WHERE role = 'admin' AND NOT disabled`).Scan(&active)
	if active != 1 {
		t.Errorf("%d active admins, want 1", active)
	}
}

func TestPasswordChange(t *testing.T) {
	ts := newTestServer(t)
	old := ts.register(t, "alice", "password-1")
	tm := &team{testServer: ts}
	_, key := tm.newKey(t, old, "bot", "incidents:read")
	r := ts.request(t, "PATCH", "/api/v1/me/password", `{"current_password":"wrong-one","new_password":"password-2"}`, bearer(old)...)
	if r.mustStatus(t, "wrong current", 403); r.detail(t) != "Current password is incorrect" {
		t.Errorf("detail = %q", r.detail(t))
	}
	ts.request(t, "PATCH", "/api/v1/me/password", `{"current_password":"password-1","new_password":"short"}`, bearer(old)...).mustStatus(t, "short", 422)
	r = ts.request(t, "PATCH", "/api/v1/me/password", `{"current_password":"password-1","new_password":"password-2"}`, bearer(old)...)
	r.mustStatus(t, "change", 200)
	if r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control = %q", r.header.Get("Cache-Control"))
	}
	// Tokens from before stop working, even within the same second; keys
	// are separate credentials and keep working.
	r = ts.request(t, "GET", "/api/v1/me", "", bearer(old)...)
	if r.mustStatus(t, "old token", 401); r.detail(t) != "Token revoked; log in again" {
		t.Errorf("detail = %q", r.detail(t))
	}
	ts.request(t, "GET", "/api/v1/me", "", bearer(key)...).mustStatus(t, "key", 200)
	ts.request(t, "POST", "/api/v1/login", `{"username":"alice","password":"password-1"}`).mustStatus(t, "old password", 401)
	fresh := ts.login(t, "alice", "password-2")
	ts.request(t, "GET", "/api/v1/me", "", bearer(fresh)...).mustStatus(t, "new token", 200)
	// An API key cannot change the password.
	r = ts.request(t, "PATCH", "/api/v1/me/password", `{"current_password":"password-2","new_password":"password-3"}`, bearer(key)...)
	if r.mustStatus(t, "with key", 403); r.detail(t) != "Insufficient permissions: sign in; API keys cannot be used here" {
		t.Errorf("detail = %q", r.detail(t))
	}
}

// A JWT that no longer validates is ignored where anyone may call, as the
// original service ignored it; elsewhere it is refused.
func TestExpiredTokenOnPublicRoutes(t *testing.T) {
	ts := newTestServer(t)
	tok := ts.register(t, "alice", "password-1")
	ts.clock.Advance(2 * time.Hour)
	ts.request(t, "GET", "/api/v1/incidents", "", bearer(tok)...).mustStatus(t, "public list", 200)
	ts.request(t, "POST", "/api/v1/incidents", `{"title":"t","description":"d","severity":"low"}`, bearer(tok)...).mustStatus(t, "public report", 201)
	r := ts.request(t, "GET", "/api/v1/me", "", bearer(tok)...)
	if r.mustStatus(t, "me", 401); r.detail(t) != "Token expired" {
		t.Errorf("detail = %q", r.detail(t))
	}
	basic := []string{"Authorization", "Basic YWxpY2U6cGFzc3dvcmQtMQ=="}
	ts.request(t, "GET", "/api/v1/incidents", "", basic...).mustStatus(t, "Basic on a public route", 200)
	if r := ts.request(t, "GET", "/api/v1/me", "", basic...); r.status != 401 || r.detail(t) != "Not authenticated" {
		t.Errorf("Basic on /me: %d %s", r.status, r.body)
	}
}

func TestPrivateStream(t *testing.T) {
	tm := newTeam(t, func(c *config) { c.publicRead = false })
	_, readKey := tm.newKey(t, tm.tokens["viewer"], "wall", "incidents:read")
	_, writeKey := tm.newKey(t, tm.tokens["viewer"], "script", "incidents:write")

	for _, path := range []string{"/api/v1/ws", "/api/v1/events"} {
		t.Run(path, func(t *testing.T) {
			check := func(what string, wantStatus int, wantBody string, headers ...string) {
				t.Helper()
				got, body := refusal(t, tm, path, "", headers...)
				if got != wantStatus || !strings.Contains(body, wantBody) {
					t.Errorf("%s: %d %s, want %d %s", what, got, body, wantStatus, wantBody)
				}
			}
			check("no credentials", 401, `"Not authenticated"`)
			check("write-only key", 403, `"Insufficient permissions"`, bearer(writeKey)...)
			check("bad token", 401, `"Could not validate credentials"`, bearer("x.y.z")...)
			if path == "/api/v1/ws" {
				check("token", 101, "", bearer(tm.tokens["viewer"])...)
				check("read key", 101, "", bearer(readKey)...)
			} else {
				// openSSE fails the test unless the stream opens.
				openSSE(t, tm.testServer, path, bearer(tm.tokens["viewer"])...)
				openSSE(t, tm.testServer, path, bearer(readKey)...)
			}

			ticket := func(headers []string) string {
				var out struct {
					Ticket    string `json:"ticket"`
					ExpiresIn int    `json:"expires_in"`
				}
				r := tm.request(t, "POST", "/api/v1/stream-tickets", "", headers...).mustStatus(t, "ticket", 201)
				r.json(t, &out)
				if out.ExpiresIn != 30 || len(out.Ticket) < 40 || r.header.Get("Cache-Control") != "no-store" {
					t.Fatalf("ticket response %s, Cache-Control %q", r.body, r.header.Get("Cache-Control"))
				}
				return out.Ticket
			}
			tk := ticket(bearer(tm.tokens["viewer"]))
			if path == "/api/v1/ws" {
				c, hello := mustDial(t, tm.testServer, path+"?ticket="+tk)
				tm.createIncident(t, "seen through a ticket", "low")
				if got := c.readMessage(t); got.Seq != hello+1 || got.Type != "added" {
					t.Errorf("first event = %+v", got)
				}
			} else {
				sse := openSSE(t, tm.testServer, path+"?ticket="+tk)
				if ev, ok := sse.next(t); !ok || ev.event != "hello" {
					t.Fatalf("first SSE event = %+v, %v", ev, ok)
				}
				tm.createIncident(t, "seen through a ticket", "low")
				if ev, ok := sse.next(t); !ok || ev.event != "added" {
					t.Errorf("second SSE event = %+v, %v", ev, ok)
				}
			}
			got, body := refusal(t, tm, path, "ticket="+tk)
			if got != 401 || !strings.Contains(body, "Invalid or expired stream ticket") {
				t.Errorf("reused ticket: %d %s", got, body)
			}
			expiring := ticket(bearer(readKey))
			tm.clock.Advance(31 * time.Second)
			if got, body := refusal(t, tm, path, "ticket="+expiring); got != 401 || !strings.Contains(body, "Invalid or expired stream ticket") {
				t.Errorf("expired ticket: %d %s", got, body)
			}
			if got, _ := refusal(t, tm, path, "ticket=made-up"); got != 401 {
				t.Errorf("made-up ticket: %d", got)
			}
		})
	}
}

// refusal opens the stream at path with query and headers and returns the
// status and body of a refusal; a WebSocket let in is 101. Only for
// requests expected to be refused or upgraded: an SSE stream let in would
// not end.
func refusal(t *testing.T, tm *team, path, query string, headers ...string) (int, string) {
	t.Helper()
	if path == "/api/v1/ws" {
		if query != "" {
			path += "?" + query
		}
		c, resp := dialRaw(t, tm.testServer, path, headers...)
		if c != nil {
			return resp.StatusCode, ""
		}
		defer resp.Body.Close()
		var buf bytes.Buffer
		buf.ReadFrom(resp.Body)
		return resp.StatusCode, buf.String()
	}
	r := tm.request(t, "GET", path+"?since=999999999&"+query, "", headers...)
	return r.status, string(r.body)
}

func TestPrivateIngest(t *testing.T) {
	tm := newTeam(t, func(c *config) { c.publicIngest = false })
	body := `{"title":"t","description":"d","severity":"low"}`
	r := tm.request(t, "POST", "/api/v1/incidents", body)
	if r.mustStatus(t, "anonymous", 401); r.detail(t) != "Not authenticated" {
		t.Errorf("detail = %q", r.detail(t))
	}
	_, readKey := tm.newKey(t, tm.tokens["viewer"], "reader", "incidents:read")
	tm.request(t, "POST", "/api/v1/incidents", body, bearer(readKey)...).mustStatus(t, "read key", 403)
	_, writeKey := tm.newKey(t, tm.tokens["viewer"], "writer", "incidents:write")
	tm.request(t, "POST", "/api/v1/incidents", body, bearer(writeKey)...).mustStatus(t, "write key", 201)
	tm.request(t, "POST", "/api/v1/incidents", body, bearer(tm.tokens["viewer"])...).mustStatus(t, "viewer token", 201)
	// Reading stays public.
	tm.request(t, "GET", "/api/v1/incidents", "").mustStatus(t, "public read", 200)
}

func TestAuditLog(t *testing.T) {
	tm := newTeam(t)
	admin := bearer(tm.tokens["admin"])
	ip := "127.0.0.1"
	tm.request(t, "POST", "/api/v1/login", `{"username":"viewer1","password":"not-it-at-all"}`).mustStatus(t, "failed login", 401)
	tm.request(t, "POST", "/api/v1/login", `{"username":"ghost","password":"not-it-at-all"}`).mustStatus(t, "unknown user", 401)
	keyID, _ := tm.newKey(t, tm.tokens["responder"], "bot", "incidents:read")
	tm.request(t, "DELETE", fmt.Sprintf("/api/v1/api-keys/%d", keyID), "", bearer(tm.tokens["responder"])...).mustStatus(t, "revoke", 204)
	tm.request(t, "POST", "/api/v1/stream-tickets", "", bearer(tm.tokens["viewer"])...).mustStatus(t, "ticket", 201)
	tm.request(t, "PATCH", fmt.Sprintf("/api/v1/users/%d", tm.ids["viewer"]), `{"role":"responder","disabled":true}`, admin...).mustStatus(t, "change", 200)
	tm.request(t, "PATCH", fmt.Sprintf("/api/v1/users/%d", tm.ids["viewer"]), `{"disabled":false}`, admin...).mustStatus(t, "enable", 200)
	tm.request(t, "PATCH", "/api/v1/me/password", `{"current_password":"password-responder","new_password":"password-new1"}`, bearer(tm.tokens["responder"])...).mustStatus(t, "password", 200)

	var entries []auditEntry
	tm.request(t, "GET", "/api/v1/audit", "", admin...).mustStatus(t, "audit", 200).json(t, &entries)
	var got []string
	for i := len(entries) - 1; i >= 0; i-- { // oldest first, for reading
		e := entries[i]
		actor := "-"
		if e.Actor != nil {
			actor = *e.Actor
		}
		got = append(got, fmt.Sprintf("%s %s %s %s %v", e.Action, actor, e.Target, e.IP, e.Details))
		if i > 0 && entries[i-1].ID <= e.ID {
			t.Errorf("audit not newest first: %d before %d", entries[i-1].ID, e.ID)
		}
	}
	want := []string{
		"user.registered root root " + ip + " map[role:admin]",
		"login.succeeded root root " + ip + " map[]",
		"user.created root responder1 " + ip + " map[role:responder]",
		"login.succeeded responder1 responder1 " + ip + " map[]",
		"user.created root viewer1 " + ip + " map[role:viewer]",
		"login.succeeded viewer1 viewer1 " + ip + " map[]",
		"login.failed - viewer1 " + ip + " map[reason:bad_credentials username:viewer1]",
		"login.failed - ghost " + ip + " map[reason:bad_credentials username:ghost]",
		fmt.Sprintf("api_key.created responder1 api_key:%d %s map[name:bot scopes:[incidents:read]]", keyID, ip),
		fmt.Sprintf("api_key.revoked responder1 api_key:%d %s map[name:bot]", keyID, ip),
		"stream_ticket.issued viewer1 viewer1 " + ip + " map[]",
		"user.role_changed root viewer1 " + ip + " map[from:viewer to:responder]",
		"user.disabled root viewer1 " + ip + " map[]",
		"user.enabled root viewer1 " + ip + " map[]",
		"password.changed responder1 responder1 " + ip + " map[]",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("audit log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if strings.Contains(fmt.Sprint(entries), "not-it-at-all") {
		t.Error("the audit log holds a password")
	}

	// Filters and pages.
	var filtered []auditEntry
	tm.request(t, "GET", "/api/v1/audit?action=login.failed", "", admin...).mustStatus(t, "by action", 200).json(t, &filtered)
	if len(filtered) != 2 || filtered[0].Target != "ghost" {
		t.Errorf("login.failed = %+v", filtered)
	}
	tm.request(t, "GET", "/api/v1/audit?actor=ROOT", "", admin...).mustStatus(t, "by actor", 200).json(t, &filtered)
	if len(filtered) != 7 {
		t.Errorf("root's entries = %d, want 7", len(filtered))
	}
	tm.request(t, "GET", "/api/v1/audit?actor=nobody", "", admin...).mustStatus(t, "unknown actor", 200).json(t, &filtered)
	if len(filtered) != 0 {
		t.Errorf("unknown actor's entries = %+v", filtered)
	}
	r := tm.request(t, "GET", "/api/v1/audit?limit=2", "", admin...).mustStatus(t, "page", 200)
	r.json(t, &filtered)
	if len(filtered) != 2 || !strings.Contains(r.header.Get("Link"), fmt.Sprintf("before=%d", filtered[1].ID)) {
		t.Errorf("page 1 = %d entries, Link %q", len(filtered), r.header.Get("Link"))
	}
	tm.request(t, "GET", "/api/v1/audit?before=x", "", admin...).mustStatus(t, "bad before", 422)
}

// The first user of a database from before roles becomes admin at upgrade.
func TestRolesUpgrade(t *testing.T) {
	st := newTestStore(t)
	ctx := context.Background()
	if _, err := st.db.Exec(`INSERT INTO users (username, password_hashed, role) VALUES ('old1', 'x', 'responder'), ('old2', 'x', 'responder')`); err != nil {
		t.Fatal(err)
	}
	if err := st.migrate(ctx); err != nil {
		t.Fatal(err)
	}
	var admin string
	st.db.QueryRow(`SELECT string_agg(username, ',') FROM users WHERE role = 'admin'`).Scan(&admin)
	if admin != "old1" {
		t.Errorf("admins after upgrade = %q, want old1", admin)
	}
}

func TestSecurityHeaders(t *testing.T) {
	ts := newTestServer(t)
	tok := ts.register(t, "alice", "password-1")
	for _, c := range []struct {
		method, path, body string
		headers            []string
		noStore            bool
	}{
		{"GET", "/healthz", "", nil, false},
		{"GET", "/docs", "", nil, false},
		{"GET", "/nope", "", nil, false},
		{"POST", "/api/v1/incidents", `{}`, nil, false},
		{"GET", "/api/v1/users", "", nil, false},
		{"POST", "/api/v1/login", `{"username":"alice","password":"password-1"}`, nil, true},
		{"GET", "/api/v1/me", "", bearer(tok), true},
		{"GET", "/api/v1/api-keys", "", bearer(tok), true},
		{"POST", "/api/v1/stream-tickets", "", bearer(tok), true},
	} {
		r := ts.request(t, c.method, c.path, c.body, c.headers...)
		if r.header.Get("X-Content-Type-Options") != "nosniff" || r.header.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("%s %s (%d): X-Content-Type-Options %q, Referrer-Policy %q", c.method, c.path, r.status,
				r.header.Get("X-Content-Type-Options"), r.header.Get("Referrer-Policy"))
		}
		if c.noStore && r.header.Get("Cache-Control") != "no-store" {
			t.Errorf("%s %s: Cache-Control %q, want no-store", c.method, c.path, r.header.Get("Cache-Control"))
		}
	}
}

// Streams opened with credentials end when those credentials stop working,
// on every replica: the change is announced through PostgreSQL.
func TestOpenStreamsEndWhenAccessIsRevoked(t *testing.T) {
	tm := newTeam(t, func(c *config) { c.publicRead = false })
	// A second replica on the same database holds some of the streams.
	other := tm.replica(t)

	viewer := bearer(tm.tokens["viewer"])
	_, key := tm.newKey(t, tm.tokens["viewer"], "wall", "incidents:read")
	_, keptKey := tm.newKey(t, tm.tokens["viewer"], "kept", "incidents:read")
	byToken, _ := mustDial(t, tm.testServer, "/api/v1/ws", viewer...)
	byKey, _ := mustDial(t, other, "/api/v1/ws", bearer(key)...)
	byKeptKey, _ := mustDial(t, other, "/api/v1/ws", bearer(keptKey)...)
	sse := openSSE(t, other, "/api/v1/events", viewer...)
	if ev, ok := sse.next(t); !ok || ev.event != "hello" {
		t.Fatalf("SSE hello = %+v", ev)
	}
	admin, _ := mustDial(t, tm.testServer, "/api/v1/ws", bearer(tm.tokens["admin"])...)

	// A password change ends the token's streams, not the keys'.
	tm.request(t, "PATCH", "/api/v1/me/password", `{"current_password":"password-viewer","new_password":"password-viewer-2"}`, viewer...).mustStatus(t, "password", 200)
	expectRevoked(t, byToken)
	if ev, ok := sse.next(t); !ok || ev.event != "close" || !strings.Contains(ev.data, "access revoked") {
		t.Errorf("SSE after the password change: %+v, %v", ev, ok)
	}

	// Revoking a key ends that key's streams only.
	fresh := tm.login(t, "viewer1", "password-viewer-2")
	var keys []apiKey
	tm.request(t, "GET", "/api/v1/api-keys", "", bearer(fresh)...).mustStatus(t, "keys", 200).json(t, &keys)
	for _, k := range keys {
		if k.Name == "wall" {
			tm.request(t, "DELETE", fmt.Sprintf("/api/v1/api-keys/%d", k.ID), "", bearer(fresh)...).mustStatus(t, "revoke", 204)
		}
	}
	expectRevoked(t, byKey)

	// Disabling the user ends the rest; the admin's stream goes on.
	tm.request(t, "PATCH", fmt.Sprintf("/api/v1/users/%d", tm.ids["viewer"]), `{"disabled":true}`, bearer(tm.tokens["admin"])...).mustStatus(t, "disable", 200)
	expectRevoked(t, byKeptKey)
	inc := tm.reportAsAdmin(t, "after the purge")
	got := admin.readMessage(t)
	var data incident
	json.Unmarshal(got.Data, &data)
	if got.Type != "added" || data.ID != inc.ID {
		t.Errorf("admin's stream got %+v", got)
	}

	// Enabling again does not bring back the tokens from before.
	tm.request(t, "PATCH", fmt.Sprintf("/api/v1/users/%d", tm.ids["viewer"]), `{"disabled":false}`, bearer(tm.tokens["admin"])...).mustStatus(t, "enable", 200)
	if r := tm.request(t, "GET", "/api/v1/me", "", bearer(fresh)...); r.status != 401 || r.detail(t) != "Token revoked; log in again" {
		t.Errorf("token from before the disable: %d %s", r.status, r.body)
	}
}

// expectRevoked reads until the server closes the WebSocket for revoked
// access.
func expectRevoked(t *testing.T, c *rawWS) {
	t.Helper()
	for {
		op, payload, err := c.readFrame(10 * time.Second)
		if err != nil {
			t.Fatalf("waiting for the close: %v", err)
		}
		if op == wsOpClose {
			if code := closeCode(payload); code != closePolicy || !strings.Contains(string(payload), "access revoked") {
				t.Errorf("close %d %q, want 1008 access revoked", code, payload[2:])
			}
			return
		}
		if op == wsOpText {
			t.Errorf("got an event after the revocation: %s", payload)
		}
	}
}

func TestTicketEndsWithPasswordChange(t *testing.T) {
	tm := newTeam(t, func(c *config) { c.publicRead = false })
	var out struct {
		Ticket string `json:"ticket"`
	}
	tm.request(t, "POST", "/api/v1/stream-tickets", "", bearer(tm.tokens["viewer"])...).mustStatus(t, "ticket", 201).json(t, &out)
	tm.request(t, "PATCH", "/api/v1/me/password", `{"current_password":"password-viewer","new_password":"password-viewer-2"}`,
		bearer(tm.tokens["viewer"])...).mustStatus(t, "password", 200)
	if got, body := refusal(t, tm, "/api/v1/ws", "ticket="+out.Ticket); got != 401 {
		t.Errorf("ticket from before the password change: %d %s", got, body)
	}
}

func TestAPIKeyLimitUnderConcurrency(t *testing.T) {
	tm := newTeam(t)
	tok := tm.tokens["viewer"]
	for i := range maxAPIKeys - 2 {
		if _, err := tm.st.db.Exec(`INSERT INTO api_keys (user_id, name, key_hash, scopes) VALUES ($1, $2, $3, '{incidents:read}')`,
			tm.ids["viewer"], fmt.Sprint("k", i), []byte(fmt.Sprint("hash", i))); err != nil {
			t.Fatal(err)
		}
	}
	count := statusCounts(inParallel(t, 20, func(t testing.TB, _ int) response {
		return tm.request(t, "POST", "/api/v1/api-keys", `{"name":"x","scopes":["incidents:read"]}`, bearer(tok)...)
	}))
	if count[201] != 2 || count[409] != 18 {
		t.Errorf("statuses = %v, want 2 × 201 and 18 × 409", count)
	}
	var active int
	tm.st.db.QueryRow(`SELECT count(*) FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL`, tm.ids["viewer"]).Scan(&active)
	if active != maxAPIKeys {
		t.Errorf("%d active keys, want %d", active, maxAPIKeys)
	}
}

// Bad bytes in a query string or a form are a 422, never a 500.
func TestBadTextIsRefused(t *testing.T) {
	tm := newTeam(t)
	admin := bearer(tm.tokens["admin"])
	for _, path := range []string{"/api/v1/incidents?q=%ff", "/api/v1/incidents?dedup_key=%00", "/api/v1/audit?actor=%ff", "/api/v1/audit?action=a%00"} {
		r := tm.request(t, "GET", path, "", admin...).mustStatus(t, path, 422)
		if !strings.Contains(string(r.body), "UTF-8 without NUL characters") {
			t.Errorf("%s: %s", path, r.body)
		}
	}
	req, _ := http.NewRequest("POST", tm.URL+"/api/v1/login", strings.NewReader("username=%ff&password=x"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 422 {
		t.Errorf("form login with invalid UTF-8: %d, want 422", resp.StatusCode)
	}
	// Ids past the int4 range page like any other.
	tm.request(t, "GET", "/api/v1/users?after=9999999999", "", admin...).mustStatus(t, "users after a big id", 200)
	tm.request(t, "GET", "/api/v1/audit?before=9999999999", "", admin...).mustStatus(t, "audit before a big id", 200)
}

// A login with a name longer than any account's costs the same as another
// failure and keeps at most the longest possible name.
func TestLongLoginName(t *testing.T) {
	tm := newTeam(t)
	long := strings.Repeat("a", 100_000)
	tm.request(t, "POST", "/api/v1/login", fmt.Sprintf(`{"username":%q,"password":"whatever1"}`, long)).mustStatus(t, "long name", 401)
	var target string
	var size int
	tm.st.db.QueryRow(`SELECT target, length(details::text) FROM audit_log WHERE action = 'login.failed'`).Scan(&target, &size)
	if target != long[:maxUsernameLen] || size > 200 {
		t.Errorf("audit target %d chars, details %d chars; want the name cut to %d", len(target), size, maxUsernameLen)
	}
	for key := range tm.srv.limits.loginUser.keys {
		if len(key) > maxUsernameLen {
			t.Errorf("the limiter keeps a %d-character key", len(key))
		}
	}
}

// A key without incidents:write reports as anyone would where reporting is
// public: not attributed to the key, and on the anonymous bucket.
func TestKeyWithoutScopeOnPublicRoute(t *testing.T) {
	tm := newTeam(t)
	_, readKey := tm.newKey(t, tm.tokens["viewer"], "reader", "incidents:read")
	var inc incident
	tm.request(t, "POST", "/api/v1/incidents", `{"title":"t","description":"d","severity":"low"}`, bearer(readKey)...).mustStatus(t, "report", 201).json(t, &inc)
	var timeline []eventView
	tm.request(t, "GET", fmt.Sprintf("/api/v1/incidents/%d/events", inc.ID), "").mustStatus(t, "timeline", 200).json(t, &timeline)
	if len(timeline) != 1 || timeline[0].Actor != nil {
		t.Errorf("timeline = %+v, want one anonymous added event", timeline)
	}
}

func TestClosedRegistrationRefusesBeforeHashing(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.registrationOpen = false })
	ts.register(t, "founder", "password-1")
	// Far above the per-IP registration limit: refusals cost no slot.
	for i := range 15 {
		r := ts.request(t, "POST", "/api/v1/register", fmt.Sprintf(`{"username":"user%d","password":"password-2"}`, i))
		if r.status != 403 {
			t.Fatalf("attempt %d: %d %s, want 403", i, r.status, r.body)
		}
	}
}
