package moitessierhttp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/likestripes/moitessier"
)

// Errors of the HTTP layer. Token failures wrap [ErrInvalidToken] and one
// of the more precise sentinels, so both errors.Is(err, ErrInvalidToken) and
// errors.Is(err, ErrTokenExpired) hold for an expired token.
var (
	// ErrNoToken reports a request without a bearer token (401).
	ErrNoToken = errors.New("moitessierhttp: no token")
	// ErrInvalidToken is wrapped by every failure of a presented token (401).
	ErrInvalidToken = errors.New("moitessierhttp: invalid token")
	// ErrTokenMalformed reports a token that is not a well-formed HS256 JWT.
	ErrTokenMalformed = errors.New("moitessierhttp: malformed token")
	// ErrTokenSignature reports a token whose signature does not verify:
	// forged, or signed with another secret.
	ErrTokenSignature = errors.New("moitessierhttp: bad token signature")
	// ErrTokenExpired reports a token past its exp claim, or without one.
	ErrTokenExpired = errors.New("moitessierhttp: token expired")
	// ErrTokenNotYetValid reports a token before its nbf claim.
	ErrTokenNotYetValid = errors.New("moitessierhttp: token not yet valid")
	// ErrWeakSecret reports a token secret shorter than MinSecretBytes. It
	// wraps moitessier.ErrInvalidArgument.
	ErrWeakSecret = fmt.Errorf("moitessierhttp: secret too short: %w", moitessier.ErrInvalidArgument)
	// ErrForbidden reports a scope or listener the token does not grant (403).
	ErrForbidden = errors.New("moitessierhttp: forbidden")
	// ErrRateLimited reports a person over the dispatch rate limit
	// (Config.DispatchRate) or the rate of joins and leaves
	// (Config.JoinRate) (429). The error is a *RateLimitError, which says
	// when to retry.
	ErrRateLimited = errors.New("moitessierhttp: rate limited")
	// ErrHandlerBudget reports a person whose dispatches' handlers used up
	// their handler time (Config.HandlerTimeRate) (429). The error is a
	// *RateLimitError, which says when to retry.
	ErrHandlerBudget = errors.New("moitessierhttp: handler time used up")
	// ErrTooManyListeners reports a connection over Config.MaxListenersPerConn (429).
	ErrTooManyListeners = errors.New("moitessierhttp: too many listeners on this connection")
	// ErrTooManyStreams reports a person who holds Config.MaxStreamsPerPerson
	// open streams (SSE, WebSocket, long-poll) already (429). It clears
	// when one of them ends.
	ErrTooManyStreams = errors.New("moitessierhttp: too many open streams")
	// ErrSlowConsumer reports a connection dropped because it did not take
	// its messages within Config.WriteTimeout. The client resumes from its cursor.
	ErrSlowConsumer = errors.New("moitessierhttp: slow consumer")
	// ErrBodyTimeout reports a request body that did not arrive within
	// Config.BodyTimeout (408); the connection is closed.
	ErrBodyTimeout = errors.New("moitessierhttp: request body timed out")
	// ErrBadRequest reports a malformed request: bad JSON, a bad cursor or
	// parameter (400).
	ErrBadRequest = errors.New("moitessierhttp: bad request")
)

// tokenError wraps a precise token failure and ErrInvalidToken.
type tokenError struct {
	reason error
	detail string
}

func (e *tokenError) Error() string {
	if e.detail == "" {
		return e.reason.Error()
	}
	return e.reason.Error() + ": " + e.detail
}

func (e *tokenError) Unwrap() []error { return []error{ErrInvalidToken, e.reason} }

func tokenErr(reason error, format string, args ...any) error {
	return &tokenError{reason: reason, detail: fmt.Sprintf(format, args...)}
}

// RateLimitError is returned for a request over a per-person limit: the
// dispatch rate or the rate of joins and leaves (it wraps ErrRateLimited),
// or the handler time (ErrHandlerBudget).
type RateLimitError struct {
	// RetryAfter is how long until the request would be allowed.
	RetryAfter time.Duration
	// Limit is the limit passed: ErrRateLimited, or ErrHandlerBudget.
	// Nil means ErrRateLimited.
	Limit error
}

// Error says which limit and how long to wait.
func (e *RateLimitError) Error() string {
	return fmt.Sprintf("%v: retry after %v", e.Unwrap(), e.RetryAfter.Round(time.Millisecond))
}

// Unwrap returns the limit passed: ErrRateLimited or ErrHandlerBudget.
func (e *RateLimitError) Unwrap() error {
	if e.Limit == nil {
		return ErrRateLimited
	}
	return e.Limit
}

// ErrorBody is the JSON body of every error response, and of WebSocket
// error frames: {"status":403,"code":"forbidden","error":"..."}.
type ErrorBody struct {
	Status int    `json:"status"`
	Code   string `json:"code"`
	Error  string `json:"error"`
	// RetryAfter is set, in seconds, on 429 responses to a request past a
	// rate limit (rate_limited, handler_budget).
	RetryAfter float64 `json:"retry_after,omitempty"`
}

// errServerClosing is used when the server is shutting down.
var errServerClosing = errors.New("moitessierhttp: server shutting down")

// errorClass is one row of errorTable: the errors it matches, and the status
// and code they answer with.
type errorClass struct {
	// err is matched with errors.Is; match, if set, is used instead.
	err   error
	match func(error) bool
	// onlyClosing makes the row apply only while the server shuts down.
	onlyClosing bool
	status      int
	code        string
	// client reports whether a Client's *Error with this code unwraps to
	// err, so that errors.Is works the same on both ends. It is false for
	// errors a client has no sentinel for (unexported, or context errors
	// the client did not cause).
	client bool
}

// errorTable is the one place where errors become HTTP statuses and codes
// (classify reads it in order, the first matching row wins) and codes become
// sentinels again on the client side (sentinelFor). Order matters where one
// error wraps another: ErrTokenExpired wraps ErrInvalidToken, and
// ErrOutcomeUnknown is checked before the context errors.
var errorTable = []errorClass{
	{err: ErrNoToken, status: http.StatusUnauthorized, code: "unauthenticated", client: true},
	{err: ErrTokenExpired, status: http.StatusUnauthorized, code: "token_expired", client: true},
	{err: ErrInvalidToken, status: http.StatusUnauthorized, code: "invalid_token", client: true},
	{err: ErrForbidden, status: http.StatusForbidden, code: "forbidden", client: true},
	{err: moitessier.ErrNotOwner, status: http.StatusForbidden, code: "not_owner", client: true},
	{err: ErrRateLimited, status: http.StatusTooManyRequests, code: "rate_limited", client: true},
	{err: ErrHandlerBudget, status: http.StatusTooManyRequests, code: "handler_budget", client: true},
	{err: ErrTooManyListeners, status: http.StatusTooManyRequests, code: "too_many_listeners", client: true},
	// A count, as the quotas are: room comes back when a stream ends.
	{err: ErrTooManyStreams, status: http.StatusTooManyRequests, code: "too_many_streams", client: true},
	// A count, not a rate: it clears when the person leaves or a lease
	// expires, so there is no Retry-After.
	{err: moitessier.ErrQuotaExceeded, status: http.StatusTooManyRequests, code: "quota_exceeded", client: true},
	{err: ErrBodyTimeout, status: http.StatusRequestTimeout, code: "body_timeout", client: true},
	{err: moitessier.ErrTooLarge, status: http.StatusRequestEntityTooLarge, code: "too_large", client: true},
	{match: isMaxBytes, status: http.StatusRequestEntityTooLarge, code: "too_large"},
	// As the IETF Idempotency-Key draft says for a key reused with another
	// payload.
	{err: moitessier.ErrIdempotencyMismatch, status: http.StatusUnprocessableEntity, code: "idempotency_mismatch", client: true},
	// The dispatch's handlers ran out of time (Options.HandlerBudget). 422,
	// not 503: the same request would run out of time again, so it is the
	// request that must change, not the moment it is sent.
	{err: moitessier.ErrBudgetExceeded, status: http.StatusUnprocessableEntity, code: "budget_exceeded", client: true},
	{err: moitessier.ErrInvalidScope, status: http.StatusBadRequest, code: "invalid_scope", client: true},
	{err: moitessier.ErrUnknownType, status: http.StatusBadRequest, code: "unknown_type", client: true},
	{err: moitessier.ErrInvalidArgument, status: http.StatusBadRequest, code: "invalid_argument", client: true},
	{err: ErrBadRequest, status: http.StatusBadRequest, code: "bad_request", client: true},
	{err: moitessier.ErrNotFound, status: http.StatusNotFound, code: "not_found", client: true},
	{err: errServerClosing, status: http.StatusServiceUnavailable, code: "shutting_down"},
	{err: moitessier.ErrClosed, onlyClosing: true, status: http.StatusServiceUnavailable, code: "shutting_down"},
	// The hub was shut down before the server: the listener may live on.
	{err: moitessier.ErrHubClosed, status: http.StatusServiceUnavailable, code: "shutting_down"},
	// A listener deleted (its last subscriber left or expired) while in use.
	{err: moitessier.ErrClosed, status: http.StatusGone, code: "gone", client: true},
	{err: ErrSlowConsumer, status: http.StatusServiceUnavailable, code: "slow_consumer", client: true},
	// Before the context errors: the write was under way, so the client
	// must retry with its idempotency key, not give up.
	{err: moitessier.ErrOutcomeUnknown, status: http.StatusServiceUnavailable, code: "outcome_unknown", client: true},
	// The client went away; nobody reads the answer.
	{err: context.Canceled, status: statusClientClosed, code: "canceled"},
	{err: context.DeadlineExceeded, status: http.StatusServiceUnavailable, code: "timeout"},
}

// statusClientClosed is the status of a request whose client went away
// (nginx's 499); no answer is written for it.
const statusClientClosed = 499

func isMaxBytes(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}

// matches reports whether row c applies to err.
func (c *errorClass) matches(err error, closing bool) bool {
	if c.onlyClosing && !closing {
		return false
	}
	if c.match != nil {
		return c.match(err)
	}
	return errors.Is(err, c.err)
}

// sentinelByCode is errorTable read the other way: code to sentinel.
var sentinelByCode = func() map[string]error {
	m := make(map[string]error)
	for _, c := range errorTable {
		if c.client {
			if _, dup := m[c.code]; !dup {
				m[c.code] = c.err
			}
		}
	}
	return m
}()

// classify maps an error to an HTTP status and a stable code, from
// errorTable. Internal reports whether the error is the server's fault (and
// so worth logging).
func classify(err error, closing bool) (status int, code string, internal bool) {
	for i := range errorTable {
		if c := &errorTable[i]; c.matches(err, closing) {
			return c.status, c.code, false
		}
	}
	return http.StatusInternalServerError, "internal", true
}

// errorBody builds the JSON error for err, logging it if it is internal.
func (s *Server) errorBody(r *http.Request, err error) ErrorBody {
	status, code, internal := classify(err, s.streams.isClosing())
	msg := err.Error()
	if internal {
		s.log.Error("moitessierhttp: internal error", "method", r.Method, "path", r.URL.Path, "err", err)
		msg = "internal error"
	}
	b := ErrorBody{Status: status, Code: code, Error: msg}
	var rl *RateLimitError
	if errors.As(err, &rl) {
		b.RetryAfter = math.Ceil(rl.RetryAfter.Seconds())
	}
	return b
}

// writeError writes err as a JSON error response.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	b := s.errorBody(r, err)
	if b.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(b.RetryAfter)))
	}
	if b.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="moitessier"`)
	}
	if b.Status == statusClientClosed {
		return
	}
	s.writeJSON(w, b.Status, b)
}

// writeJSON writes v as the answer, within Config.ResponseTimeout (see
// answerDeadline).
func (s *Server) writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, `{"status":500,"code":"internal","error":"internal error"}`, http.StatusInternalServerError)
		return
	}
	s.answerDeadline(w)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// answerDeadline sets the write deadline of an answer that is not a
// stream to Config.ResponseTimeout from now. Without it a client that
// does not read would hold the answer, and the handler, for as long as it
// keeps its connection open. net/http clears the deadline once the answer
// is sent, before it reads the next request on the connection.
func (s *Server) answerDeadline(w http.ResponseWriter) *http.ResponseController {
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.ResponseTimeout))
	return rc
}

// sentinelFor returns the sentinel error a client should see for a code,
// so that errors from Client are errors.Is-comparable with the server's.
// It reads errorTable; nil for a code without a client sentinel.
func sentinelFor(code string) error { return sentinelByCode[code] }
