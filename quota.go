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
// DefaultQuotaShared, DefaultQuotaSubscriptions) and a negative value no
// limit; in what [Options.QuotaFor] returns, 0 means Options.Quota's.
//
// What the quotas bound: a dispatch stores one copy per listener it
// reaches. Another person can add to a dispatch of yours only through the
// Handler listeners they own (Handlers) and the Shared listeners they
// created (Shared) that match its scope, since a Private listener hears
// only its owner's dispatches and those addressed to its owner ([To]). So
// one person adds at most Shared+Handlers copies (200 by default) to a
// dispatch not addressed to them, and at most their Listeners quota to one
// addressed to them.
type Quota struct {
	// Listeners is the most listeners one person may own: the Private and
	// Handler listeners whose owner they are and the Shared listeners they
	// created (ListenerInfo.Person), for as long as those exist.
	Listeners int
	// Handlers is the most Handler listeners one person may own; they count
	// among Listeners too.
	Handlers int
	// Shared is the most Shared listeners one person may create (those
	// whose ListenerInfo.Person they are, for as long as those exist);
	// they count among Listeners too. Each Shared listener matching a
	// scope stores a copy of every dispatch to it, whoever sends it, so
	// this bounds, with Handlers, the copies one person can add to other
	// people's dispatches. Joining a Shared listener someone else created
	// creates nothing and counts only as a subscription.
	Shared int
	// Subscriptions is the most subscriptions one person may hold: one per
	// listener and client (Conditions.Client) they subscribe with.
	Subscriptions int
}

// OfType returns the bound q sets on one person's listeners of type t, and
// the QuotaKind that names it: Handlers for Handler listeners, Shared for
// Shared ones. It returns 0 if q sets none for t (Private listeners count
// only against Listeners).
func (q Quota) OfType(t ListenerType) (QuotaKind, int) {
	switch t {
	case Handler:
		return QuotaHandlers, q.Handlers
	case Shared:
		return QuotaShared, q.Shared
	}
	return "", 0
}

// Default quotas of a Hub (see [Options.Quota]).
const (
	// DefaultQuotaListeners leaves room for a Private listener per client
	// and a few hundred rooms a person opened.
	DefaultQuotaListeners = 1000
	// DefaultQuotaHandlers is lower: a Handler listener runs every handler
	// of every dispatch it matches.
	DefaultQuotaHandlers = 100
	// DefaultQuotaShared is as low, for the same reason: every Shared
	// listener that matches a scope stores a copy of everyone's dispatches
	// to it. A hundred rooms opened by one person is generous; trusted
	// identities (a service account) get more through Options.QuotaFor.
	DefaultQuotaShared = 100
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
	QuotaShared        QuotaKind = "shared listeners"
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

// joinQuota returns the quota Store.Join enforces when subscriber joins a
// listener owned (or, if Shared, created) by owner: the listener bounds
// are owner's and the subscription bound is subscriber's (see
// Options.QuotaFor), as the Store contract applies them.
func (h *Hub) joinQuota(owner, subscriber string) Quota {
	if h.opts.QuotaFor == nil {
		return h.opts.Quota
	}
	q := h.personQuota(owner)
	if subscriber != owner {
		q.Subscriptions = h.personQuota(subscriber).Subscriptions
	}
	return q
}

// personQuota is Options.QuotaFor(person), its zero fields Options.Quota's.
func (h *Hub) personQuota(person string) Quota {
	q, d := h.opts.QuotaFor(person), h.opts.Quota
	for _, f := range []struct {
		v *int
		d int
	}{
		{&q.Listeners, d.Listeners}, {&q.Handlers, d.Handlers}, {&q.Shared, d.Shared}, {&q.Subscriptions, d.Subscriptions},
	} {
		if *f.v == 0 {
			*f.v = f.d
		}
	}
	return q
}
