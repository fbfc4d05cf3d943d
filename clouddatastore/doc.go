// Package clouddatastore is the [moitessier.Store] on Firestore in Datastore
// mode (Cloud Datastore), on cloud.google.com/go/datastore: a managed store
// with no server to run, for many processes, as App Engine apps have used
// since Moitessier 0.1. It also implements [moitessier.Watcher] (wake-ups
// between processes over Cloud Pub/Sub, package wake),
// [moitessier.MatchCacher] and [moitessier.Closer].
//
//	store, err := clouddatastore.New(ctx, clouddatastore.Config{Project: "my-project", Namespace: "chat"})
//	if err != nil { … }           // says which of project, database, namespace or Pub/Sub failed
//	hub, err := moitessier.New(store, moitessier.Options{})
//
// Credentials are Application Default Credentials; with DATASTORE_EMULATOR_HOST
// (and PUBSUB_EMULATOR_HOST) set, the emulators. Stores on different
// namespaces or databases of one project are independent. New reads the
// namespace's meta entity and creates it if it is missing (Config.NoCreate
// refuses a namespace that holds no store); a project or database that does
// not exist, or a Datastore that does not answer, fails there, writing
// nothing.
//
// # Entities
//
// Every entity is in the store's namespace; kinds are prefixed "Mt":
//
//	MtMeta      "store"            layout version; pattern version
//	MtListener  "l"+ID             type, owner, scopes (indexed), Wild (indexed), created,
//	                               incarnation, Head, subscriber count, Touched (indexed)
//	MtSub       child of listener  cursor, joined, Lease (indexed); named "u"+person+"\x01"+client
//	MtMsg       child of MtGen(ID/incarnation), numeric ID = seq
//	                               dispatch, scope, sender, text, Created (indexed)
//	MtKey       "k"+sender+"\x01"+key   At (indexed), fingerprint, the messages written
//	MtScope     "v"+scope          version and listener count of a concrete scope
//	MtPerson    "p"+person         listeners, Handler and Shared listeners, subscriptions held (quota)
//	MtTomb      "t"+ID/incarnation At (indexed): a deleted incarnation
//
// Only the properties queried are indexed, and every query is served by a
// built-in single-property index or by keys: no composite index (no
// index.yaml) is needed. Two indexed properties grow with time across the
// whole namespace, a listener's Touched and a message's Created (and the
// message keys of one listener grow too); Datastore's guidance warns that
// such an index becomes a hot spot beyond about 500 writes a second until
// it has been split, so a namespace that will take more should ramp up
// (Google's 500/50/5 rule) or spread its load over several namespaces.
//
// # Sequence numbers that never skip
//
// A listener's Head is a property of its entity. Append is one read-write
// transaction that reads the listener entities of its batch, gives each
// message its listener's Head+1 (and so on), and writes the messages and
// the raised heads. Transactions are serializable: a transaction that wrote
// seq n+1 read the head n that the transaction writing n committed, so it
// commits after it, and a reader that sees n+1 sees n. Concurrent appends
// to one listener, from any number of processes, conflict on its entity;
// Datastore aborts all but one, and the store runs the aborted ones again
// (exponential backoff from 5 ms to 1 s, for up to Config.RetryFor), so a
// dispatcher sees no error while the listener is merely busy. The
// out-of-order commits of SQL sequences cannot happen: no sequence number is
// taken before the commit that makes it visible.
//
// Messages are children of an incarnation key (listener ID and a random
// name chosen at creation), never stored itself: deleting a listener
// deletes its entity and writes a tombstone in one transaction, which makes
// all its messages unreachable at once whatever their number; Sweep deletes
// them later in batches. A listener created again under the same ID has a
// new incarnation and starts empty.
//
// # Hot listeners: combined appends
//
// Datastore sustains about one write per second per entity group in its
// guidance and conflicting transactions abort, so a busy room must not cost
// one transaction per message. A store runs at most Config.Writers append
// transactions at once and never two that write the same listener;
// Appends that wait for a listener go, together with every other queued
// Append that fits, in the next transaction. A busy listener therefore
// takes one transaction per round whatever the number of waiting
// dispatches: the more dispatches wait, the more each commit carries.
// Between processes, the transactions of different stores on one listener
// conflict and are retried, each carrying its process's combined batch.
//
// # Limits of one dispatch
//
// A dispatch is one commit, so it is bounded by what one commit may hold:
// Config.MaxMutations entities (default 500, the limit Cloud Datastore
// documented per commit; Firestore in Datastore mode's limits page lists
// only the 10 MiB transaction size, and the emulator enforces neither; a
// dispatch writes one message and one head per listener reached, so at
// most 249 listeners with an idempotency key, 250 without),
// Config.MaxCommitBytes (9 MiB of Datastore's 10 MiB; 3 MiB on the
// emulator, which refuses requests of 4 MiB) and 1 MiB per message entity.
// A dispatch past one of them fails with a [*LimitError] (errors.Is
// ErrCommitLimit and moitessier.ErrTooLarge) before anything is written;
// combined dispatches are split into more transactions instead, never
// spread one dispatch over two. A transaction must also finish within
// Datastore's 270 seconds, far more than any of these takes.
//
// # Matching
//
// Concrete scopes are found by an equality query on the listeners' indexed
// Scopes. Wildcard patterns are matched in Go against this process's index
// of every pattern, reloaded when the namespace's pattern version changes
// (every transaction that creates or deletes a pattern listener changes
// it). The hub matches through [Store.MatchCached]: an answer cached in the
// process, stamped with the pattern version and the scope's version
// (MtScope, changed by every transaction that creates or deletes a listener
// hearing that scope). Append reads both in its transaction and fails with
// moitessier.ErrStale, writing nothing, if either moved; the hub then
// matches again. So a dispatch to a known scope costs one transaction and
// no query.
//
// # Wake-ups, and an idle listener costs nothing
//
// After an append commits, the store publishes the new heads on Cloud
// Pub/Sub (package wake; Config.NoPubSub turns it off), each with its
// listener's creation time, which tells its incarnations apart, and
// [Store.Watch] hears those of every process. (The creation times ride in
// an entry of their own after the heads, which a process of an earlier
// version of this package takes for the head of a listener no one
// listens to: processes of both versions hear each other, the earlier
// one's heads with no incarnation.) The store's subscription is created by New
// and read from the first Watch call on, so the wake-ups published while
// the hub's Watch goroutine has yet to run are kept for it, not dropped.
// For a lost wake-up the hub calls
// [Store.Heads] every few seconds with its listeners: that reads a
// listener once, the first time, and then only finds what changed since
// the previous call with two keys-only queries (listeners whose indexed
// Touched moved, and tombstones), billed as one entity read each, whatever
// the number of listeners. A listener with nobody dispatching to it costs
// no Datastore read.
//
// # Retention
//
// [Store.Sweep] finds what to delete through keys-only queries on indexed
// properties (a subscriber's Lease, a message's Created, a key's At, the
// tombstones) and deletes it in batches. Expiring subscribers, and the
// listeners they leave empty, are transactions; deleting messages needs
// none, since a deleted message is never written again. MaxCount reads
// every listener once per Sweep.
package clouddatastore
