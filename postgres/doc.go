// Package postgres is the [moitessier.Store] for many processes on one
// PostgreSQL database, on github.com/jackc/pgx/v5. It also implements
// [moitessier.Watcher], so a hub in one process wakes its listeners when
// another process dispatches, and [moitessier.Closer].
//
//	store, err := postgres.Open(ctx, "postgres://app@db:5432/app")
//	if err != nil { … }           // names the host it could not reach
//	hub, err := moitessier.New(store, moitessier.Options{})
//
// [New] takes a [Config]: another schema (default "moitessier"), a pool of
// your own ([Config.Pool], at READ COMMITTED; the store does not close
// it), or migrations run as a separate step ([Migrate] and
// [Config.SkipMigrate]). Pool sizes and
// timeouts go in the DSN (pool_max_conns=16); pgxpool's default of
// max(4, cores) connections is small for a busy hub, so without
// pool_max_conns the store allows 16. Each connection caches 128 prepared
// statements unless the DSN sets statement_cache_capacity (see
// [Config.DSN]).
//
// # Schema and migrations
//
// The tables live in one schema; stores on different schemas of one
// database are independent. Migrations are versioned in the package
// (migrations/NNNN_name.sql, embedded) and recorded in schema_migrations.
// [Migrate] applies those missing in one transaction under
// pg_advisory_xact_lock, so processes that start together apply them once.
// Times are stored as Unix nanoseconds, so they round-trip exactly (times
// before 1678 or after 2262 are clamped; the zero time.Time is kept).
// Message texts are bytea and every value is a bound parameter: any text,
// NUL bytes, quotes and SQL included, comes back byte for byte.
//
// # Sequence numbers that never skip
//
// Each listener row holds its head. Append raises it with UPDATE … SET
// head = head + n … RETURNING in the statement that inserts the messages,
// so the row lock serialises the writers of one listener until commit: the
// message with seq n+1 cannot be written before the transaction that wrote
// n has committed, and a reader that sees n+1 sees n. This avoids the
// failure of BIGSERIAL ids, where a lower id can commit after a higher one
// is already visible and a reader that moved past it loses it for good.
// Appends lock their listeners in id order, so they cannot deadlock with
// each other.
//
// The price is that appends to one listener are serial, each holding the
// row until its commit is flushed: one listener takes at most about
// 1 / (commit latency) appends a second, whatever the number of writers,
// while appends to different listeners run in parallel. Setting
// synchronous_commit=off (in the DSN: options=-c%20synchronous_commit%3Doff)
// removes the flush from the critical section, at the cost PostgreSQL
// documents: a server crash may lose the last few hundred milliseconds of
// commits, and with them sequence numbers that readers may already have
// seen, and pattern versions that hubs have cached (every join is then
// asynchronous, and so are the pattern version's raises by Leave and
// Sweep).
//
// # Fan-out in one statement, and combined appends
//
// Append is one SQL statement whatever the number of entries: the entries
// travel as arrays, unnest turns them into rows, one UPDATE raises every
// head, one INSERT writes every message, and pg_notify sends the new heads
// — one round trip, atomic without an explicit transaction. It is the
// fastest of the strategies BenchmarkFanOutStrategies compares (a
// statement per entry pipelined in a pgx.Batch inside a transaction, a
// statement per entry with one round trip each); the figures are in the
// README's benchmark section.
//
// We chose a row per message over storing a dispatch once and fanning out
// on read: the per-listener sequence must be stored for every listener
// anyway (the head update and an index entry per delivery), and rows that
// referenced a shared dispatch instead of holding its scope, sender and
// dispatch id inserted only a little faster in a bulk-insert measurement
// (see the README's benchmark section), while every read would need a
// join.
//
// Concurrent Appends of one store are combined (see [Config.Writers] and
// [Config.MaxCombine]): while Writers statements are running, further
// Appends queue, and the next statement carries all of them, committed
// once. This matters because appends to one listener are serial until each
// commit is flushed: with combining, eight writers appending single
// messages to one listener append several times faster (figures in the
// README's benchmark section).
// An idle store sends a batch at once, so combining adds no latency.
// Batches with an idempotency key, and [Store.AppendTx], are not combined.
//
// # Matching across processes
//
// Listeners are shared by all processes, so [Store.Match] must see the
// listeners any of them created. Concrete scopes are in listener_scopes,
// found by an index. Wildcard patterns ("room.*", "user.42.>") are matched
// in Go against an index of every pattern, cached in each process. A
// counter in the meta table (pattern_version) is raised in the transaction
// of every creation and deletion of a pattern listener, and the Match query
// reads it in the same snapshot as the listeners: if it differs from the
// version the cache was loaded at, the cache is reloaded and the query run
// again. So Match costs one round trip, and a pattern listener created by
// any process before Match began is always found.
//
// A dispatch should not pay that round trip every time: the listeners of a
// scope rarely change between two dispatches to it. The hub's Dispatch
// matches through [Store.MatchCached] ([moitessier.MatchCacher]), which
// answers from this process's cache of recent Match answers (up to 10 000
// scopes), stamped with the pattern version and the scope's version they
// were read at. A scope's version (table scope_versions) changes, under
// the row's lock, in every transaction that creates or deletes a listener
// on it: by an exclusive or with the listener's tag, a random number other
// than 0 that the process creating it chose (migration 10), so that a
// scope no listener has reads 0 and one with listeners the exclusive or of
// their tags; or, for a listener made by an earlier version of this
// package, which has no tag, to a random number (migration 7). A version
// comes back only with the same listeners, in the same creations, or by a
// chance of about 2^-64: not after a crash that lost an asynchronous join
// (below), as the writing transaction's id, the version of migration 2,
// could. Append's statement
// checks the stamp in its own snapshot: if a listener was created or
// deleted on the scope since, it writes nothing and fails with
// moitessier.ErrStale, and the hub matches again (refreshing the cache)
// and appends again. So a
// dispatch to a known scope costs one round trip, the append, and nothing
// is stored from a stale answer, whichever process changed the listeners.
// A dispatch to a scope the cache has no answer for goes through
// [Store.MatchAppend] ([moitessier.MatchAppender]): one statement matches
// the scope and appends, in one snapshot, to the listeners that take the
// text as is, and caches the answer, so it too costs one round trip; only
// when a Handler listener has handlers to run does it match alone, and the
// append follows as above (handlers may have run on a stale answer; they
// run again on the fresh one). A dispatch that is not addressed, has no
// handlers and no To, to a scope no pattern listener matches, is first
// sent as a smaller statement that writes only when the scope has exactly
// one listener (the common case, and cheaper for the server); to a scope
// of several it writes nothing, and the general statement follows: two
// round trips, once per cached answer. A
// dispatch from a cached answer that stores nothing has no append to check
// it, so the hub compares it with a fresh Match. The versions are written
// by a trigger on listener_scopes, so processes running an earlier version
// of this package keep them too. Any creation or deletion of a pattern
// listener changes the pattern version, which makes every cached answer
// stale once: the cache suits listeners that change less often than
// their scopes are dispatched to. Sweep removes the versions of scopes no
// listener has. The schema needs PostgreSQL 11 or newer.
//
// A join that creates a listener knows, without reading it, the version it
// gave each of the listener's scopes: the version before, exclusive or the
// tag. So it leaves its process the scopes' answers: a cached answer gets
// the new listener and the new stamp, and a scope with none gets the
// listener alone at the stamp of a scope no listener had, when no pattern
// of the process's index matches it and the cache has room (a seed drops
// no answer a dispatch read). The first dispatch to the scope then goes
// out as an append from a cached answer, cheaper for the server than
// MatchAppend's statement. These answers are guesses, wrong when another
// process changed the scope's listeners meanwhile: the stamp check above
// catches them, and that dispatch matches again, one round trip more. A
// join of a pattern listener drops every cached answer, and seeds none
// until the next Match reloads the index. An answer of 64 listeners or
// more is dropped rather than copied at each join.
//
// The deletion of a listener, by [Store.Leave] or by Sweep, does the
// same backwards: the process that deleted it takes it out of the cached
// answers that hold it (that creation of it: a listener made again keeps
// its ID), at their version exclusive or its tag, and drops those that do
// not hold it, and those that would be left empty. So a scope whose
// listeners come and go in one process keeps its answer.
//
// # Joining in one round trip
//
// [Store.Join] alone is one statement: a call of the PL/pgSQL function
// join_listener (migration 5; 8 adds the trim lock under Retention, and
// 10 the scopes' tag, above), its own transaction (joins from many callers at once share
// one, below), which inserts the
// listener unless it exists, its scopes (the trigger above records their
// versions; a pattern raises the pattern version), the subscriber unless
// it exists (else it extends the lease), checks the quota of what it
// created, and returns the stored listener and subscriber. The quota counts
// run after a transaction-level advisory lock of the person, each in a
// statement with a snapshot of its own, so the joins of one person, from
// any process, count in turn; a join that creates nothing (a lease
// renewal) takes no lock. Past a quota the function raises SQLSTATE MQ001
// and nothing is written.
//
// A join that creates a listener commits asynchronously
// (synchronous_commit off for its transaction) unless the listener has a
// pattern scope or [Config.DurableJoins] is set: it does not wait for the
// flush of its commit, which would bound one caller creating listeners one
// after the other by the disk's flush latency. Its changes are visible to
// every process at once, and PostgreSQL flushes them within three times
// wal_writer_delay, or with the next durable commit of a later transaction
// that writes, since the write-ahead log is flushed in order. Every other
// join waits for its flush, and so does every use of the listener: a
// dispatch that writes to it, another subscriber's join, Ack, and the join
// (a lease renewal) with which ListenUntil and Messages(Resume) begin. So a
// crash of the server can lose a creation only if nothing of the kind
// happened after it, and loses the listener with its first subscriber and
// nothing else: no message was written to it and no listen had begun on
// it. Hubs find it gone (a Listener handle's next calls report
// moitessier.ErrClosed, and joining again creates it anew); the scope's
// version goes back to one a hub may have cached, but an answer read at
// that version is that of the state the server went back to. What the
// loss can cost is a listener created ahead of its readers (an inbox made
// at sign-up, read later by its conditions): the next NewListener on its
// conditions creates it again, empty, and what was dispatched to its
// scopes between the server's recovery and that join reached no listener,
// with no error to tell its subscriber. Set DurableJoins where listeners
// are created ahead of their readers. A subscriber's join to an existing
// listener stays durable because losing it would move that subscriber's
// cursor when it joined again; a pattern listener's, because the pattern
// version is compared by order, and a lost raise would be handed out again
// for another set of patterns.
//
// Joins from many callers at once share statements. A store runs one join
// statement at a time (its turn); a join that comes while the turn is
// taken waits, and when it ends, up to 32 of those waiting go out
// together, sorted by listener, as one call of join_listeners (migration
// 9), in one transaction and one commit, each in a subtransaction of its
// own, then the next 32 that wait, and so on. Past a quota a join fails alone, and
// after any other error in it (a listener deleted under it, a deadlock
// with another transaction) it runs again alone, on its own, while the
// others return. A batch waits at most 100ms for a lock: if a join would
// wait longer, it and the joins after it in the batch run again alone,
// rather than hold up the batch; and a join sent alone that takes longer
// than 100ms hands its turn on and runs on outside the turn. If the
// server refuses a whole statement, each of its joins runs again alone.
// Joins that go together count against a quota in the order of their
// listeners' IDs, not of their arrival. The transaction commits
// asynchronously only if every join in it that succeeded may, as above.
// Clients arriving together, such as a hub's clients reconnecting after a
// restart, so cost the server a commit per batch rather than per join. A
// caller that gives up while its join waits returns at once, and its join
// is not sent; one that gives up after it was sent gets its answer if it
// comes within the grace a statement of its own would have.
//
// [Store.Leave] is one statement too, a call of leave_listener (migration
// 11), its own transaction, committed durably: it deletes the subscriber
// and, if none is left, locks the listener's row, deletes the listener
// (its scopes with it, which changes their versions) and its messages,
// each statement with a snapshot of its own, so that a join under way
// either commits first and keeps the listener, or fails its foreign key
// check and runs again.
//
// # Wake-ups: LISTEN/NOTIFY
//
// Append sends the new heads of the listeners it wrote with pg_notify on
// the schema's channel, in its own transaction, so the notification is
// delivered only on commit (never for a rolled-back dispatch). Each head
// carries its listener's creation time, which tells its incarnations apart
// (a listener deleted and made again keeps its ID): a hub whose local
// subscribers listen to another incarnation asks the store before it
// reads past that head, and ends them with ErrClosed rather than hand them
// the new incarnation's messages. The creation time is an item of its own
// after its head ("id head,~created"), which the parser of an earlier
// version of this package skips, so that processes of both versions on one
// schema hear each other. A payload holds at most [Config.NotifyBatch]
// heads (default 80, about 6 000 bytes at most; the limit is 8 000); a
// larger fan-out sends several. [Store.Watch] holds
// one dedicated connection per call (the hub makes one call per store,
// whatever its number of listeners), reconnects with exponential backoff
// when the connection drops, and, once its LISTEN is active (on the first
// connection too), reports the head of every listener with messages, since
// notifications sent before it listened are not delivered to it.
// [Store.ChangedHeads], the hub's periodic catch-up read, sends the heads
// of many listeners as the hub knows them, in one query, and the server
// returns only those that differ or are gone: a hub with 10 000 listened
// listeners and no news gets back no rows, where [Store.Heads] returns
// one per listener. The server still looks up every listener each time.
//
// An append notifies only when someone else listens. Each running Watch
// registers in the schema's watchers table, and an append made by a hub's
// Dispatch leaves out that hub's own Watch (the hub publishes what it
// dispatches to its own subscribers; see moitessier.Origin). So the
// dispatches of a hub alone on its schema send no NOTIFY (but those with an
// idempotency key, below), and its server neither queues nor delivers one; a
// second hub, on the same store or another, in this process or another,
// makes every append notify again once its Watch registered. The append
// looks in its own statement, in the statement's snapshot, with no lock or
// function call of its own; a Watch that starts, between registering and
// reading the heads, waits for the transactions that hold the listeners
// table's ROW EXCLUSIVE lock (which every append statement takes before
// its snapshot), so that no append falls between the two. It waits for at
// most a second; it then reads the heads, and reads them again once the
// transactions it stopped waiting for have ended. It also takes the
// schema's gate exclusively, an advisory lock under which the appends of
// earlier versions of this package look (migration 6), and so waits for
// those too. What the hub does not
// publish notifies its Watch too: a direct Append, [Store.AppendTx] (which,
// like an Append with an idempotency key, notifies without looking, since
// its transaction spans round trips), and an Append whose outcome the hub
// does not learn (moitessier.ErrOutcomeUnknown: its caller stopped waiting,
// or the connection broke), after which the store notifies its listeners'
// current heads, read once a statement still writing them ends, within a
// second (past that, and for a MatchAppend, whose listeners it does not know
// then, they are left to the hub's catch-up read). Once an append found a
// Watch to notify, the store's appends notify without looking for a second.
// A hub that crashes leaves its registration behind, and appends notify it
// until a Watch starts or [Store.Sweep] runs, which delete the registrations
// of connections the server no longer has. Migrate refuses to open a schema
// newer than the package, but a hub of an older version already running on
// the schema during a rolling upgrade does not register: until it stops, it
// hears of the newer hubs' dispatches by its catch-up read (every 2 s by
// default). One that registers, but whose Watch takes only the gate, does
// not wait for this version's appends: what they wrote while it registered
// without notifying it, it hears of by that catch-up read.
//
// # Transactional dispatch
//
// [DispatchTx] (built on [Store.AppendTx]) dispatches inside the caller's
// own pgx.Tx: the messages become visible, and listeners in every process
// are woken, if and only if that transaction commits, which makes a
// transactional outbox with no extra machinery. The transaction holds the
// row locks of the listeners it wrote to until it ends: keep it short.
//
// # A caller that gives up
//
// A statement on a connection of the store's own pool (one made from
// Config.DSN) runs on for up to a second after its caller's context ends,
// and answers as if it had not; only then is its connection given up.
// pgx's default gives the connection up at once, so every caller that gave
// up during a statement outside a transaction (an HTTP client that hangs
// up during a dispatch, a join or a read) would cost the database a new
// connection, and the server a new process, at the rate such a client can
// send requests. A dispatch that had to queue (behind another statement to
// its listener, or Config.Writers statements, or other queued dispatches)
// and went out on one of the store's writers is the exception: its caller
// is answered moitessier.ErrOutcomeUnknown as soon as it gives up, and the
// statement runs on (one that gives up before a writer took it gets its
// context's error, and nothing is stored). In a transaction (a keyed
// dispatch) the statements after the one in its grace are refused,
// and the transaction is rolled
// back, or, if none was left, committed, under a context of its own that
// ends within the grace: pgx closes a connection whose rollback or commit
// fails. With a pool of your own (Config.Pool), its configuration
// decides. Close ends the graces under way and grants no more, and the
// watch connection (LISTEN) has none.
//
// # Retention
//
// [Store.Sweep] deletes in batches of at most SweepParams.BatchSize rows,
// each statement its own short transaction, every batch found through an
// index: expired subscribers by lease, messages by creation time (a B-tree
// on created_ns), the excess of each listener by (listener, seq), walking
// the listeners a page at a time, and idempotency keys by record time. The
// messages of a listener whose subscribers all expired are deleted in
// batches first, so deleting the listener is a small transaction; each of
// those batches first takes the listeners' trim locks, advisory locks that
// every join holds shared from before it reads the listener's head until
// it commits (migration 8), and only then checks that they are still
// doomed, so that a lease renewed by a join under way, and a message
// appended after that join read the head, are seen and kept; a listener
// whose lock a join holds is left to the next sweep rather than waited
// for. We chose
// batched deletes over dropping time partitions: partitions would drop old
// messages for free, but retention here is also per listener (MaxCount) and
// per listener deletion, which partitions do not help, and the primary key
// (listener, seq) would have to include the partition key. The B-tree on
// created_ns costs bulk inserts more than a BRIN index would, but a BRIN
// index stays selective only while rows are stored in time order, which
// stops being true once deleted space is reused; deleting a batch of old
// messages through the B-tree is cheap (figures in the README's benchmark
// section).
package postgres
