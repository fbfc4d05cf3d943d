package moitessierhttp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/likestripes/moitessier"
)

// TestErrorTable walks errorTable both ways: every row's error, bare and
// wrapped, classifies to that row's status and code; every code a client
// can receive unwraps to a sentinel that classifies back to the same code.
func TestErrorTable(t *testing.T) {
	statusOf := make(map[string]int)
	for _, c := range errorTable {
		err := c.err
		if c.match != nil {
			err = &http.MaxBytesError{Limit: 1}
		}
		for _, e := range []error{err, fmt.Errorf("wrapped: %w", err)} {
			status, code, internal := classify(e, c.onlyClosing)
			if status != c.status || code != c.code || internal {
				t.Errorf("classify(%v, closing=%v) = %d %q internal=%v, want %d %q", e, c.onlyClosing, status, code, internal, c.status, c.code)
			}
		}
		if s, ok := statusOf[c.code]; ok && s != c.status {
			t.Errorf("code %q answers with both %d and %d", c.code, s, c.status)
		}
		statusOf[c.code] = c.status
	}

	for code, status := range statusOf {
		sentinel := sentinelFor(code)
		resp := &Error{ErrorBody: ErrorBody{Status: status, Code: code}}
		if sentinel == nil {
			if errors.Unwrap(resp) != nil {
				t.Errorf("code %q: client error unwraps to %v, want nothing", code, errors.Unwrap(resp))
			}
			continue
		}
		if !errors.Is(resp, sentinel) {
			t.Errorf("code %q: client error is not %v", code, sentinel)
		}
		gotStatus, gotCode, _ := classify(sentinel, false)
		if gotCode != code || gotStatus != status {
			t.Errorf("code %q: its sentinel %v classifies back to %d %q", code, sentinel, gotStatus, gotCode)
		}
	}

	// Every code the server answers with a sentinel of its own reaches the
	// client as that sentinel.
	for _, want := range []error{
		ErrNoToken, ErrTokenExpired, ErrInvalidToken, ErrForbidden, ErrRateLimited, ErrHandlerBudget,
		ErrTooManyListeners, ErrBodyTimeout, ErrBadRequest, ErrSlowConsumer,
		moitessier.ErrNotOwner, moitessier.ErrQuotaExceeded, moitessier.ErrTooLarge,
		moitessier.ErrIdempotencyMismatch, moitessier.ErrBudgetExceeded, moitessier.ErrInvalidScope,
		moitessier.ErrUnknownType, moitessier.ErrInvalidArgument, moitessier.ErrNotFound,
		moitessier.ErrClosed, moitessier.ErrOutcomeUnknown,
	} {
		_, code, _ := classify(want, false)
		if got := sentinelFor(code); got != want {
			t.Errorf("%v: code %q comes back to the client as %v", want, code, got)
		}
	}
}

// TestClassifyOrder pins the rows whose order matters.
func TestClassifyOrder(t *testing.T) {
	for _, tc := range []struct {
		err     error
		closing bool
		status  int
		code    string
	}{
		{tokenErr(ErrTokenExpired, "exp"), false, http.StatusUnauthorized, "token_expired"},
		{tokenErr(ErrTokenSignature, "forged"), false, http.StatusUnauthorized, "invalid_token"},
		{moitessier.ErrClosed, false, http.StatusGone, "gone"},
		{moitessier.ErrClosed, true, http.StatusServiceUnavailable, "shutting_down"},
		{fmt.Errorf("x: %w", moitessier.ErrHubClosed), false, http.StatusServiceUnavailable, "shutting_down"},
		{errServerClosing, false, http.StatusServiceUnavailable, "shutting_down"},
		{fmt.Errorf("%w: %w", moitessier.ErrOutcomeUnknown, context.DeadlineExceeded), false, http.StatusServiceUnavailable, "outcome_unknown"},
		{ErrWeakSecret, false, http.StatusBadRequest, "invalid_argument"},
		{&RateLimitError{Limit: ErrHandlerBudget}, false, http.StatusTooManyRequests, "handler_budget"},
		{&RateLimitError{}, false, http.StatusTooManyRequests, "rate_limited"},
		{context.Canceled, false, statusClientClosed, "canceled"},
	} {
		status, code, internal := classify(tc.err, tc.closing)
		if status != tc.status || code != tc.code || internal {
			t.Errorf("classify(%v, %v) = %d %q %v, want %d %q", tc.err, tc.closing, status, code, internal, tc.status, tc.code)
		}
	}
	if status, code, internal := classify(errors.New("disk on fire"), false); status != http.StatusInternalServerError || code != "internal" || !internal {
		t.Errorf("unknown error: %d %q %v, want 500 internal true", status, code, internal)
	}
}
