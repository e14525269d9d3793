package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestOpenAPIMatchesRoutes keeps openapi.json and routeList equal: every
// route documented, nothing documented that is not served.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var spec struct {
		OpenAPI    string                                `json:"openapi"`
		Info       map[string]any                        `json:"info"`
		Paths      map[string]map[string]json.RawMessage `json:"paths"`
		Components struct {
			SecuritySchemes map[string]struct {
				Type  string `json:"type"`
				Flows struct {
					Password struct {
						TokenURL string `json:"tokenUrl"`
					} `json:"password"`
				} `json:"flows"`
			} `json:"securitySchemes"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openapiJSON, &spec); err != nil {
		t.Fatalf("openapi.json is not valid JSON: %v", err)
	}
	if !strings.HasPrefix(spec.OpenAPI, "3.1.") || spec.Info["title"] == nil || spec.Info["version"] == nil {
		t.Errorf("openapi = %q, info = %v; want 3.1.x with a title and version", spec.OpenAPI, spec.Info)
	}
	passwordFlow := false
	for _, scheme := range spec.Components.SecuritySchemes {
		if scheme.Type == "oauth2" && scheme.Flows.Password.TokenURL == "/api/v1/login" {
			passwordFlow = true
		}
	}
	if !passwordFlow {
		t.Error("openapi.json has no OAuth2 password flow with tokenUrl /api/v1/login")
	}
	if s, ok := spec.Components.SecuritySchemes["ApiKey"]; !ok || s.Type != "http" {
		t.Error("openapi.json has no ApiKey security scheme (HTTP bearer, ik_ keys)")
	}

	var documented []string
	accessOf := map[string]string{} // "GET /path" -> x-access
	for path, ops := range spec.Paths {
		for method, op := range ops {
			if method == "parameters" || method == "summary" || method == "description" {
				continue
			}
			documented = append(documented, strings.ToUpper(method)+" "+path)
			var o struct {
				OperationID string                     `json:"operationId"`
				Responses   map[string]json.RawMessage `json:"responses"`
				Access      string                     `json:"x-access"`
			}
			if err := json.Unmarshal(op, &o); err != nil || o.OperationID == "" || len(o.Responses) == 0 {
				t.Errorf("%s %s: want an operationId and responses", method, path)
			}
			accessOf[strings.ToUpper(method)+" "+path] = o.Access
		}
	}
	var served []string
	for _, rt := range (&server{}).routeList() {
		method, path, _ := strings.Cut(rt.pattern, " ")
		route := method + " " + strings.TrimSuffix(path, "{$}")
		served = append(served, route)
		if got, ok := accessOf[route]; ok && got != rt.access.name {
			t.Errorf("%s: openapi.json says x-access %q, the server enforces %q", route, got, rt.access.name)
		}
	}
	slices.Sort(documented)
	slices.Sort(served)
	for _, r := range served {
		if !slices.Contains(documented, r) {
			t.Errorf("route %s is served but not in openapi.json", r)
		}
	}
	for _, d := range documented {
		if !slices.Contains(served, d) {
			t.Errorf("openapi.json documents %s, which is not served", d)
		}
	}
}

// TestOpenAPISecurityMatchesAccess keeps each operation's security
// requirements in line with what its route asks of callers: none on an
// open route, a JWT where a signed-in user is needed, a JWT or an API key
// otherwise, and also none ({}) where anonymous callers may be let in.
func TestOpenAPISecurityMatchesAccess(t *testing.T) {
	var spec struct {
		Paths map[string]map[string]struct {
			Security []map[string][]string `json:"security"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(openapiJSON, &spec); err != nil {
		t.Fatalf("openapi.json is not valid JSON: %v", err)
	}
	for _, rt := range (&server{}).routeList() {
		method, path, _ := strings.Cut(rt.pattern, " ")
		op := spec.Paths[strings.TrimSuffix(path, "{$}")][strings.ToLower(method)]
		var got, want []string
		for _, req := range op.Security {
			got = append(got, strings.Join(slices.Sorted(maps.Keys(req)), "+"))
		}
		switch {
		case rt.access.open:
		case rt.access.signedIn:
			want = []string{"OAuth2PasswordBearer", "bearerAuth"}
		default:
			want = []string{"OAuth2PasswordBearer", "bearerAuth", "ApiKey"}
		}
		if rt.access.anonymous != nil {
			want = append(want, "")
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s (x-access %s): security = %q, want %q", rt.pattern, rt.access.name, got, want)
		}
	}
}

func TestDocsPages(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.docsSwaggerJS = "/static/swagger-ui-bundle.js" })
	for _, tt := range []struct {
		path, contentType, contains string
		csp                         string
	}{
		{"/openapi.json", "application/json", `"openapi"`, ""},
		{"/api/v1/openapi.json", "application/json", `"openapi"`, ""},
		// A viewer served by the server itself needs no other source.
		{"/docs", "text/html; charset=utf-8", `src="/static/swagger-ui-bundle.js"`, "default-src 'none'; script-src 'self'; " +
			"style-src 'self' https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css 'unsafe-inline' https://fonts.googleapis.com; " +
			"font-src https://fonts.gstatic.com; img-src 'self' data:; worker-src blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"},
		{"/docs/init.js", "text/javascript; charset=utf-8", `url: "/openapi.json"`, ""},
		{"/redoc", "text/html; charset=utf-8", "redoc.standalone.js", "default-src 'none'; " +
			"script-src 'self' https://cdn.jsdelivr.net/npm/redoc@2/bundles/redoc.standalone.js; " +
			"style-src 'self' 'unsafe-inline' https://fonts.googleapis.com; font-src https://fonts.gstatic.com; img-src 'self' data:; worker-src blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"},
	} {
		r := ts.request(t, "GET", tt.path, "").mustStatus(t, "GET "+tt.path, http.StatusOK)
		if csp := r.header.Get("Content-Security-Policy"); csp != tt.csp {
			t.Errorf("GET %s Content-Security-Policy = %q, want %q", tt.path, csp, tt.csp)
		}
		if got := r.header.Get("Content-Type"); got != tt.contentType {
			t.Errorf("GET %s Content-Type = %q, want %q", tt.path, got, tt.contentType)
		}
		if !strings.Contains(string(r.body), tt.contains) {
			t.Errorf("GET %s body does not contain %q", tt.path, tt.contains)
		}
	}
}

// openAPIType is the Go side of a schema in openapi.json: the type a
// handler reads the body into or writes it from.
type openAPIType struct {
	typ reflect.Type
	// validate runs the handler's checks on a decoded request body; nil
	// for a response.
	validate func(v any) []fieldError
	// raw names the schema of a field the Go type keeps as raw JSON.
	raw map[string]string
	// ignored are properties the handler accepts and does not read.
	ignored []string
	// form: the body may also come as a form, which readLogin reads.
	form bool
}

func responseType[T any]() openAPIType { return openAPIType{typ: reflect.TypeFor[T]()} }

func requestType[T any](validate func(T) []fieldError) openAPIType {
	return openAPIType{typ: reflect.TypeFor[T](), validate: func(v any) []fieldError { return validate(*v.(*T)) }}
}

// openAPITypes maps every object schema of openapi.json to its Go type.
func openAPITypes() map[string]openAPIType {
	login := requestType(loginRequest.validate)
	form := login
	form.form, form.ignored = true, []string{"grant_type", "scope", "client_id", "client_secret"}
	event := responseType[eventView]()
	event.raw = map[string]string{"data": "Incident", "escalation": "EscalationNotice", "heartbeat": "Heartbeat"}
	return map[string]openAPIType{
		"Incident":           responseType[incident](),
		"IncidentStats":      responseType[incidentStats](),
		"ResponseTimes":      responseType[responseTimes](),
		"PeriodTimes":        responseType[periodTimes](),
		"TimeFigures":        responseType[timeFigures](),
		"Note":               responseType[note](),
		"Actor":              responseType[actorView](),
		"TimelineEvent":      event,
		"User":               responseType[userView](),
		"ApiKey":             responseType[apiKey](),
		"AuditEntry":         responseType[auditEntry](),
		"Root":               responseType[rootBody](),
		"Health":             responseType[healthBody](),
		"RegisterResponse":   responseType[registerBody](),
		"Token":              responseType[tokenBody](),
		"Me":                 responseType[meBody](),
		"Message":            responseType[messageBody](),
		"ApiKeyCreated":      responseType[apiKeyCreatedBody](),
		"StreamTicket":       responseType[streamTicketBody](),
		"ResolveResponse":    responseType[resolveBody](),
		"HTTPError":          responseType[errorBody](),
		"ValidationError":    responseType[validationBody](),
		"TransitionConflict": responseType[conflictBody](),
		"PreconditionFailed": responseType[preconditionBody](),
		"StreamHello":        responseType[helloBody](),
		"OpenAPIDocument":    responseType[openAPIDocument](),
		"Link":               responseType[link](),
		"Integration":        responseType[integration](),
		"IntegrationWithKey": responseType[integrationWithKey](),
		"Heartbeat":          responseType[heartbeat](),
		"HeartbeatWithURL":   responseType[heartbeatWithURL](),
		"PingAnswer":         responseType[pingAnswer](),
		"HookResult":         responseType[hookResult](),
		"HookResults":        responseType[hookResults](),
		"HookError":          responseType[hookErrorBody](),
		"PagerDutyAnswer":    responseType[pagerDutyAnswer](),
		"Webhook":            responseType[webhook](),
		"WebhookWithSecret":  responseType[webhookWithSecret](),
		"WebhookTestResult":  responseType[webhookTestResult](),
		"WebhookDelivery":    responseType[deliveryView](),
		"EscalationPolicy":   responseType[escalationPolicy](),
		"EscalationNotice":   responseType[escalationNotice](),

		// Request bodies, with the handler's checks: its validate method,
		// or, where the handler checks the body in place, the same checks.
		"IncidentCreate": requestType(incidentCreate.validate),
		"TransitionRequest": requestType(func(in transitionRequest) []fieldError {
			return stringRule{min: 1, max: 10000, notBlank: true}.check(nil, []string{"body", "note"}, in.Note)
		}),
		"NoteCreate": requestType(func(in noteCreate) []fieldError {
			return stringRule{required: true, min: 1, max: 10000, notBlank: true}.check(nil, []string{"body", "body"}, in.Body)
		}),
		"RegisterRequest": requestType(registerRequest.validate),
		"LoginRequest":    login,
		"LoginForm":       form,
		"UserCreate": requestType(func(in userCreate) []fieldError {
			return stringRule{required: true, oneOf: roles}.check(in.registerRequest.validate(), []string{"body", "role"}, in.Role)
		}),
		"UserUpdate": requestType(func(in userUpdate) []fieldError {
			problems := stringRule{oneOf: roles}.check(nil, []string{"body", "role"}, in.Role)
			disabled, problems := boolField(problems, []string{"body", "disabled"}, in.Disabled)
			if !(in.Role.Present && in.Role.IsText) && disabled == nil {
				problems = append(problems, fieldError{Type: "missing", Loc: []string{"body"}, Msg: "Field required: role or disabled"})
			}
			return problems
		}),
		"PasswordChange": requestType(func(in passwordChange) []fieldError {
			problems := stringRule{required: true}.check(nil, []string{"body", "current_password"}, in.CurrentPassword)
			return stringRule{required: true, min: 8, max: 128}.check(problems, []string{"body", "new_password"}, in.NewPassword)
		}),
		"ApiKeyCreate": requestType(func(in apiKeyCreate) []fieldError {
			_, _, problems := in.validate()
			return problems
		}),
		"IntegrationCreate": requestType(func(in integrationRequest) []fieldError { return in.apply(&integration{}, true) }),
		"IntegrationUpdate": requestType(func(in integrationRequest) []fieldError { return in.apply(&integration{}, false) }),
		"WebhookCreate":     requestType(func(in webhookRequest) []fieldError { return in.apply(&webhook{}, true) }),
		"WebhookUpdate":     requestType(func(in webhookRequest) []fieldError { return in.apply(&webhook{}, false) }),
		"EscalationPolicyCreate": requestType(func(in escalationPolicyRequest) []fieldError {
			return in.apply(&escalationPolicy{}, true)
		}),
		"EscalationPolicyUpdate": requestType(func(in escalationPolicyRequest) []fieldError {
			return in.apply(&escalationPolicy{}, false)
		}),
		"HeartbeatCreate": requestType(func(in heartbeatRequest) []fieldError {
			_, problems := in.apply(&heartbeat{}, true)
			return problems
		}),
		"HeartbeatUpdate": requestType(func(in heartbeatRequest) []fieldError {
			_, problems := in.apply(&heartbeat{}, false)
			return problems
		}),
		"GenericEvent": requestType(genericEvent.validate),
		"PagerDutyEvent": requestType(func(ev pagerDutyEvent) []fieldError {
			var problems []fieldError
			for _, p := range ev.validate() {
				problems = append(problems, fieldError{Type: "value_error", Loc: []string{"body"}, Msg: p})
			}
			return problems
		}),
		"AlertmanagerPayload": alertPayloadType(),
		"Alert":               requestType(func(alert) []fieldError { return nil }),
	}
}

// alertPayloadType is Alertmanager's payload, checked as the hook checks
// it.
func alertPayloadType() openAPIType {
	return requestType(func(p alertPayload) []fieldError {
		_, problems := p.events(integration{GroupBy: "alert"})
		return problems
	})
}

// openAPIEnums maps the enum schemas of openapi.json to the values the
// code allows, in its order.
func openAPIEnums() map[string][]string {
	return map[string][]string{"Severity": severities, "Status": statuses, "Role": roles, "Scope": keyScopes}
}

// Bodies the handlers write as map literals have no Go type to reflect
// on. These types stand in for them, and TestOpenAPIMapBodies checks each
// against what the handler sends.
type (
	rootBody struct {
		Name      string `json:"name"`
		Version   string `json:"version"`
		Revision  string `json:"revision"`
		GoVersion string `json:"go_version"`
		Docs      string `json:"docs"`
		Redoc     string `json:"redoc"`
		OpenAPI   string `json:"openapi"`
	}
	healthBody struct {
		Status string `json:"status"`
	}
	registerBody struct {
		Message string `json:"message"`
		Data    string `json:"data"`
	}
	tokenBody struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
	}
	meBody struct {
		ID        int64     `json:"id"`
		Username  string    `json:"username"`
		CreatedAt time.Time `json:"created_at"`
		Role      string    `json:"role"`
	}
	messageBody struct {
		Message string `json:"message"`
	}
	apiKeyCreatedBody struct {
		ID        int64      `json:"id"`
		Name      string     `json:"name"`
		Scopes    []string   `json:"scopes"`
		Key       string     `json:"key"`
		CreatedAt time.Time  `json:"created_at"`
		ExpiresAt *time.Time `json:"expires_at"`
	}
	streamTicketBody struct {
		Ticket    string `json:"ticket"`
		ExpiresIn int    `json:"expires_in"`
	}
	resolveBody struct {
		Message        string `json:"message"`
		IncidentStatus string `json:"incident status"`
	}
	errorBody struct {
		Detail string `json:"detail"`
	}
	hookErrorBody struct {
		Detail string       `json:"detail"`
		Errors []fieldError `json:"errors"`
	}
	validationBody struct {
		Detail []fieldError `json:"detail"`
	}
	conflictBody struct {
		Detail  string   `json:"detail"`
		Status  string   `json:"status"`
		Allowed []string `json:"allowed"`
	}
	preconditionBody struct {
		Detail  string `json:"detail"`
		Version int64  `json:"version,omitempty"`
	}
	helloBody struct {
		Type string `json:"type"`
		Seq  int64  `json:"seq"`
	}
	// openAPIDocument is the top of openapi.json, served as it is.
	openAPIDocument struct {
		OpenAPI    string          `json:"openapi"`
		Info       json.RawMessage `json:"info"`
		Servers    json.RawMessage `json:"servers,omitempty"`
		Tags       json.RawMessage `json:"tags,omitempty"`
		Paths      json.RawMessage `json:"paths"`
		Components json.RawMessage `json:"components,omitempty"`
	}
)

// TestOpenAPIMapBodies checks the stand-ins for map literals against the
// handlers: every key the handler sends is a field of the stand-in, and
// every field of it is sent.
func TestOpenAPIMapBodies(t *testing.T) {
	ts := newTestServer(t)
	creds := `{"username":"alice","password":"correct-horse-battery"}`
	register := ts.request(t, "POST", "/api/v1/register", creds)
	login := ts.request(t, "POST", "/api/v1/login", creds)
	var tok tokenBody
	login.json(t, &tok)
	auth := bearer(tok.AccessToken)
	inc := ts.createIncident(t, "disk full", "high")
	incidentPath := "/api/v1/incidents/" + strconv.FormatInt(inc.ID, 10)
	sse := openSSE(t, ts, "/api/v1/events")
	hello, _ := sse.next(t)
	var hook integrationWithKey
	ts.request(t, "POST", "/api/v1/integrations", `{"name":"g","type":"generic"}`, auth...).json(t, &hook)
	for _, tt := range []struct {
		what   string
		got    response
		status int
		body   any
	}{
		{"GET /", ts.request(t, "GET", "/", ""), http.StatusOK, rootBody{}},
		{"GET /healthz", ts.request(t, "GET", "/healthz", ""), http.StatusOK, healthBody{}},
		{"GET /readyz", ts.request(t, "GET", "/readyz", ""), http.StatusOK, healthBody{}},
		{"GET /openapi.json", ts.request(t, "GET", "/openapi.json", ""), http.StatusOK, openAPIDocument{}},
		{"POST /api/v1/register", register, http.StatusCreated, registerBody{}},
		{"POST /api/v1/login", login, http.StatusOK, tokenBody{}},
		{"GET /api/v1/me", ts.request(t, "GET", "/api/v1/me", "", auth...), http.StatusOK, meBody{}},
		{"POST /api/v1/api-keys", ts.request(t, "POST", "/api/v1/api-keys", `{"name":"k","scopes":["incidents:read"],"expires_in_days":1}`, auth...),
			http.StatusCreated, apiKeyCreatedBody{}},
		{"POST /api/v1/stream-tickets", ts.request(t, "POST", "/api/v1/stream-tickets", "", auth...), http.StatusCreated, streamTicketBody{}},
		{"resolve", ts.request(t, "PATCH", incidentPath+"/resolve", "", auth...), http.StatusOK, resolveBody{}},
		{"resolve again", ts.request(t, "PATCH", incidentPath+"/resolve", "", auth...), http.StatusConflict, conflictBody{}},
		{"reopen a stale version", ts.request(t, "PATCH", incidentPath+"/reopen", "", append(auth, "If-Match", `"1"`)...),
			http.StatusPreconditionFailed, preconditionBody{}},
		{"GET a missing incident", ts.request(t, "GET", "/api/v1/incidents/0", ""), http.StatusNotFound, errorBody{}},
		{"POST an empty report", ts.request(t, "POST", "/api/v1/incidents", "{}"), http.StatusUnprocessableEntity, validationBody{}},
		{"SSE hello", response{status: http.StatusOK, body: []byte(hello.data)}, http.StatusOK, helloBody{}},
		{"a hook's bad payload", ts.request(t, "POST", "/api/v1/hooks/generic", `{"action":"snooze"}`, bearer(hook.Key)...),
			http.StatusBadRequest, hookErrorBody{}},
		// Last: it ends the token.
		{"PATCH /api/v1/me/password", ts.request(t, "PATCH", "/api/v1/me/password",
			`{"current_password":"correct-horse-battery","new_password":"battery-staple-horse"}`, auth...), http.StatusOK, messageBody{}},
	} {
		t.Run(tt.what, func(t *testing.T) {
			if tt.got.status != tt.status {
				t.Fatalf("status = %d, want %d; body %s", tt.got.status, tt.status, tt.got.body)
			}
			typ := reflect.TypeOf(tt.body)
			if _, err := decodeStrict(tt.got.body, typ); err != nil {
				t.Errorf("body %s does not decode into %v: %v", tt.got.body, typ, err)
			}
			var keys map[string]json.RawMessage
			tt.got.json(t, &keys)
			for name, f := range jsonFields(typ) {
				if _, ok := keys[name]; !ok && !f.omitempty {
					t.Errorf("body %s has no %q, which %v has", tt.got.body, name, typ)
				}
			}
		})
	}
}

// openAPIDoc is openapi.json as generic JSON, numbers kept as written.
func openAPIDoc(t *testing.T) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(openapiJSON))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("openapi.json is not valid JSON: %v", err)
	}
	return doc
}

// resolveRef follows v's $ref, if it has one, within doc.
func resolveRef(t *testing.T, doc map[string]any, v any) any {
	t.Helper()
	for {
		m, ok := v.(map[string]any)
		if !ok {
			return v
		}
		ref, ok := m["$ref"].(string)
		if !ok {
			return v
		}
		v = any(doc)
		for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			obj, _ := v.(map[string]any)
			if v, ok = obj[part]; !ok {
				t.Fatalf("openapi.json: $ref %s leads nowhere", ref)
			}
		}
	}
}

// refName is the name of the component a {"$ref": ...} names, or "".
func refName(v any) string {
	m, _ := v.(map[string]any)
	ref, _ := m["$ref"].(string)
	return ref[strings.LastIndex(ref, "/")+1:]
}

// TestOpenAPIExamples checks every example of a request or response body
// in openapi.json, in its components or inline, against the Go type the
// handler uses: it decodes with unknown fields refused, field names spelled
// exactly, and re-encodes; a response re-encodes to the same JSON, and a
// request passes the handler's validation.
func TestOpenAPIExamples(t *testing.T) {
	doc := openAPIDoc(t)
	types := openAPITypes()
	checked := map[string]bool{} // where the examples are, as /-separated paths
	usedExamples := map[string]bool{}

	// check checks one example value against a schema.
	check := func(t *testing.T, where string, schema any, value any) {
		t.Helper()
		raw, err := json.Marshal(value)
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		if err := checkExample(t, doc, types, schema, raw); err != nil {
			t.Errorf("%s: example %s: %v", where, raw, err)
		}
	}
	// Bodies that are not JSON (pages, scripts, event streams) are text.
	text := func(t *testing.T, where string, _ any, value any) {
		t.Helper()
		if _, ok := value.(string); !ok {
			t.Errorf("%s: example %v is not text", where, value)
		}
	}
	// Examples of bodies: in every media type of every request body and
	// response, inline or in components.
	mediaTypes := func(where string, owner any) {
		content, _ := resolveRef(t, doc, owner).(map[string]any)["content"].(map[string]any)
		for name, mt := range content {
			mt := mt.(map[string]any)
			at := where + "/content/" + name
			check := check
			switch name {
			case "application/json", "application/x-www-form-urlencoded", "multipart/form-data":
			default:
				check = text
			}
			if v, ok := mt["example"]; ok {
				checked[at+"/example"] = true
				check(t, at, mt["schema"], v)
			}
			examples, _ := mt["examples"].(map[string]any)
			for key, e := range examples {
				checked[at+"/examples"] = true
				if n := refName(e); n != "" {
					usedExamples[n] = true
				}
				check(t, at+"/examples/"+key, mt["schema"], resolveRef(t, doc, e).(map[string]any)["value"])
			}
		}
	}
	for path, item := range doc["paths"].(map[string]any) {
		for method, op := range item.(map[string]any) {
			if !slices.Contains(httpMethods, method) {
				continue
			}
			op := op.(map[string]any)
			at := "/paths/" + path + "/" + method
			if body, ok := op["requestBody"]; ok {
				mediaTypes(at+"/requestBody", body)
			}
			for status, r := range op["responses"].(map[string]any) {
				mediaTypes(at+"/responses/"+status, r)
			}
		}
	}
	components := doc["components"].(map[string]any)
	for _, kind := range []string{"requestBodies", "responses"} {
		for name, c := range components[kind].(map[string]any) {
			mediaTypes("/components/"+kind+"/"+name, c)
		}
	}
	// Examples of schemas, which viewers show for every body of the schema.
	for name, s := range components["schemas"].(map[string]any) {
		examples, _ := s.(map[string]any)["examples"].([]any)
		for i, e := range examples {
			checked["/components/schemas/"+name+"/examples"] = true
			check(t, fmt.Sprintf("components/schemas/%s/examples/%d", name, i), map[string]any{"$ref": "#/components/schemas/" + name}, e)
		}
	}
	for name := range components["examples"].(map[string]any) {
		if !usedExamples[name] {
			t.Errorf("components/examples/%s is used nowhere", name)
		}
	}
	// No example is left unchecked, but those of parameters and headers.
	walkJSON("", doc, func(at string, key string) {
		if (key == "example" || key == "examples") && !checked[at+"/"+key] && at != "/components" &&
			!strings.Contains(at, "/parameters") && !strings.Contains(at, "/headers/") {
			t.Errorf("openapi.json: %s/%s is an example this test does not check", at, key)
		}
	})
}

// walkJSON calls f with the path of every object key in v.
func walkJSON(at string, v any, f func(at, key string)) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			f(at, k)
			walkJSON(at+"/"+k, x, f)
		}
	case []any:
		for i, x := range v {
			walkJSON(at+"/"+strconv.Itoa(i), x, f)
		}
	}
}

// checkExample checks raw, an example of a body of schema: a $ref to a
// component schema, an array of one, or a choice (oneOf, anyOf) of them.
func checkExample(t *testing.T, doc map[string]any, types map[string]openAPIType, schema any, raw []byte) error {
	t.Helper()
	if typ, ok := types[refName(schema)]; ok {
		return checkValue(types, typ, raw)
	}
	s, _ := resolveRef(t, doc, schema).(map[string]any)
	if s["type"] == "array" {
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return fmt.Errorf("not an array: %v", err)
		}
		for i, item := range items {
			if err := checkExample(t, doc, types, s["items"], item); err != nil {
				return fmt.Errorf("item %d: %w", i, err)
			}
		}
		return nil
	}
	for _, key := range []string{"oneOf", "anyOf"} {
		if choices, ok := s[key].([]any); ok {
			var errs []string
			for _, c := range choices {
				err := checkExample(t, doc, types, c, raw)
				if err == nil {
					return nil
				}
				errs = append(errs, err.Error())
			}
			return fmt.Errorf("fits none of %s: %s", key, strings.Join(errs, "; "))
		}
	}
	return fmt.Errorf("schema %v has no Go type in openAPITypes", schema)
}

// checkValue checks raw as a body of Go type typ.
func checkValue(types map[string]openAPIType, typ openAPIType, raw []byte) error {
	if typ.form {
		return checkForm(typ, raw)
	}
	v, err := decodeStrict(raw, typ.typ)
	if err != nil {
		return err
	}
	var fields map[string]json.RawMessage
	_ = json.Unmarshal(raw, &fields)
	for field, schema := range typ.raw {
		if f, ok := fields[field]; ok {
			if err := checkValue(types, types[schema], f); err != nil {
				return fmt.Errorf("%s: %w", field, err)
			}
		}
	}
	b, err := marshalJSON(v)
	if err != nil {
		return fmt.Errorf("does not re-encode: %v", err)
	}
	if typ.validate != nil {
		if problems := typ.validate(v); len(problems) > 0 {
			return fmt.Errorf("the handler refuses it: %v", problems)
		}
	} else if !sameJSON(b, raw) {
		return fmt.Errorf("re-encodes as %s", b)
	}
	return nil
}

// checkForm sends raw, an object of strings, to readLogin as each kind of
// form it reads.
func checkForm(typ openAPIType, raw []byte) error {
	var values map[string]string
	if err := json.Unmarshal(raw, &values); err != nil {
		return fmt.Errorf("not an object of strings: %v", err)
	}
	fields := jsonFields(typ.typ)
	form := url.Values{}
	var multi bytes.Buffer
	mw := multipart.NewWriter(&multi)
	for k, v := range values {
		if _, ok := fields[k]; !ok && !slices.Contains(typ.ignored, k) {
			return fmt.Errorf("%q is not a field of %v", k, typ.typ)
		}
		form.Set(k, v)
		_ = mw.WriteField(k, v)
	}
	_ = mw.Close()
	for contentType, body := range map[string]string{
		"application/x-www-form-urlencoded": form.Encode(),
		mw.FormDataContentType():            multi.String(),
	} {
		r := httptest.NewRequest("POST", "/api/v1/login", strings.NewReader(body))
		r.Header.Set("Content-Type", contentType)
		if _, err := readLogin(httptest.NewRecorder(), r); err != nil {
			return fmt.Errorf("as %s, the handler refuses it: %v", contentType, err)
		}
	}
	return nil
}

// decodeStrict decodes raw into a new value of typ with unknown fields
// refused, and every key spelled as the field's JSON name (encoding/json
// would take "Title" for "title"), at any depth.
func decodeStrict(raw []byte, typ reflect.Type) (any, error) {
	if err := exactKeys(raw, typ); err != nil {
		return nil, err
	}
	v := reflect.New(typ)
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v.Interface()); err != nil {
		return nil, err
	}
	return v.Interface(), nil
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// exactKeys checks that every key of the objects in raw is the JSON name
// of a field of typ. Types that decode themselves (jsonString, time.Time,
// json.RawMessage) are left to their decoder.
func exactKeys(raw []byte, typ reflect.Type) error {
	typ = indirect(typ)
	if string(raw) == "null" || reflect.PointerTo(typ).Implements(unmarshalerType) {
		return nil
	}
	switch typ.Kind() {
	case reflect.Struct:
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(raw, &obj); err != nil {
			return fmt.Errorf("not an object: %v", err)
		}
		fields := jsonFields(typ)
		for k, v := range obj {
			f, ok := fields[k]
			if !ok {
				return fmt.Errorf("%q is not a field of %v", k, typ)
			}
			if err := exactKeys(v, f.typ); err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
		}
	case reflect.Slice:
		var items []json.RawMessage
		if json.Unmarshal(raw, &items) == nil {
			for i, item := range items {
				if err := exactKeys(item, typ.Elem()); err != nil {
					return fmt.Errorf("%d: %w", i, err)
				}
			}
		}
	case reflect.Map:
		var m map[string]json.RawMessage
		if json.Unmarshal(raw, &m) == nil {
			for k, v := range m {
				if err := exactKeys(v, typ.Elem()); err != nil {
					return fmt.Errorf("%s: %w", k, err)
				}
			}
		}
	}
	return nil
}

// jsonField is a field of a struct as encoding/json sees it.
type jsonField struct {
	typ       reflect.Type
	omitempty bool
}

// jsonFields returns the fields encoding/json reads and writes for struct
// type typ, by JSON name, with those promoted from embedded structs.
func jsonFields(typ reflect.Type) map[string]jsonField {
	typ = indirect(typ)
	fields, promoted := map[string]jsonField{}, map[string]jsonField{}
	if typ.Kind() != reflect.Struct {
		return fields
	}
	for f := range typ.Fields() {
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case f.Anonymous && name == "" && indirect(f.Type).Kind() == reflect.Struct:
			maps.Copy(promoted, jsonFields(f.Type))
		case name == "-" || !f.IsExported():
		default:
			if name == "" {
				name = f.Name
			}
			fields[name] = jsonField{typ: f.Type, omitempty: slices.Contains(strings.Split(opts, ","), "omitempty")}
		}
	}
	for name, f := range promoted {
		if _, ok := fields[name]; !ok { // the shallower field wins
			fields[name] = f
		}
	}
	return fields
}

// sameJSON tells whether a and b hold the same JSON value.
func sameJSON(a, b []byte) bool {
	var x, y any
	da, db := json.NewDecoder(bytes.NewReader(a)), json.NewDecoder(bytes.NewReader(b))
	da.UseNumber()
	db.UseNumber()
	return da.Decode(&x) == nil && db.Decode(&y) == nil && reflect.DeepEqual(x, y)
}

// TestOpenAPISchemaFields checks the property names of every object schema
// in openapi.json against the JSON field names of its Go type, both ways,
// nested objects described in place included, and their JSON types; that
// a response schema requires exactly the fields the Go type always writes;
// and that every enum schema lists the values the code allows.
func TestOpenAPISchemaFields(t *testing.T) {
	doc := openAPIDoc(t)
	schemas := doc["components"].(map[string]any)["schemas"].(map[string]any)
	types, enums := openAPITypes(), openAPIEnums()
	for name, s := range schemas {
		s := s.(map[string]any)
		where := "components/schemas/" + name
		typ, typed := types[name]
		switch {
		case enums[name] != nil:
			var got []string
			for _, v := range s["enum"].([]any) {
				got = append(got, v.(string))
			}
			if !slices.Equal(got, enums[name]) {
				t.Errorf("%s: enum = %q, the code allows %q", where, got, enums[name])
			}
		case typed:
			compareFields(t, doc, where, s, typ.typ, typ.ignored)
			if typ.validate == nil {
				var required, always []string
				for _, r := range s["required"].([]any) {
					required = append(required, r.(string))
				}
				for name, f := range jsonFields(typ.typ) {
					if !f.omitempty {
						always = append(always, name)
					}
				}
				slices.Sort(required)
				slices.Sort(always)
				if !slices.Equal(required, always) {
					t.Errorf("%s: required = %q, but %v always has %q", where, required, typ.typ, always)
				}
			}
		case s["oneOf"] != nil || s["anyOf"] != nil:
			// A choice of other schemas, each checked on its own.
		default:
			t.Errorf("%s has no Go type in openAPITypes", where)
		}
	}
	for name := range types {
		if schemas[name] == nil {
			t.Errorf("openAPITypes maps %s, which openapi.json does not have", name)
		}
	}
	for name := range enums {
		if schemas[name] == nil {
			t.Errorf("openAPIEnums maps %s, which openapi.json does not have", name)
		}
	}
}

// compareFields checks that the properties of schema are the JSON fields
// of typ, but for ignored ones the handler does not read, and that each
// property's JSON types are those the field's Go type can hold.
func compareFields(t *testing.T, doc map[string]any, where string, schema map[string]any, typ reflect.Type, ignored []string) {
	t.Helper()
	props, _ := schema["properties"].(map[string]any)
	fields := jsonFields(typ)
	for name, p := range props {
		f, ok := fields[name]
		if !ok {
			if !slices.Contains(ignored, name) {
				t.Errorf("%s documents %q, which %v does not have", where, name, typ)
			}
			continue
		}
		want := goJSONTypes(f)
		if want == nil {
			continue // raw JSON
		}
		if got := schemaJSONTypes(t, doc, p); got != nil && !slices.Equal(got, want) {
			t.Errorf("%s/%s is of type %q, but %v is %q", where, name, got, f.typ, want)
		}
		p, _ := p.(map[string]any)
		ft := indirect(f.typ)
		if items, ok := p["items"].(map[string]any); ok && ft.Kind() == reflect.Slice {
			if got, want := schemaJSONTypes(t, doc, items), goJSONTypes(jsonField{typ: ft.Elem()}); got != nil && want != nil && !slices.Equal(got, want) {
				t.Errorf("%s/%s has items of type %q, but %v is %q", where, name, got, ft.Elem(), want)
			}
			p, ft = items, indirect(ft.Elem())
		}
		if _, ok := p["properties"]; ok && ft.Kind() == reflect.Struct && !reflect.PointerTo(ft).Implements(unmarshalerType) {
			compareFields(t, doc, where+"/"+name, p, ft, nil)
		}
	}
	for name := range fields {
		if _, ok := props[name]; !ok {
			t.Errorf("%s does not document %q, which %v has", where, name, typ)
		}
	}
}

// schemaJSONTypes lists, sorted, the JSON types a schema allows: its
// type, or those of the schemas it refers to or chooses from; nil when it
// does not say.
func schemaJSONTypes(t *testing.T, doc map[string]any, schema any) []string {
	t.Helper()
	s, _ := resolveRef(t, doc, schema).(map[string]any)
	var types []string
	switch typ := s["type"].(type) {
	case string:
		types = []string{typ}
	case []any:
		for _, x := range typ {
			types = append(types, x.(string))
		}
	default:
		choices, _ := s["oneOf"].([]any)
		if anyOf, ok := s["anyOf"].([]any); ok {
			choices = anyOf
		}
		for _, c := range choices {
			ct := schemaJSONTypes(t, doc, c)
			if ct == nil {
				return nil
			}
			types = append(types, ct...)
		}
	}
	slices.Sort(types)
	return slices.Compact(types)
}

// goJSONTypes lists, sorted, the JSON types encoding/json writes for a
// field: "null" for a pointer, unless omitempty leaves a nil one out (a nil
// slice or map is written as null too, but the handlers never leave one
// nil). Nil means any.
func goJSONTypes(f jsonField) []string {
	var types []string
	typ := f.typ
	if typ.Kind() == reflect.Pointer {
		if !f.omitempty {
			types = []string{"null"}
		}
		typ = typ.Elem()
	}
	switch {
	case typ == reflect.TypeFor[time.Time]():
		types = append(types, "string")
	case reflect.PointerTo(typ).Implements(unmarshalerType) || typ.Kind() == reflect.Interface:
		return nil // raw JSON, or a request field that reads any value
	default:
		switch typ.Kind() {
		case reflect.String:
			types = append(types, "string")
		case reflect.Bool:
			types = append(types, "boolean")
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			types = append(types, "integer")
		case reflect.Float32, reflect.Float64:
			types = append(types, "number")
		case reflect.Slice, reflect.Array:
			types = append(types, "array")
		case reflect.Map, reflect.Struct:
			types = append(types, "object")
		}
	}
	slices.Sort(types)
	return types
}
