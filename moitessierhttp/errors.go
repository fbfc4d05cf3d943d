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
	// ErrRateLimited reports a person over the dispatch rate limit (429).
	// The error is a *RateLimitError, which says when to retry.
	ErrRateLimited = errors.New("moitessierhttp: rate limited")
	// ErrHandlerBudget reports a person whose dispatches' handlers used up
	// their handler time (Config.HandlerTimeRate) (429). The error is a
	// *RateLimitError, which says when to retry.
	ErrHandlerBudget = errors.New("moitessierhttp: handler time used up")
	// ErrTooManyListeners reports a connection over Config.MaxListenersPerConn (429).
	ErrTooManyListeners = errors.New("moitessierhttp: too many listeners on this connection")
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

// RateLimitError is returned for a dispatch over a per-person limit: the
// dispatch rate (it wraps ErrRateLimited) or the handler time
// (ErrHandlerBudget).
type RateLimitError struct {
	// RetryAfter is how long until a dispatch would be allowed.
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
	// RetryAfter is set, in seconds, on 429 responses to a dispatch past a
	// rate limit (rate_limited, handler_budget).
	RetryAfter float64 `json:"retry_after,omitempty"`
}

// errServerClosing is used when the server is shutting down.
var errServerClosing = errors.New("moitessierhttp: server shutting down")

// classify maps an error to an HTTP status and a stable code. It is the one
// place where errors become statuses. Internal reports whether the error is
// the server's fault (and so worth logging).
func classify(err error, closing bool) (status int, code string, internal bool) {
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, ErrNoToken):
		return http.StatusUnauthorized, "unauthenticated", false
	case errors.Is(err, ErrTokenExpired):
		return http.StatusUnauthorized, "token_expired", false
	case errors.Is(err, ErrInvalidToken):
		return http.StatusUnauthorized, "invalid_token", false
	case errors.Is(err, ErrForbidden):
		return http.StatusForbidden, "forbidden", false
	case errors.Is(err, moitessier.ErrNotOwner):
		return http.StatusForbidden, "not_owner", false
	case errors.Is(err, ErrRateLimited):
		return http.StatusTooManyRequests, "rate_limited", false
	case errors.Is(err, ErrHandlerBudget):
		return http.StatusTooManyRequests, "handler_budget", false
	case errors.Is(err, ErrTooManyListeners):
		return http.StatusTooManyRequests, "too_many_listeners", false
	case errors.Is(err, moitessier.ErrQuotaExceeded):
		// A count, not a rate: it clears when the person leaves or a
		// lease expires, so there is no Retry-After.
		return http.StatusTooManyRequests, "quota_exceeded", false
	case errors.Is(err, ErrBodyTimeout):
		return http.StatusRequestTimeout, "body_timeout", false
	case errors.Is(err, moitessier.ErrTooLarge), errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, "too_large", false
	case errors.Is(err, moitessier.ErrIdempotencyMismatch):
		// As the IETF Idempotency-Key draft says for a key reused with
		// another payload.
		return http.StatusUnprocessableEntity, "idempotency_mismatch", false
	case errors.Is(err, moitessier.ErrBudgetExceeded):
		// The dispatch's handlers ran out of time (Options.HandlerBudget).
		// 422, not 503: the same request would run out of time again, so
		// it is the request that must change, not the moment it is sent.
		return http.StatusUnprocessableEntity, "budget_exceeded", false
	case errors.Is(err, moitessier.ErrInvalidScope):
		return http.StatusBadRequest, "invalid_scope", false
	case errors.Is(err, moitessier.ErrUnknownType):
		return http.StatusBadRequest, "unknown_type", false
	case errors.Is(err, moitessier.ErrInvalidArgument):
		return http.StatusBadRequest, "invalid_argument", false
	case errors.Is(err, ErrBadRequest):
		return http.StatusBadRequest, "bad_request", false
	case errors.Is(err, moitessier.ErrNotFound):
		return http.StatusNotFound, "not_found", false
	case errors.Is(err, errServerClosing):
		return http.StatusServiceUnavailable, "shutting_down", false
	case errors.Is(err, moitessier.ErrClosed):
		if closing {
			return http.StatusServiceUnavailable, "shutting_down", false
		}
		// A listener deleted (its last subscriber left or expired) while in use.
		return http.StatusGone, "gone", false
	case errors.Is(err, ErrSlowConsumer):
		return http.StatusServiceUnavailable, "slow_consumer", false
	case errors.Is(err, moitessier.ErrOutcomeUnknown):
		// Checked before the context errors: the write was under way, so
		// the client must retry with its idempotency key, not give up.
		return http.StatusServiceUnavailable, "outcome_unknown", false
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads the answer.
		return 499, "canceled", false
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "timeout", false
	}
	return http.StatusInternalServerError, "internal", true
}

// errorBody builds the JSON error for err, logging it if it is internal.
func (s *Server) errorBody(r *http.Request, err error) ErrorBody {
	status, code, internal := classify(err, s.closing.Load())
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
	if b.Status == 499 {
		return
	}
	writeJSON(w, b.Status, b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, `{"status":500,"code":"internal","error":"internal error"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// sentinelFor returns the sentinel error a client should see for a code,
// so that errors from Client are errors.Is-comparable with the server's.
func sentinelFor(code string) error {
	switch code {
	case "unauthenticated":
		return ErrNoToken
	case "token_expired":
		return ErrTokenExpired
	case "invalid_token":
		return ErrInvalidToken
	case "forbidden":
		return ErrForbidden
	case "not_owner":
		return moitessier.ErrNotOwner
	case "rate_limited":
		return ErrRateLimited
	case "handler_budget":
		return ErrHandlerBudget
	case "too_many_listeners":
		return ErrTooManyListeners
	case "too_large":
		return moitessier.ErrTooLarge
	case "idempotency_mismatch":
		return moitessier.ErrIdempotencyMismatch
	case "budget_exceeded":
		return moitessier.ErrBudgetExceeded
	case "invalid_scope":
		return moitessier.ErrInvalidScope
	case "unknown_type":
		return moitessier.ErrUnknownType
	case "invalid_argument":
		return moitessier.ErrInvalidArgument
	case "bad_request":
		return ErrBadRequest
	case "body_timeout":
		return ErrBodyTimeout
	case "not_found":
		return moitessier.ErrNotFound
	case "gone":
		return moitessier.ErrClosed
	case "slow_consumer":
		return ErrSlowConsumer
	case "outcome_unknown":
		return moitessier.ErrOutcomeUnknown
	}
	return nil
}
