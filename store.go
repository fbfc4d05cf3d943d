package moitessier

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"time"
)

// Store keeps listeners, subscribers and messages. The hub does validation,
// scope rules, handlers, wake-ups and batching; a Store only stores, so it is
// small enough to implement. Every implementation must pass the conformance
// suite in package storetest.
//
// All methods are safe for concurrent use. A Store never sees invalid input:
// the hub validates scopes, persons and texts before calling it.
type Store interface {
	// Join stores l unless a listener with l.ID already exists, then adds sub
	// as a subscriber of that listener unless one with the same Person and
	// Client exists. A new subscriber's Cursor is set to the smaller of
	// sub.Cursor and the listener's Head, and its LeaseExpires to
	// sub.LeaseExpires: the hub passes [Resume] for a subscriber that hears
	// what is written after it joined (the default), or an earlier position
	// for one that starts with the listener's history (Conditions.Start).
	// An existing subscriber keeps its cursor and its lease
	// is extended to sub.LeaseExpires if that is later. Join returns the
	// stored listener (with Head), the stored subscriber, and whether this
	// call created the listener.
	//
	// Join enforces q for l.Person and sub.Person, atomically with its
	// writes, so that every process on one store shares it: if the listener
	// is created, l.Person's listeners (ListenerInfo.Person), counting the
	// new one, must not exceed q.Listeners, nor, for a Handler listener,
	// their Handler listeners q.Handlers, nor, for a Shared listener, the
	// Shared listeners they created q.Shared; if the subscriber is created,
	// sub.Person's subscribers on all listeners, counting the new one, must
	// not exceed q.Subscriptions. A field of 0 or less sets no limit. Past
	// one, Join writes nothing and returns a *QuotaError (which wraps
	// ErrQuotaExceeded) naming it. The counts must be cheap (indexed by
	// person), not a scan of every listener or subscriber.
	Join(ctx context.Context, l ListenerInfo, sub Subscriber, q Quota) (ListenerInfo, Subscriber, bool, error)

	// Listener returns the listener with the given ID, with its Head.
	// It returns ErrNotFound if there is none.
	Listener(ctx context.Context, id string) (ListenerInfo, error)

	// Subscribers returns the subscribers of a listener in the range r,
	// ordered by Person then Client (byte order): those at or after
	// (r.Person, r.Client), at most r.Limit of them (0: all). Its cost grows
	// with what it returns, not with the listener's subscribers, so that a
	// page, or one subscriber (Limit 1), is cheap on a listener with many.
	// It returns ErrNotFound if the listener does not exist.
	Subscribers(ctx context.Context, listenerID string, r SubscriberRange) ([]Subscriber, error)

	// Leave removes one subscriber. When no subscriber remains it deletes the
	// listener and its messages in the same transaction and returns true.
	// It returns ErrNotFound if there is no such subscriber.
	Leave(ctx context.Context, listenerID, person, client string) (deleted bool, err error)

	// Match returns every listener one of whose scopes matches the concrete
	// scope (see [MatchScope]), each once, in any order.
	Match(ctx context.Context, scope string) ([]ListenerInfo, error)

	// Append writes a batch atomically: every entry or none. An error means
	// that nothing was written, except one wrapping ErrOutcomeUnknown: the
	// write was under way (sent to a database) when ctx ended or the
	// connection broke, and may have committed. Each entry's
	// message gets its listener's next sequence number; an entry whose
	// listener no longer exists is skipped. Messages of one listener become
	// visible to Read in sequence order, never a higher one before a lower.
	//
	// If b.Key is not empty and a batch from the same Sender with the same
	// Key was appended at or after b.KeySince, Append writes nothing and,
	// if that batch was the same request (see [Batch.SameRequest]), returns
	// its messages that still exist, with replayed true; if it was another
	// request, it returns an error wrapping ErrIdempotencyMismatch. A store
	// keeps b.Fingerprint with the key for that. Append returns the written
	// messages in entry order.
	Append(ctx context.Context, b *Batch) (msgs []Message, replayed bool, err error)

	// Read returns up to limit messages of a listener with Seq > after, in
	// sequence order. A listener that does not exist has no messages.
	Read(ctx context.Context, listenerID string, after Cursor, limit int) ([]Message, error)

	// Seek returns the cursor just before the listener's first message
	// created at or after t: the position from which a reader sees exactly
	// the messages created since t. It returns ErrNotFound if the listener
	// does not exist.
	Seek(ctx context.Context, listenerID string, t time.Time) (Cursor, error)

	// Checkpoint saves subscribers' positions and leases in one transaction.
	// Each subscriber's Cursor becomes the larger of its stored cursor and
	// c.Cursor; a non-zero c.LeaseExpires replaces its lease. Checkpoints of
	// subscribers that no longer exist, and of another incarnation of the
	// listener than a non-zero c.Created names, are ignored.
	Checkpoint(ctx context.Context, cps []Checkpoint) error

	// Sweep removes what has expired: subscribers whose lease ended before
	// p.Now, then listeners left with no subscriber (with their messages),
	// messages older than p.MaxAge or beyond the newest p.MaxCount of their
	// listener, and idempotency keys recorded before p.KeysBefore. It works
	// in batches of at most p.BatchSize rows so that it never holds a long
	// write lock, and returns the listeners it deleted.
	Sweep(ctx context.Context, p SweepParams) (SweepResult, error)
}

// SubscriberRange selects a page of a listener's subscribers for
// [Store.Subscribers] and [Hub.SubscriberPage], in (Person, Client) byte
// order. The zero value selects all of them.
type SubscriberRange struct {
	// Person and Client are where the page starts: the first subscriber
	// at or after them. Empty: at the first subscriber (no person is "").
	Person, Client string
	// Limit is the most subscribers returned; 0 returns all.
	Limit int
}

// Batch is the work of one dispatch, handed to [Store.Append].
type Batch struct {
	// Dispatch identifies the dispatch; it is copied into every message.
	Dispatch string
	// Scope is the concrete scope dispatched to.
	Scope string
	// Sender is the dispatching person.
	Sender string
	// Created is the dispatch time, copied into every message.
	Created time.Time
	// Key is the optional idempotency key, unique per Sender.
	Key string
	// KeySince is the start of the idempotency window: a key recorded before
	// it no longer counts.
	KeySince time.Time
	// Fingerprint identifies the request the Key was given for (see
	// [Fingerprint]); set when Key is. The store records it with the key.
	Fingerprint []byte
	// Entries are the messages to write, one per listener.
	Entries []Entry
	// Stamp, if not nil, is what [MatchCacher.MatchCached] returned with the
	// listeners the entries were made for. Append checks it: see
	// [MatchStamp].
	Stamp MatchStamp
}

// SameRequest reports whether an idempotency key recorded with the
// fingerprint recorded was recorded for the same request as b: recorded
// equals b.Fingerprint, or is empty (a key recorded by a store that did not
// keep fingerprints yet, which matches any request).
func (b *Batch) SameRequest(recorded []byte) bool {
	return len(recorded) == 0 || bytes.Equal(recorded, b.Fingerprint)
}

// Entry is one message of a [Batch]: a text for one listener.
type Entry struct {
	Listener string
	Text     string
}

// Checkpoint is a subscriber's position and lease, saved by [Store.Checkpoint].
type Checkpoint struct {
	Listener       string
	Person, Client string
	// Cursor is the acknowledged position; the stored cursor never goes back.
	Cursor Cursor
	// LeaseExpires, if not zero, is the subscriber's new lease end.
	LeaseExpires time.Time
	// Created, if not zero, is the creation time of the incarnation of the
	// listener the position belongs to ([ListenerInfo.Created]). A listener
	// deleted and created again under the same ID starts its sequence anew,
	// so a checkpoint of another incarnation (a ListenUntil that ended
	// after the deletion, say) is ignored: its cursor would skip the new
	// incarnation's first messages. Zero applies to whichever incarnation
	// exists.
	Created time.Time
}

// SweepParams says what [Store.Sweep] removes.
type SweepParams struct {
	// Now is the current time; leases that ended before it have expired.
	Now time.Time
	// MaxAge removes messages created before Now-MaxAge; 0 keeps all ages.
	MaxAge time.Duration
	// MaxCount keeps at most this many newest messages per listener; 0 keeps all.
	MaxCount int
	// KeysBefore removes idempotency keys recorded before it.
	KeysBefore time.Time
	// BatchSize bounds the rows removed per transaction; 0 means 1000.
	BatchSize int
}

// SweepResult reports what [Store.Sweep] removed.
type SweepResult struct {
	// Expired lists the listeners deleted because their last subscriber's
	// lease ended.
	Expired []ListenerInfo
	// Subscribers, Messages and Keys count the removed rows.
	Subscribers, Messages, Keys int
}

// IncarnationReader is implemented by stores that read a listener's
// messages only while it is a given incarnation (all of this module's
// stores are). The hub reads through it when its store has it, so that a
// reader that found its listener current a moment ago never takes the
// messages of a listener deleted and made again under its ID since then
// for its own.
type IncarnationReader interface {
	// ReadOf is Read of listener listenerID while it is the incarnation
	// created (its ListenerInfo.Created): the messages it returns were
	// that incarnation's when they were read. It returns an error
	// wrapping ErrNotFound if the listener does not exist, or is another
	// incarnation.
	ReadOf(ctx context.Context, listenerID string, created time.Time, after Cursor, limit int) ([]Message, error)
}

// IncarnationLeaver is implemented by stores whose Leave can leave a
// listener only while it is a given incarnation, in the same call (all of
// this module's stores can). Listener.Close leaves through it when its
// store has it, in place of reading the listener before it leaves, so that
// a handle removes its subscriber from the listener it joined and never
// from one deleted and made again under its ID since, in one store call.
type IncarnationLeaver interface {
	// LeaveOf is Leave of listener listenerID while it is the incarnation
	// created (its ListenerInfo.Created). It returns an error wrapping
	// ErrNotFound, and removes nothing, if the listener does not exist, is
	// another incarnation, or has no such subscriber.
	LeaveOf(ctx context.Context, listenerID string, created time.Time, person, client string) (deleted bool, err error)
}

// Head is a listener's newest sequence number, as reported by a [Watcher].
type Head struct {
	Listener string
	Seq      Cursor
	// Created is the listener's creation time, which tells its incarnations
	// apart (a listener deleted and made again keeps its ID), if the store
	// says (Postgres's notifications and Heads do); zero if not. A head
	// observed with another incarnation than a local cache's makes the
	// hub ask the store before it reads past it. Incarnations are compared
	// for equality only: creation times come from the clocks of the
	// processes that made them, which need not agree.
	Created time.Time
}

// Watcher is implemented by stores shared by several processes (Postgres).
// The hub uses it to hear of messages written by other processes, or by
// transactions it did not run, without polling each listener.
type Watcher interface {
	// Watch calls fn with the new heads of listeners that received messages,
	// until ctx is done. It may report a head more than once or a head the hub
	// already knows; it returns only when ctx is done or it cannot go on.
	Watch(ctx context.Context, fn func([]Head)) error
	// Heads returns the current heads of the given listeners, omitting those
	// that no longer exist; the hub calls it periodically to catch up on a
	// notification that was missed.
	Heads(ctx context.Context, ids []string) ([]Head, error)
}

// HeadComparer is an optional interface of a [Watcher] store, for the
// hub's catch-up read (Options.CatchUpInterval): the hub sends the heads
// its local subscribers' caches know, and hears back only what differs,
// rather than reading every head and comparing them itself. Its answer for
// a hub with many listeners and little news is small (the postgres store
// implements it). See [CompareHeads] for what a store without it gets.
type HeadComparer interface {
	// ChangedHeads returns, of the listeners of known, each with the head
	// and creation time its caller knows (a zero Created: not known), the
	// current heads of those whose head is above the known one, whose
	// creation time the store knows and is another than the known one, or
	// whose known Created is zero; and the IDs of those that no longer
	// exist. Each listener appears in known at most once. It may return a
	// head that is none of these; the hub reads it as it would Heads'.
	ChangedHeads(ctx context.Context, known []Head) (changed []Head, gone []string, err error)
}

// CompareHeads returns what [HeadComparer.ChangedHeads] would for known: w's
// own answer if it is a HeadComparer, else one worked out from w's Heads
// for every listener of known. A store that wraps another can forward its
// ChangedHeads with it.
func CompareHeads(ctx context.Context, w Watcher, known []Head) (changed []Head, gone []string, err error) {
	if c, ok := w.(HeadComparer); ok {
		return c.ChangedHeads(ctx, known)
	}
	ids := make([]string, len(known))
	for i, k := range known {
		ids[i] = k.Listener
	}
	heads, err := w.Heads(ctx, ids)
	if err != nil {
		return nil, nil, err
	}
	byID := make(map[string]Head, len(heads))
	for _, hd := range heads {
		byID[hd.Listener] = hd
	}
	for _, k := range known {
		hd, ok := byID[k.Listener]
		switch {
		case !ok:
			gone = append(gone, k.Listener)
		case hd.Seq > k.Seq, k.Created.IsZero(), !hd.Created.IsZero() && !hd.Created.Equal(k.Created):
			changed = append(changed, hd)
		}
	}
	return changed, gone, nil
}

// Origin identifies a hub to a [Watcher] store. A hub on a Watcher calls
// the store's Append and MatchAppend from its Dispatch, and its Watch,
// with a context that carries the hub's Origin ([OriginOf]). The store may
// leave out of a Watch call's reports what calls carrying the same Origin
// appended, since the hub publishes what its Dispatch appended to its own
// subscribers itself (the postgres store then sends no notification that
// only that hub would hear); it must report what every other call
// appended (another hub's, a direct Append's, AppendTx's), and should
// report what a call carrying the Origin may have appended though it
// returned an error, which the hub does not publish (the postgres store
// leaves a MatchAppend's of that kind to the hub's catch-up read).
type Origin struct{ _ byte } // not empty: each has an address of its own

type originKey struct{}

// OriginOf returns the Origin that ctx carries, or nil.
func OriginOf(ctx context.Context) *Origin {
	o, _ := ctx.Value(originKey{}).(*Origin)
	return o
}

// MatchCacher is implemented by stores whose Match costs a round trip to a
// server (Postgres, Cloud Datastore). The hub's Dispatch matches through
// MatchCached, so that a dispatch to a scope it has dispatched to before
// costs one round trip, the append, instead of two. The protocol between
// the hub and such a store is described at [MatchStamp].
type MatchCacher interface {
	// MatchCached is Match, answered from the store's cache when it can be,
	// with a stamp of the answer (nil if the store could not stamp it). The
	// listeners' Head may be out of date, and the slice is shared: callers
	// must not modify it. See [MatchStamp] for what the stamp promises.
	MatchCached(ctx context.Context, scope string) (ls []ListenerInfo, stamp MatchStamp, err error)
}

// MatchAppender is implemented by stores whose Match and Append each cost a
// round trip to a server (Postgres). Through MatchCached and Append, a
// dispatch to a scope whose answer the store has not cached costs two
// round trips, the match and the append; through MatchAppend it costs one,
// a statement that matches and appends, whenever the dispatch's text goes
// as is to every listener it reaches: always, but when a Handler listener
// matches a dispatch that has handlers.
type MatchAppender interface {
	MatchCacher
	// MatchAppend is MatchCached(b.Scope) that may also append. With a
	// cached answer it returns that answer and its stamp, as MatchCached
	// does, and appends nothing. Without one it matches b.Scope as Match
	// does and, in the same transaction, appends b with one entry of text
	// (which is not empty) for each listener that sel takes (see
	// [Selection.Takes]; b.Entries is ignored), unless sel.Handlers is set,
	// sel.Addressed is not, and a Handler listener matches: then it
	// appends nothing and returns
	// the listeners and their stamp, as MatchCached would. appended says
	// which it did; msgs are the messages written, in the order of ls, and
	// the answer is cached as Match's is. Errors are Append's: nothing was
	// appended, except after one wrapping ErrOutcomeUnknown.
	MatchAppend(ctx context.Context, b *Batch, text string, sel Selection) (ls []ListenerInfo, stamp MatchStamp, msgs []Message, appended bool, err error)
}

// Selection is which of the listeners matched by a dispatch get its text,
// for [MatchAppender.MatchAppend].
type Selection struct {
	// Sender is the dispatching person: its Private listeners get the text.
	Sender string
	// To lists the persons the dispatch is addressed to ([To]), whose
	// Private listeners get the text too.
	To []string
	// Addressed is set when the dispatch is addressed: then only Private
	// listeners get the text.
	Addressed bool
	// Handlers is set when the dispatch has handlers: a Handler listener's
	// message is then theirs to compute, and MatchAppend of a dispatch that
	// is not Addressed appends nothing if one matches.
	Handlers bool
}

// Takes reports whether a listener of type typ owned by person gets the
// text as is: a Private listener of the sender or of a person in To; when
// not Addressed, any Shared listener, and a Handler listener when there are
// no Handlers.
func (s Selection) Takes(typ ListenerType, person string) bool {
	switch {
	case typ == Private:
		return person == s.Sender || slices.Contains(s.To, person)
	case s.Addressed:
		return false
	default:
		return typ != Handler || !s.Handlers
	}
}

// MatchStamp is what a [MatchCacher] store says about a cached Match answer:
// the state of its listeners at which the answer was current (in the
// Postgres store, the schema's pattern version and the scope's version). Its
// value is the store's own; the hub only carries it from MatchCached to
// Append. It is an alias of any so that stores written against the earlier
// signature, MatchCached(...) (..., any, error), still implement MatchCacher.
//
// The match-cache protocol, end to end:
//
//  1. Hub.Dispatch without an idempotency key matches through
//     MatchCached(scope) and gets the listeners and a stamp. A keyed
//     dispatch always uses Match: its replay must not depend on a cache.
//  2. The hub prepares the batch on those listeners (scope rules,
//     handlers) and sets Batch.Stamp to the stamp.
//  3. Append checks the stamp in the transaction that writes the batch,
//     before writing: if a listener that the scope matches was created or
//     deleted since the answer was current (a store may also report a
//     change that did not concern the scope), Append stores nothing and
//     returns an error wrapping [ErrStale]. The check and the write are one
//     round trip in the Postgres store.
//  4. On ErrStale the hub matches again with Match (which refreshes the
//     store's cache), prepares again (handlers run again, within what is
//     left of Options.HandlerBudget) and appends again, without a stamp.
//     It does the same when a handler failed on the cached answer: the
//     listener it failed for may have been deleted since.
//  5. A dispatch whose cached answer gives no entry is not appended, so
//     nothing checks the stamp: the hub compares the cached answer with a
//     fresh Match, and prepares again only if they differ.
//  6. A [MatchAppender] store has a step 1 of its own: for a dispatch
//     without a key and with a text, the hub calls MatchAppend, which
//     either answers from the cache (the protocol goes on at step 2), or
//     matches and appends in one transaction, where nothing can change
//     between the two and no stamp is needed, or matches only (a Handler
//     listener has handlers to run) and goes on at step 2 with the stamp
//     of that match.
//
// A batch with a nil Stamp (every batch of a store that is not a
// MatchCacher, and of Hub.Prepare) is not checked.
type MatchStamp = any

// ErrStale is returned by Append of a batch whose Stamp no longer holds:
// listeners were created or deleted on its scope since it was matched.
// Nothing was stored. See [MatchStamp].
var ErrStale = errors.New("moitessier: listeners changed since match")

// Closer is implemented by stores that hold resources (files, connections).
// After Close every method of the store returns an error wrapping
// ErrClosed, except Close itself: a second Close returns nil, as
// sql.DB.Close and pgxpool.Pool.Close do, so that a deferred Close after an
// explicit one is harmless (the storetest suite holds every store to it).
type Closer interface {
	Close() error
}
