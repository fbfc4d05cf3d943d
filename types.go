package moitessier

import (
	"fmt"
	"time"
)

// ListenerType is the kind of a listener: [Shared], [Private] or [Handler].
// The values are those of Moitessier 0.1.
type ListenerType int

const (
	// Shared listeners are one per scope, whoever opens them. Many subscribers
	// share one; it is deleted, with its messages, when the last subscriber
	// leaves (Listener.Close) or its lease expires (Hub.GC).
	Shared ListenerType = 1000
	// Private listeners belong to one person (and, when Conditions.Client is
	// set, to one of that person's clients). Only the owner may open one. A
	// Private listener receives the messages its owner dispatches to a
	// matching scope and the messages addressed to its owner with [To].
	Private ListenerType = 1001
	// Handler listeners belong to one person (or client) like Private ones. At
	// dispatch time each [HandlerFunc] passed to Dispatch is called for every
	// matching Handler listener, and what it returns becomes that listener's
	// message (an empty result stores nothing).
	Handler ListenerType = 1002
)

// String returns "shared", "private" or "handler".
func (t ListenerType) String() string {
	switch t {
	case Shared:
		return "shared"
	case Private:
		return "private"
	case Handler:
		return "handler"
	}
	return fmt.Sprintf("ListenerType(%d)", int(t))
}

// Valid reports whether t is one of the three listener types.
func (t ListenerType) Valid() bool { return t == Shared || t == Private || t == Handler }

// ParseListenerType parses "shared", "private" or "handler".
// It returns an error wrapping ErrUnknownType for anything else.
func ParseListenerType(s string) (ListenerType, error) {
	switch s {
	case "shared":
		return Shared, nil
	case "private":
		return Private, nil
	case "handler":
		return Handler, nil
	}
	return 0, fmt.Errorf("parse listener type %q: %w", s, ErrUnknownType)
}

// Cursor is a position in one listener's message sequence: the sequence
// number of the last message seen. Sequence numbers start at 1 and only grow,
// so the zero Cursor is the beginning. A listener's cursors mean nothing for
// another listener.
type Cursor uint64

// Resume is the special cursor "where this subscriber left off": the
// subscriber's acknowledged position, held by the store. A subscriber that
// never acknowledged anything resumes from the point it joined.
const Resume Cursor = ^Cursor(0)

// Conditions name a listener: who opens it, of which type, on which scopes.
// The same conditions always name the same listener.
type Conditions struct {
	// Person is the acting person: the subscriber of a Shared listener, the
	// owner of a Private or Handler one. Required.
	Person string
	// Type is Shared, Private or Handler. Required.
	Type ListenerType
	// Scope is the scope, or scope pattern, the listener hears. Tokens are
	// separated by "."; a token "*" matches any one token and a last token
	// ">" matches one or more tokens ("room.*", "user.42.>").
	Scope string
	// Scopes lists more scopes or patterns; the listener hears a dispatch
	// that matches any of Scope and Scopes. At least one is required.
	Scopes []string
	// Client optionally names one client of Person (a device, a browser
	// tab). For Private and Handler listeners it makes the listener unique
	// to that client; for Shared listeners it makes the client a subscriber
	// of its own, with its own cursor and lease.
	Client string
	// Lease overrides the hub's Options.Lease for this subscriber: how long
	// it stays subscribed without listening before GC removes it.
	Lease time.Duration
	// Start is where Person (with Client) starts reading when NewListener
	// makes them a subscriber: the zero Start is the listener's newest
	// message (the subscriber hears what is dispatched after it joined),
	// [StartOldest] the oldest message the listener keeps, [StartSince] the
	// first message created at or after a time. It sets the subscriber's
	// server-held cursor, so that [Resume] starts there; a subscriber that
	// exists already keeps its cursor. It is no part of the listener's
	// identity.
	Start Start
}

// Start is where a new subscriber's server-held cursor starts; see
// Conditions.Start. The zero Start is the newest message.
type Start struct {
	oldest bool
	since  time.Time
}

// StartOldest starts a new subscriber at the oldest message its listener
// keeps: it reads the listener's kept history first.
var StartOldest = Start{oldest: true}

// StartSince starts a new subscriber at the first message of its listener
// created at or after t: it reads the history since t first.
func StartSince(t time.Time) Start { return Start{since: t} }

// String returns "newest", "oldest" or "since " and the time.
func (s Start) String() string {
	switch {
	case s.oldest:
		return "oldest"
	case !s.since.IsZero():
		return "since " + s.since.Format(time.RFC3339Nano)
	}
	return "newest"
}

// ListenerInfo describes a stored listener.
type ListenerInfo struct {
	// ID is derived from the listener's type, scopes and (for Private and
	// Handler listeners) owner and client; see [ListenerID].
	ID string
	// Type is the listener's type.
	Type ListenerType
	// Person is the owner of a Private or Handler listener; for a Shared
	// listener, the person who created it.
	Person string
	// Client is the owner's client for a client-unique listener, else "".
	Client string
	// Scopes are the listener's scopes and patterns, sorted, without duplicates.
	Scopes []string
	// Created is when the listener was stored.
	Created time.Time
	// Head is the sequence number of the newest message written to the
	// listener (0 if none). Stores fill it in Listener and Match.
	Head Cursor
}

// Owned reports whether the listener belongs to one person (Private, Handler).
func (l ListenerInfo) Owned() bool { return l.Type == Private || l.Type == Handler }

// Message is one message stored on one listener.
type Message struct {
	// Listener is the ID of the listener that holds the message.
	Listener string
	// Seq is the message's position in its listener; the cursor after it.
	Seq Cursor
	// Dispatch identifies the dispatch that wrote the message; every message
	// of one Dispatch call shares it.
	Dispatch string
	// Scope is the concrete scope the message was dispatched to.
	Scope string
	// Sender is the person who dispatched it.
	Sender string
	// Text is the message. For a Handler listener it is the handler's result.
	Text string
	// Created is when the dispatch was made.
	Created time.Time
}

// Subscriber is one subscriber of a listener, with its server-held cursor.
type Subscriber struct {
	// Person and Client identify the subscriber.
	Person, Client string
	// Cursor is the subscriber's acknowledged position.
	Cursor Cursor
	// Joined is when the subscriber was added.
	Joined time.Time
	// LeaseExpires is when GC may remove the subscriber unless it listens again.
	LeaseExpires time.Time
}
