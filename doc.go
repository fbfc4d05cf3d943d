// Package moitessier dispatches messages to durable, scoped listeners: a
// chat room, a person's notifications, a job's progress. A web app
// dispatches messages to scopes; listeners aggregate the messages of the
// scopes they hear; subscribers read them, pushed as they are stored, from
// a position that survives reconnects, restarts and other processes.
//
// # Listeners
//
// A listener is a durable inbox for a set of scopes, of one of three types
// (the vocabulary of Moitessier 0.1):
//
//   - [Shared]: one listener per scope set, whoever opens it; many
//     subscribers; deleted with its messages when the last one leaves.
//   - [Private]: one per owner (and, with Conditions.Client, per client);
//     only the owner may open it. It holds the owner's own dispatches and
//     the dispatches addressed to the owner with [To].
//   - [Handler]: one per owner like Private; at dispatch time each
//     [HandlerFunc] passed to Dispatch is called for it, and what it
//     returns is that listener's message.
//
// [Hub.NewListener] gets or creates the listener a [Conditions] names and
// makes the person a subscriber. The same conditions always give the same
// listener ([ListenerID] is deterministic).
//
// # Scopes
//
// A scope is a string of at most [MaxScopeBytes] bytes of UTF-8 without
// control characters. Tokens are separated by ".". A listener may hear a
// list of scopes and patterns, in which the token "*" matches any one token
// and a last token ">" matches one or more: "room.*" hears "room.1";
// "user.42.>" hears "user.42.notes" and "user.42.jobs.7". A dispatch names
// one concrete scope. See [MatchScope].
//
// # Cursors and delivery
//
// Each listener numbers its messages 1, 2, 3…; a [Cursor] is the number of
// the last message seen. [Listener.ListenUntil] hands every message after a
// cursor to the caller's respond function as soon as it is stored (waiting
// costs no store queries), once, in order, with no gaps, and returns the
// cursor to resume from. Each subscriber also has a cursor held by the
// store, moved by acknowledgements (respond returning nil): listening from
// [Resume] continues where the subscriber left off, from any process, after
// any restart, with no time window. Acknowledgements are saved within
// Options.AckInterval and at once when ListenUntil returns; after a crash a
// subscriber may see again at most the messages of that last interval.
//
// # Dispatch
//
// [Hub.Dispatch] writes one message to every listener whose scopes match,
// atomically, and returns what it wrote (including what handlers returned).
// A dispatch's handler chain is bounded: at most Options.MaxHandlers
// handlers, each result at most Options.MaxMessageBytes (checked after
// every call), all calls within Options.HandlerBudget, and none after the
// dispatch's context ended.
// [IdempotencyKey] makes a retried dispatch a no-op within
// Options.IdempotencyWindow; the key reused for another request (see
// [Fingerprint]) fails with [ErrIdempotencyMismatch].
//
// # Stores and lifecycle
//
// A [Store] keeps listeners, subscribers and messages: memstore (in
// memory), sqlite (one local file, the embedded default) and postgres (many
// processes on one database). All pass the conformance suite in package
// storetest. Subscribers hold leases that ListenUntil renews; [Hub.GC]
// removes expired subscribers, listeners left without one, messages past
// Options.Retention and old idempotency keys, and runs in the background
// every Options.GCInterval. [Hooks] tell an app when listeners are created,
// emptied or expired.
//
// # Errors
//
// Bad input gets an error wrapping one of the sentinels ([ErrInvalidScope],
// [ErrInvalidArgument], [ErrTooLarge], [ErrUnknownType]) and changes nothing,
// as does a dispatch whose handlers ran out of time ([ErrBudgetExceeded])
// or that reuses an idempotency key for another request
// ([ErrIdempotencyMismatch]);
// state errors wrap [ErrNotFound], [ErrNotOwner] or [ErrClosed]. Test them
// with errors.Is.
package moitessier
