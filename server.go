package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// server holds everything the handlers need; there is no package state.
type server struct {
	cfg       config
	store     *store
	log       *slog.Logger
	now       func() time.Time // tests inject a clock
	passwords *passwords
	limits    limits
	hub       *hub
	feed      *eventFeed
	// pingInterval is how often idle streams get a WebSocket ping or an SSE
	// comment, so proxies keep them open.
	pingInterval time.Duration
	// webhooks sends webhook attempts; inFlight counts those under way,
	// and attempts waits for them at shutdown, once draining stops new ones.
	webhooks   *http.Client
	inFlight   atomic.Int64
	attemptsMu sync.Mutex
	attempts   sync.WaitGroup
	draining   bool
	// metrics counts what /metrics reports; the store counts into it too.
	metrics *serverMetrics
}

func newServer(cfg config, st *store, logger *slog.Logger) (*server, error) {
	pw, err := newPasswords()
	if err != nil {
		return nil, err
	}
	h := newHub()
	s := &server{
		cfg:          cfg,
		store:        st,
		log:          logger,
		now:          time.Now,
		passwords:    pw,
		limits:       newLimits(cfg),
		hub:          h,
		feed:         newEventFeed(st, h, logger, cfg.databaseURL),
		pingInterval: cfg.wsPingInterval,
		webhooks:     newWebhookClient(cfg.webhookDenyPrivate),
		metrics:      newServerMetrics(time.Now()),
	}
	st.metrics = s.metrics
	s.feed.accessChanged = func(userID int64) { go s.hub.recheck(userID, s.stillAllowed) }
	return s, nil
}

// startBackground positions the event feed, and runs it and the timed work
// until ctx ends.
func (s *server) startBackground(ctx context.Context) error {
	if err := s.feed.start(ctx); err != nil {
		return fmt.Errorf("start the event stream: %w", err)
	}
	go s.feed.run(ctx)
	go s.runTimers(ctx)
	return nil
}

// route is one entry of the API: a net/http pattern, who may call it and
// its handler.
type route struct {
	pattern string
	access  access
	handler func(http.ResponseWriter, *http.Request) error
}

// routeList is every route the server serves, in one place. A test checks it
// against openapi.json.
func (s *server) routeList() []route {
	return []route{
		{"GET /{$}", accessOpen, s.handleRoot},
		{"GET /healthz", accessOpen, s.handleHealth},
		{"GET /readyz", accessOpen, s.handleReady},
		{"GET /metrics", accessOpen, s.handleMetrics},
		{"GET /openapi.json", accessOpen, s.handleOpenAPI},
		{"GET /api/v1/openapi.json", accessOpen, s.handleOpenAPI},
		{"GET /docs", accessOpen, s.handleDocs},
		{"GET /docs/init.js", accessOpen, s.handleDocsInit},
		{"GET /redoc", accessOpen, s.handleRedoc},
		{"GET /ui/{$}", accessOpen, s.handleUIIndex},
		{"GET /ui/{file}", accessOpen, s.handleUIFile},

		{"POST /api/v1/register", accessOpen, s.handleRegister},
		{"POST /api/v1/login", accessOpen, s.handleLogin},
		{"GET /api/v1/me", accessAnyone, s.handleMe},
		{"PATCH /api/v1/me/password", accessSelf, s.handlePasswordChange},

		{"POST /api/v1/users", accessAdmin, s.handleUserCreate},
		{"GET /api/v1/users", accessAdmin, s.handleUserList},
		{"PATCH /api/v1/users/{id}", accessAdmin, s.handleUserUpdate},
		{"GET /api/v1/audit", accessAdmin, s.handleAuditList},

		{"POST /api/v1/api-keys", accessSelf, s.handleAPIKeyCreate},
		{"GET /api/v1/api-keys", accessSelf, s.handleAPIKeyList},
		{"DELETE /api/v1/api-keys/{id}", accessSelf, s.handleAPIKeyRevoke},
		{"POST /api/v1/stream-tickets", accessReader, s.handleStreamTicket},

		{"POST /api/v1/incidents", accessIngest, s.handleIncidentCreate},
		{"GET /api/v1/incidents", accessRead, s.handleIncidentList},
		{"GET /api/v1/incidents/stats", accessRead, s.handleIncidentStats},
		{"GET /api/v1/incidents/{id}", accessRead, s.handleIncidentGet},
		{"PATCH /api/v1/incidents/{id}/acknowledge", accessManage, s.handleIncidentTransition("acknowledge")},
		{"PATCH /api/v1/incidents/{id}/unacknowledge", accessManage, s.handleIncidentTransition("unacknowledge")},
		{"PATCH /api/v1/incidents/{id}/resolve", accessManage, s.handleIncidentTransition("resolve")},
		{"PATCH /api/v1/incidents/{id}/reopen", accessManage, s.handleIncidentTransition("reopen")},
		{"POST /api/v1/incidents/{id}/notes", accessManage, s.handleNoteCreate},
		{"GET /api/v1/incidents/{id}/notes", accessRead, s.handleNoteList},
		{"GET /api/v1/incidents/{id}/events", accessRead, s.handleIncidentEvents},

		{"POST /api/v1/integrations", accessAdmin, s.handleIntegrationCreate},
		{"GET /api/v1/integrations", accessAdmin, listHandler(s.store.Integrations)},
		{"GET /api/v1/integrations/{id}", accessAdmin, getHandler(s.store.Integration, errIntegrationNotFound)},
		{"PATCH /api/v1/integrations/{id}", accessAdmin, s.handleIntegrationUpdate},
		{"DELETE /api/v1/integrations/{id}", accessAdmin, s.deleteHandler("integration", errIntegrationNotFound, nil)},
		{"POST /api/v1/integrations/{id}/rotate", accessAdmin, s.handleIntegrationRotate},
		{"POST /api/v1/hooks/alertmanager", accessHook, s.handleHookAlertmanager},
		{"POST /api/v1/hooks/grafana", accessHook, s.handleHookGrafana},
		{"POST /api/v1/hooks/generic", accessHook, s.handleHookGeneric},
		{"POST /v2/enqueue", accessHook, s.handlePagerDutyEnqueue},

		{"POST /api/v1/webhooks", accessAdmin, s.handleWebhookCreate},
		{"GET /api/v1/webhooks", accessAdmin, listHandler(s.store.Webhooks)},
		{"GET /api/v1/webhooks/{id}", accessAdmin, getHandler(s.store.Webhook, errWebhookNotFound)},
		{"PATCH /api/v1/webhooks/{id}", accessAdmin, s.handleWebhookUpdate},
		{"DELETE /api/v1/webhooks/{id}", accessAdmin, s.deleteHandler("webhook", errWebhookNotFound, errWebhookInUse)},
		{"POST /api/v1/webhooks/{id}/rotate", accessAdmin, s.handleWebhookRotate},
		{"POST /api/v1/webhooks/{id}/test", accessAdmin, s.handleWebhookTest},
		{"GET /api/v1/webhooks/{id}/deliveries", accessAdmin, s.handleDeliveryList},
		{"POST /api/v1/webhooks/{id}/deliveries/{delivery}/retry", accessAdmin, s.handleDeliveryRetry},
		{"POST /api/v1/escalation-policies", accessAdmin, s.handleEscalationPolicyCreate},
		{"GET /api/v1/escalation-policies", accessAdmin, listHandler(s.store.EscalationPolicies)},
		{"GET /api/v1/escalation-policies/{id}", accessAdmin, getHandler(s.store.EscalationPolicy, errEscalationPolicyNotFound)},
		{"PATCH /api/v1/escalation-policies/{id}", accessAdmin, s.handleEscalationPolicyUpdate},
		{"DELETE /api/v1/escalation-policies/{id}", accessAdmin, s.deleteHandler("escalation_policy", errEscalationPolicyNotFound, nil)},
		{"POST /api/v1/heartbeats", accessAdmin, s.handleHeartbeatCreate},
		{"GET /api/v1/heartbeats", accessRead, listHandler(s.store.Heartbeats)},
		{"GET /api/v1/heartbeats/{id}", accessRead, getHandler(s.store.Heartbeat, errHeartbeatNotFound)},
		{"PATCH /api/v1/heartbeats/{id}", accessAdmin, s.handleHeartbeatUpdate},
		{"DELETE /api/v1/heartbeats/{id}", accessAdmin, s.deleteHandler("heartbeat", errHeartbeatNotFound, nil)},
		{"GET /api/v1/heartbeats/ping/{token}", accessPing, s.handlePing("ping")},
		{"POST /api/v1/heartbeats/ping/{token}", accessPing, s.handlePing("ping")},
		{"GET /api/v1/heartbeats/ping/{token}/start", accessPing, s.handlePing("start")},
		{"POST /api/v1/heartbeats/ping/{token}/start", accessPing, s.handlePing("start")},
		{"GET /api/v1/heartbeats/ping/{token}/fail", accessPing, s.handlePing("fail")},
		{"POST /api/v1/heartbeats/ping/{token}/fail", accessPing, s.handlePing("fail")},

		{"GET /api/v1/ws", accessStream, s.handleWS},
		{"GET /api/v1/events", accessStream, s.handleSSE},
	}
}

// routes builds the whole HTTP handler: the routes and the middleware
// around them.
func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.routeList() {
		mux.Handle(rt.pattern, routeHandler{s.handle(rt)})
	}
	return bodyDeadline(s.logRequests(s.recoverPanics(securityHeaders(s.cors(limitBody(jsonMuxErrors(mux)))))))
}

// bodyReadTimeout bounds how long a request body may take to arrive, so a
// client that stops sending halfway does not hold its request open; the
// headers have their own limit (ReadHeaderTimeout).
var bodyReadTimeout = 30 * time.Second

// bodyDeadline gives a request's body bodyReadTimeout to arrive. It wraps
// everything that answers (routes, the mux's own 404 and 405, CORS
// preflights): whether or not a handler reads the body, net/http does
// before it answers. Not for requests without one: net/http is already
// reading ahead on them to notice a client leaving, and a deadline would
// end a long stream.
func bodyDeadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 {
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(bodyReadTimeout))
		}
		next.ServeHTTP(w, r)
	})
}

// limitBody answers a request whose Content-Length is over maxBodyBytes
// with a 413 at once, before the body arrives, whatever the route: else the
// answer waits for the handler to read maxBodyBytes, which a client that
// declares more and sends nothing makes bodyReadTimeout, or for the route
// to fail on something else. It sits inside cors, so a cross-origin caller
// can read the 413. A chunked body declares no length: readRawBody's limit
// stops it as it comes.
func limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > maxBodyBytes {
			// The body is left unread, so the connection cannot carry
			// another request.
			w.Header().Set("Connection", "close")
			writeError(w, r, errBodyTooLarge)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// handle adapts a route to http.Handler: it checks the caller against the
// route's access, then runs the handler; every error goes through
// writeError.
func (s *server) handle(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if raw := readableQuery(r.URL.RawQuery); raw != r.URL.RawQuery {
			u := *r.URL
			u.RawQuery = raw
			r = r.WithContext(r.Context())
			r.URL = &u
		}
		r, err := s.authorize(r, rt.access)
		if err == nil {
			err = invalid(queryProblems(r.URL.RawQuery)...)
		}
		if err == nil {
			err = rt.handler(w, r)
		}
		if err != nil {
			writeError(w, r, err)
		}
	})
}

// routeHandler marks the handler of a route, so jsonMuxErrors can tell it
// from an answer the mux makes itself.
type routeHandler struct{ http.Handler }

// jsonMuxErrors answers what the mux answers itself in the API's JSON error
// shape instead of plain text: a 404, a 405 (keeping its Allow header), and
// the empty 400 for a request target of "*" (OPTIONS * is net/http's own).
//
// A path the mux would redirect to its clean form (//api/v1/incidents,
// /api/v1/./incidents) is a 404 too, not a redirect: the original service
// matched the path as sent and answered 404, as API clients expect of a
// path the API does not list; such a path is a bug in the client's URL
// building, which a redirect would hide; and not every client follows a
// 307 with the same method, body and Authorization header.
func jsonMuxErrors(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.RequestURI == "*" {
			writeError(w, r, errBadRequest)
			return
		}
		h, _ := mux.Handler(r)
		if _, ok := h.(routeHandler); ok {
			mux.ServeHTTP(w, r) // sets the pattern and path values
			return
		}
		rec := &headerRecorder{header: http.Header{}}
		h.ServeHTTP(rec, r)
		if rec.status == http.StatusMethodNotAllowed {
			writeError(w, r, &httpError{status: http.StatusMethodNotAllowed, detail: "Method Not Allowed", header: http.Header{"Allow": rec.header.Values("Allow")}})
			return
		}
		writeError(w, r, errRouteNotFound)
	})
}

// headerRecorder captures the status and headers the mux would send.
type headerRecorder struct {
	header http.Header
	status int
}

func (h *headerRecorder) Header() http.Header         { return h.header }
func (h *headerRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (h *headerRecorder) WriteHeader(status int)      { h.status = status }

// cors answers preflight requests and marks responses for the origins in
// ALLOWED_ORIGINS. Other origins get no CORS headers.
func (s *server) cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Add("Vary", "Origin")
		allowed := slices.Contains(s.cfg.allowedOrigins, origin)
		preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
		if allowed {
			w.Header().Set("Access-Control-Allow-Origin", origin)
			w.Header().Set("Access-Control-Expose-Headers", "Link, ETag, X-Dedup, X-Request-ID, Retry-After")
		}
		switch {
		case preflight && allowed:
			w.Header().Set("Access-Control-Allow-Methods", "GET, POST, PATCH, DELETE, OPTIONS")
			w.Header().Set("Access-Control-Allow-Headers", "Authorization, Content-Type, If-Match, Last-Event-ID")
			w.Header().Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
		case preflight:
			writeError(w, r, errOriginNotAllowed)
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// securityHeaders sets the headers every response carries.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		next.ServeHTTP(w, r)
	})
}

// recoverPanics turns a panicking handler into a logged 500.
func (s *server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				writeError(w, r, fmt.Errorf("panic: %v", v))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// requestInfo travels in the request context so the one log line per
// request can carry the internal error writeError kept from the client.
type requestInfo struct {
	id  string
	err error
}

type requestInfoKey struct{}

// noteRequestError records err for the request log.
func noteRequestError(r *http.Request, err error) {
	if info, ok := r.Context().Value(requestInfoKey{}).(*requestInfo); ok {
		info.err = err
	}
}

// logRequests writes one line per request: method, route pattern, status,
// duration and request id. It logs the path, never the query string, which
// may carry credentials.
func (s *server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		info := &requestInfo{id: newRequestID()}
		w.Header().Set("X-Request-ID", info.id)
		r = r.WithContext(context.WithValue(r.Context(), requestInfoKey{}, info))
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		level := slog.LevelInfo
		switch {
		case rec.status >= 500:
			level = slog.LevelError
		case rec.status >= 400:
			level = slog.LevelDebug
		}
		attrs := []slog.Attr{
			slog.String("request_id", info.id),
			slog.String("method", r.Method),
			slog.String("path", loggedPath(r)),
			slog.String("route", r.Pattern),
			slog.Int("status", rec.status),
			slog.Duration("duration", time.Since(start)),
		}
		if info.err != nil {
			attrs = append(attrs, slog.String("error", info.err.Error()))
		}
		s.log.LogAttrs(r.Context(), level, "request", attrs...)
		s.metrics.request(r.Pattern, r.Method, rec.status, time.Since(start))
	})
}

// pingPrefix starts the paths whose next segment is a heartbeat's secret
// token.
const pingPrefix = "/api/v1/heartbeats/ping/"

// loggedPath is the request's path for the log, with a ping token left
// out, whether or not the path matched a route.
func loggedPath(r *http.Request) string {
	rest, ok := strings.CutPrefix(r.URL.Path, pingPrefix)
	if !ok {
		return r.URL.Path
	}
	_, after, _ := strings.Cut(rest, "/")
	if after != "" || strings.HasSuffix(rest, "/") {
		after = "/" + after
	}
	return pingPrefix + "{token}" + after
}

func newRequestID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// statusRecorder remembers the status of a response. It passes Flush and
// Hijack through, or SSE and WebSocket upgrades would break behind it.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (rec *statusRecorder) WriteHeader(status int) {
	if rec.status == 0 {
		rec.status = status
	}
	rec.ResponseWriter.WriteHeader(status)
}

func (rec *statusRecorder) Write(b []byte) (int, error) {
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return rec.ResponseWriter.Write(b)
}

func (rec *statusRecorder) Flush() {
	if f, ok := rec.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (rec *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := rec.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("response writer does not support hijacking")
	}
	if rec.status == 0 {
		rec.status = http.StatusSwitchingProtocols
	}
	return h.Hijack()
}

func (rec *statusRecorder) Unwrap() http.ResponseWriter { return rec.ResponseWriter }

// handleRoot handles GET /: a browser goes to the console, API clients
// get the service's name and version.
func (s *server) handleRoot(w http.ResponseWriter, r *http.Request) error {
	if wantsHTML(r) {
		w.Header().Add("Vary", "Accept")
		http.Redirect(w, r, "/ui/", http.StatusSeeOther)
		return nil
	}
	w.Header().Add("Vary", "Accept")
	return writeJSON(w, http.StatusOK, map[string]string{
		"name":       "incidents",
		"version":    s.metrics.build.Version,
		"revision":   s.metrics.build.Revision,
		"go_version": s.metrics.build.GoVersion,
		"docs":       "/docs",
		"redoc":      "/redoc",
		"openapi":    "/openapi.json",
	})
}

// handleHealth handles GET /healthz: the process is up.
func (s *server) handleHealth(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// handleReady handles GET /readyz: the database answers.
func (s *server) handleReady(w http.ResponseWriter, r *http.Request) error {
	if err := s.store.Ping(r.Context()); err != nil {
		noteRequestError(r, err)
		return errDatabaseUnavailable
	}
	return writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}
