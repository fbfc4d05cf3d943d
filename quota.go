package moitessier

import "fmt"

// Quota bounds what one person may hold in a store, so that no one person
// can multiply other people's dispatches (each listener a dispatch matches
// stores a copy of it, and each Handler listener runs its handlers) or grow
// the store without end. [Store.Join] enforces it in the transaction that
// creates the listener or subscriber, so every hub on one store shares it;
// a Join that would exceed it stores nothing and returns a [*QuotaError].
// A Join that creates nothing (a subscriber renewing its lease) is never
// refused, so lowering a quota does not cut off what people already hold.
//
// In a Store call, a field of 0 or less sets no limit. In [Options.Quota],
// 0 means the default (DefaultQuotaListeners, DefaultQuotaHandlers,
// DefaultQuotaSubscriptions) and a negative value no limit.
type Quota struct {
	// Listeners is the most listeners one person may own: the Private and
	// Handler listeners whose owner they are and the Shared listeners they
	// created (ListenerInfo.Person), for as long as those exist.
	Listeners int
	// Handlers is the most Handler listeners one person may own; they count
	// among Listeners too.
	Handlers int
	// Subscriptions is the most subscriptions one person may hold: one per
	// listener and client (Conditions.Client) they subscribe with.
	Subscriptions int
}

// Default quotas of a Hub (see [Options.Quota]).
const (
	// DefaultQuotaListeners leaves room for a Private listener per client
	// and a few hundred rooms a person opened.
	DefaultQuotaListeners = 1000
	// DefaultQuotaHandlers is lower: a Handler listener runs every handler
	// of every dispatch it matches.
	DefaultQuotaHandlers = 100
	// DefaultQuotaSubscriptions is twice DefaultQuotaListeners: creating a
	// listener subscribes its creator, and a person also joins others'.
	DefaultQuotaSubscriptions = 2000
)

// QuotaKind names the bound of a Quota that a [QuotaError] reports.
type QuotaKind string

// The bounds of a Quota.
const (
	QuotaListeners     QuotaKind = "listeners"
	QuotaHandlers      QuotaKind = "handler listeners"
	QuotaSubscriptions QuotaKind = "subscriptions"
)

// QuotaError reports a Join refused because it would take a person past a
// [Quota]: the person already holds Limit of Kind. It wraps ErrQuotaExceeded.
type QuotaError struct {
	Person string
	Kind   QuotaKind
	Limit  int
}

// Error says who holds how many of what.
func (e *QuotaError) Error() string {
	return fmt.Sprintf("%v: %q already holds %d %s, the most allowed", ErrQuotaExceeded, e.Person, e.Limit, e.Kind)
}

// Unwrap returns ErrQuotaExceeded.
func (e *QuotaError) Unwrap() error { return ErrQuotaExceeded }
