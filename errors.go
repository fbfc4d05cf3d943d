package moitessier

import (
	"errors"
	"fmt"
)

// Errors returned by the hub and by every [Store]. Callers test for them with
// errors.Is; the returned errors wrap them with context.
var (
	// ErrInvalidScope reports an empty, oversized (over MaxScopeBytes),
	// non-UTF-8 or control-character scope, a malformed pattern, or a wildcard
	// in a scope that must be concrete (the scope of a dispatch).
	ErrInvalidScope = errors.New("moitessier: invalid scope")
	// ErrInvalidArgument reports a bad person, client, idempotency key, cursor,
	// limit or message text that is not valid UTF-8.
	ErrInvalidArgument = errors.New("moitessier: invalid argument")
	// ErrTooLarge reports a message text (or a handler's result) larger than
	// the hub's MaxMessageBytes.
	ErrTooLarge = errors.New("moitessier: message too large")
	// ErrBudgetExceeded reports a dispatch whose handler calls together took
	// longer than the hub's HandlerBudget. Nothing was stored.
	ErrBudgetExceeded = errors.New("moitessier: handler time budget exceeded")
	// ErrIdempotencyMismatch reports a dispatch whose idempotency key was
	// already used, within the idempotency window, by the same sender for
	// another request (see [IdempotencyKey] and [Fingerprint]). Nothing was
	// stored.
	ErrIdempotencyMismatch = errors.New("moitessier: idempotency key reused for another request")
	// ErrUnknownType reports a ListenerType that is not Shared, Private or Handler.
	ErrUnknownType = errors.New("moitessier: unknown listener type")
	// ErrClosed reports a call on a Listener that was closed, or whose stored
	// listener was deleted (its last subscriber left or expired, even if a
	// listener with the same ID was created since), or on a closed Hub or
	// Store. A Listener handle never creates its listener again.
	ErrClosed = errors.New("moitessier: closed")
	// ErrHubClosed reports a call on a Hub that was shut down or closed,
	// and a ListenUntil call that its Shutdown or Close ended. It wraps
	// ErrClosed, so errors.Is holds for both; unlike a deleted listener's,
	// the listener may live on, and its subscriber may listen again at
	// another hub, or at this one's next start.
	ErrHubClosed = fmt.Errorf("%w: the hub shut down", ErrClosed)
	// ErrNotFound reports a listener or subscriber that does not exist.
	ErrNotFound = errors.New("moitessier: not found")
	// ErrOutcomeUnknown reports a dispatch whose write was under way when it
	// failed: its context ended, or the connection to the database broke,
	// after the store had sent the write, so it may or may not have been
	// stored. Retry it with the same [IdempotencyKey]: if the first attempt
	// was stored, the retry is a replay of it. Every other error of
	// Hub.Dispatch (and of Store.Append) means that nothing was stored.
	ErrOutcomeUnknown = errors.New("moitessier: outcome unknown")
	// ErrQuotaExceeded reports a listener or subscription that would take
	// a person past a [Quota]; the error is a [*QuotaError] that says which.
	ErrQuotaExceeded = errors.New("moitessier: quota exceeded")
	// ErrNotOwner reports an attempt to open another person's Private or
	// Handler listener.
	ErrNotOwner = errors.New("moitessier: not the owner")
)
