package main

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// The error catalogue: the refusals handlers return, each with the status
// and detail the client gets. A message made for one case (with a number
// or a name in it) is built where it is used, as an *httpError.
var (
	// 400, 404, 405: requests the API cannot take.
	errBadRequest     = &httpError{status: http.StatusBadRequest, detail: "Bad Request"}
	errBodyUnreadable = &httpError{status: http.StatusBadRequest, detail: "Could not read request body"}
	errRouteNotFound  = &httpError{status: http.StatusNotFound, detail: "Not Found"}

	// 401: who the caller is.
	errNotAuthenticated    = unauthorized("Not authenticated")
	errBadCredentials      = unauthorized("Could not validate credentials")
	errTokenExpired        = unauthorized("Token expired")
	errTokenRevoked        = unauthorized("Token revoked; log in again")
	errBadLogin            = unauthorized("Incorrect username or password")
	errAccountDisabled     = unauthorized("Account disabled")
	errBadKey              = unauthorized("Invalid API key")
	errKeyRevoked          = unauthorized("API key revoked")
	errKeyExpired          = unauthorized("API key expired")
	errBadTicket           = &httpError{status: http.StatusUnauthorized, detail: "Invalid or expired stream ticket"}
	errBadIntegrationKey   = unauthorized("Invalid integration key")
	errIntegrationDisabled = unauthorized("Integration disabled")
	errBadSignature        = &httpError{status: http.StatusUnauthorized, detail: "Missing or invalid signature"}

	// 403: what the caller may do.
	errForbidden              = &httpError{status: http.StatusForbidden, detail: "Insufficient permissions"}
	errKeyNotAllowed          = &httpError{status: http.StatusForbidden, detail: "Insufficient permissions: sign in; API keys cannot be used here"}
	errRegistrationClosedHTTP = &httpError{status: http.StatusForbidden, detail: "Registration is closed"}
	errWrongPassword          = &httpError{status: http.StatusForbidden, detail: "Current password is incorrect"}
	errOriginNotAllowed       = &httpError{status: http.StatusForbidden, detail: "Origin not allowed"}

	// 404: what is not there.
	errIncidentNotFound         = &httpError{status: http.StatusNotFound, detail: "Incident not found"}
	errUserNotFound             = &httpError{status: http.StatusNotFound, detail: "User not found"}
	errAPIKeyNotFound           = &httpError{status: http.StatusNotFound, detail: "API key not found"}
	errIntegrationNotFound      = &httpError{status: http.StatusNotFound, detail: "Integration not found"}
	errHeartbeatNotFound        = &httpError{status: http.StatusNotFound, detail: "Heartbeat not found"}
	errWebhookNotFound          = &httpError{status: http.StatusNotFound, detail: "Webhook not found"}
	errDeliveryNotFound         = &httpError{status: http.StatusNotFound, detail: "Delivery not found"}
	errEscalationPolicyNotFound = &httpError{status: http.StatusNotFound, detail: "Escalation policy not found"}

	// 408, 409, 412, 413: the request against the state of things.
	errBodyTimeout               = &httpError{status: http.StatusRequestTimeout, detail: "Request body not received in time"}
	errUsernameTaken             = &httpError{status: http.StatusConflict, detail: "Username already registered"}
	errDedupKeyTaken             = &httpError{status: http.StatusConflict, detail: "Another unresolved incident has the same dedup_key"}
	errIntegrationNameTaken      = &httpError{status: http.StatusConflict, detail: "Integration name already in use"}
	errHeartbeatNameTaken        = &httpError{status: http.StatusConflict, detail: "Heartbeat name already in use"}
	errWebhookNameTaken          = &httpError{status: http.StatusConflict, detail: "Webhook name already in use"}
	errEscalationPolicyNameTaken = &httpError{status: http.StatusConflict, detail: "Escalation policy name already in use"}
	errWebhookInUse              = &httpError{status: http.StatusConflict, detail: "An escalation policy notifies this webhook; remove it from the policy's steps first"}
	errDeliveryInFlight          = &httpError{status: http.StatusConflict, detail: "An attempt of this delivery is in flight; try again in a minute"}
	errLastAdminHTTP             = &httpError{status: http.StatusConflict, detail: "The last active admin cannot be demoted or disabled"}
	errBadIfMatch                = &httpError{status: http.StatusPreconditionFailed, detail: "If-Match must be an ETag this server returned"}
	errBodyTooLarge              = &httpError{status: http.StatusRequestEntityTooLarge, detail: "Request body too large"}

	// 503: the server cannot answer now.
	errDatabaseUnavailable = &httpError{status: http.StatusServiceUnavailable, detail: "Database unavailable"}
	errShuttingDown        = &httpError{status: http.StatusServiceUnavailable, detail: "Server is shutting down"}
)

// fieldError is one validation problem, in the shape FastAPI clients parse.
type fieldError struct {
	Type string   `json:"type"`
	Loc  []string `json:"loc"`
	Msg  string   `json:"msg"`
}

// validationError is a 422 listing every problem found in a request.
type validationError struct {
	problems []fieldError
}

func (e *validationError) Error() string {
	msgs := make([]string, len(e.problems))
	for i, p := range e.problems {
		msgs[i] = strings.Join(p.Loc, ".") + ": " + p.Msg
	}
	return "validation: " + strings.Join(msgs, "; ")
}

func (e *httpError) Error() string { return fmt.Sprintf("%d %s", e.status, e.detail) }

// invalid wraps problems in a *validationError, or returns nil when there are none.
func invalid(problems ...fieldError) error {
	if len(problems) == 0 {
		return nil
	}
	return &validationError{problems: problems}
}

// httpError is an error whose status and client-facing detail are chosen by
// the handler. extra adds keys to the body next to "detail".
type httpError struct {
	status int
	detail string
	header http.Header
	extra  map[string]any
}

// unauthorized is a 401 that asks for a bearer token, as OAuth2 clients
// expect.
func unauthorized(detail string) *httpError {
	return &httpError{status: http.StatusUnauthorized, detail: detail, header: http.Header{"Www-Authenticate": {"Bearer"}}}
}

// writeError is the one mapping from errors to HTTP responses. Errors it does
// not know become a 500 with a generic body; the error itself goes to the
// request log, never to the client.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	var (
		verr *validationError
		herr *httpError
	)
	switch {
	case errors.Is(err, errResponseStarted):
		return
	case errors.As(err, &verr):
		_ = writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"detail": verr.problems})
	case errors.As(err, &herr):
		for k, v := range herr.header {
			w.Header()[k] = v
		}
		body := map[string]any{"detail": herr.detail}
		for k, v := range herr.extra {
			body[k] = v
		}
		_ = writeJSON(w, herr.status, body)
	case errors.Is(err, errNotFound):
		writeError(w, r, errRouteNotFound)
	case errors.Is(err, errConflict):
		_ = writeJSON(w, http.StatusConflict, map[string]any{"detail": "Conflict"})
	case errors.Is(err, errUnavailable):
		noteRequestError(r, err)
		writeError(w, r, errDatabaseUnavailable)
	default:
		noteRequestError(r, err)
		_ = writeJSON(w, http.StatusInternalServerError, map[string]any{"detail": "Internal Server Error"})
	}
}

// errResponseStarted tells writeError the client has gone or the response
// was already sent: nothing more can be written.
var errResponseStarted = errors.New("response already started")

// conflictAs turns the store's errConflict into the route's own 409.
func conflictAs(err error, conflict error) error {
	if errors.Is(err, errConflict) {
		return conflict
	}
	return err
}
