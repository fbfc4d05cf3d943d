package postgres

import (
	"strconv"
	"strings"
)

// queries holds the store's SQL with the schema filled in. Every value is a
// bound parameter; only the schema identifier, quoted by pgx.Identifier, is
// spliced into the text.
type queries struct {
	join, joinBatch, bumpPatterns, listener                                          string
	subscribers, leave                                                               string
	match, loadPatterns, heads, changedHeads, changedHeadsOf, allHeads               string
	append, appendOne, appendSingle, appendScalar, claimKey, recordKey, replay, read string
	readOf                                                                           string
	matchAppend, matchAppendSingle                                                   string
	keyFingerprint                                                                   string
	seek, checkpoint                                                                 string
	expiredListeners, lockTrim, trimDoomed, expireSubscribers                        string
	lockListeners, deleteEmptyListeners, deleteMsgsOf                                string
	deleteOld, listenerPage, trimPage, deleteKeys                                    string
	lockUnusedScopes, deleteUnusedScopes                                             string
	registerWatcher, deleteWatcher, deleteGoneWatchers, gate                         string
	listenerWriters, writersLeft                                                     string
	notifyHeadsOf, notifyScopeHeads                                                  string
}

// notifyUp is the column of the append statements that sends the new
// heads of the listeners in up (the statement's updated rows), each with
// its listener's creation time (see parseHeads), by NOTIFY on
// @channel, @notify_batch of them per payload, when mustNotifyUp says a
// Watch is to hear of them (see watchers.go). It cuts one array of them in
// slices rather than grouping rows by row_number(), which set up a window
// and a hash aggregation at every execution of the statement, even when
// no Watch was to hear and that part did not run.
const notifyUp = `(
				SELECT count(pg_notify(@channel, array_to_string(x.a[k * @notify_batch + 1:(k + 1) * @notify_batch], ',')))
				FROM (SELECT array_agg(id || ' ' || head || ',~' || created_ns) AS a FROM up) x, generate_series(0, (cardinality(x.a) - 1) / @notify_batch) k
				WHERE ` + mustNotifyUp + `
			)`

// mustNotifyUp says whether the rows written to up are to be notified:
// when some were, and watchOther says so.
const mustNotifyUp = `(EXISTS (SELECT 1 FROM up) AND ` + watchOther + `)`

// watchOther says whether an append with @self is to notify (see
// watchers.go): when @self is selfAlways, when the transaction's level is
// stricter than READ COMMITTED (its snapshot may then be older than the
// statement's locks), or when the watchers table, as the statement's
// snapshot has it, holds a Watch other than @self. It takes no lock and
// calls no function of the schema's: a Watch that registers waits for the
// appends that may have looked before its row was there (they hold the
// listeners table's ROW EXCLUSIVE lock), rather than appends taking a gate.
const watchOther = `(@self::text = '' OR current_setting('transaction_isolation') <> 'read committed'
				OR EXISTS (SELECT 1 FROM S.watchers w WHERE w.id <> @self::text))`

func buildQueries(schema string) queries {
	r := strings.NewReplacer("S.", schema+".")
	q := queries{
		// join is Store.Join: one call of the function of migration 10
		// (join_listener; $19 is the tag of the listener's scopes), one
		// round trip, its own transaction. When $18
		// is true and the call created the listener, it turns
		// synchronous_commit off for that transaction (see
		// Config.DurableJoins), in the row it returns, after the function
		// ran; the setting is read at commit.
		join: `SELECT created, ltype, lperson, lclient, lscopes, lcreated, lhead, cur, joined, lease,
				CASE WHEN $18::boolean AND created THEN set_config('synchronous_commit', 'off', true) END
			FROM S.join_listener($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $19)`,
		// joinBatch is several joins in one call of the function of
		// migration 10 (join_listeners), one transaction: a row each, in
		// their order (see joins.go).
		joinBatch: `SELECT i, status, created, ltype, lperson, lclient, lscopes, lcreated, lhead, cur, joined, lease
			FROM S.join_listeners($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)`,
		bumpPatterns: `UPDATE S.meta SET pattern_version = pattern_version + 1`,
		listener:     `SELECT id, type, person, client, scopes, created_ns, head FROM S.listeners WHERE id = $1`,
		// subscribers reads a page from the primary key's index (its
		// columns are COLLATE "C": byte order); the LEFT JOIN returns one
		// row with no subscriber when the listener exists but the page is
		// empty. LIMIT NULL is no limit.
		subscribers: `SELECT s.person, s.client, s.cursor, s.joined_ns, s.lease_ns
			FROM S.listeners l LEFT JOIN LATERAL (
				SELECT person, client, cursor, joined_ns, lease_ns FROM S.subscribers
				WHERE listener = l.id AND (person, client) >= ($2::text, $3::text)
				ORDER BY person, client LIMIT $4
			) s ON true WHERE l.id = $1`,
		// leave is Store.Leave and LeaveOf ($4: the incarnation, or NULL):
		// one call of the function of migration 11 (leave_listener), one
		// round trip, its own transaction.
		leave: `SELECT subscribed, deleted, lscopes, coalesce(lcreated, 0), wild, tag FROM S.leave_listener($1, $2, $3, $4)`,

		// match reads, in one snapshot, the pattern version, the scope's
		// version, and the listeners named by a concrete scope or by the ids
		// the cached pattern index matched. The LEFT JOIN returns one row
		// even when nothing matches, so the versions always come back. The
		// ids are an array, as in matchAppend (see there).
		match: `SELECT m.pattern_version, coalesce((SELECT v.version FROM S.scope_versions v WHERE v.scope = $1), 0),
				l.id, l.type, l.person, l.client, l.scopes, l.created_ns, l.head
			FROM S.meta m LEFT JOIN S.listeners l
				ON l.id = ANY(ARRAY(SELECT listener FROM S.listener_scopes WHERE scope = $1 AND NOT wild) || $2::text[])`,
		loadPatterns: `SELECT m.pattern_version, x.listener, x.scope
			FROM S.meta m LEFT JOIN S.listener_scopes x ON x.wild`,
		heads:    `SELECT id, head, created_ns FROM S.listeners WHERE id = ANY($1::text[])`,
		allHeads: `SELECT id, head, created_ns FROM S.listeners WHERE id > $1 AND head > 0 ORDER BY id LIMIT $2`,
		// changedHeads is ChangedHeads: of the listeners $1, with the
		// heads $2 and creation times $3 (Unix nanoseconds; the lowest
		// bigint, as for a row's: not known) their caller knows, those
		// gone (found false), and those whose head is higher, whose
		// creation time is known and another, or whose creation time the
		// caller does not know. The three arrays come as the text of
		// array literals (see arrayLiterals); changedHeadsOf is the same
		// statement with them as arrays.
		changedHeads: `SELECT k.id, l.id IS NOT NULL, coalesce(l.head, 0), coalesce(l.created_ns, 0)
			FROM unnest($1::text::text[], $2::text::bigint[], $3::text::bigint[]) AS k(id, head, created)
			LEFT JOIN S.listeners l ON l.id = k.id COLLATE "C"
			WHERE l.id IS NULL OR l.head > k.head OR k.created = -9223372036854775808
				OR l.created_ns <> k.created AND l.created_ns <> -9223372036854775808`,

		// append is Append's one statement; it may carry several batches
		// (see combine.go). Its parameters are named (appendArgs builds
		// them; bindNames numbers them once, when the store opens): @ids
		// and @counts, the distinct listener ids, sorted, and how many
		// entries each has; @entry_listener, @entry_body, @entry_rank and
		// @entry_batch, each entry's listener, body, 1-based rank among its
		// listener's entries, and 1-based batch; @batch_dispatch,
		// @batch_scope, @batch_sender and @batch_created, each batch's
		// dispatch, scope, sender and creation time; @stamp_patterns and
		// @stamp_scope, each batch's match stamp (pattern and scope
		// version, see moitessier.MatchStamp) or -1.
		// stale lists the batches whose stamp no longer holds; if there is
		// one, nothing is written and the statement returns one row per
		// stale batch, with only the last column set. Otherwise lk locks
		// the listeners in id order (so concurrent appends cannot
		// deadlock); up raises each head by its count; ins writes the
		// messages with seq = old head + rank; the fourth column sends the
		// new heads by NOTIFY, @notify_batch of them per payload on channel
		// @channel, if watchOther says a Watch is to hear of them (see
		// watchers.go), and not at all when nothing was written. A
		// listener that no longer exists has no row in lk, so its entries
		// are skipped.
		append: `WITH c AS MATERIALIZED (
				SELECT id, n FROM unnest(@ids::text[], @counts::bigint[]) AS c(id, n)
			), bt AS (
				SELECT * FROM unnest(@batch_dispatch::text[], @batch_scope::text[], @batch_sender::text[], @batch_created::bigint[], @stamp_patterns::bigint[], @stamp_scope::bigint[])
					WITH ORDINALITY AS bt(dispatch, scope, sender, created_ns, pv, sv, i)
			), stale AS MATERIALIZED (
				SELECT bt.i FROM bt WHERE bt.pv >= 0 AND (
					bt.pv <> (SELECT pattern_version FROM S.meta)
					OR bt.sv <> coalesce((SELECT v.version FROM S.scope_versions v WHERE v.scope = bt.scope), 0))
			), lk AS MATERIALIZED (
				SELECT l.id FROM S.listeners l WHERE l.id = ANY(@ids::text[]) AND NOT EXISTS (SELECT 1 FROM stale)
				ORDER BY l.id FOR NO KEY UPDATE
			), up AS (
				UPDATE S.listeners l SET head = l.head + c.n FROM c
				WHERE l.id = c.id AND l.id IN (SELECT id FROM lk)
				RETURNING l.id, l.head, c.n, l.created_ns
			), ins AS (
				INSERT INTO S.messages (listener, seq, dispatch, scope, sender, body, created_ns)
				SELECT e.listener, up.head - up.n + e.k, bt.dispatch, bt.scope, bt.sender, e.body, bt.created_ns
				FROM unnest(@entry_listener::text[], @entry_body::bytea[], @entry_rank::bigint[], @entry_batch::bigint[]) AS e(listener, body, k, b)
				JOIN up ON up.id = e.listener
				JOIN bt ON bt.i = e.b
			)
			SELECT id, head, n, ` + notifyUp + `, NULL::bigint FROM up
			UNION ALL
			SELECT NULL, NULL, NULL, NULL, i FROM stale`,
		// matchAppend is MatchAppend's one statement: match, then append
		// one message of @body to each listener the dispatch's selection
		// takes, in one snapshot. m holds the matched listeners (as
		// match finds them); v the pattern version, the scope's version,
		// and ok: the pattern ids come from an index at the current
		// version, and no Handler listener matched a dispatch with
		// handlers that is not addressed. Only when ok does lk lock the listeners taken (by
		// moitessier.Selection.Takes, in SQL) in id order; up raises
		// their heads and ins writes the messages, as append does. One
		// row per matched listener (or one with no listener) comes back,
		// with the versions, ok, and the new head where a message was
		// written. Its sets of listeners are arrays (= ANY(ARRAY(…))),
		// which the server looks up in the primary key's index whatever
		// its statistics of the tables, rather than IN (subquery) or
		// UNION: a generic plan of those made before the server had
		// statistics (a new schema's first minute, before an ANALYZE)
		// could read every listener at every call
		// (BenchmarkMatchAppend/fresh).
		matchAppend: `WITH m AS MATERIALIZED (
				SELECT l.id, l.type, l.person, l.client, l.scopes, l.created_ns, l.head FROM S.listeners l
				WHERE l.id = ANY(ARRAY(SELECT listener FROM S.listener_scopes WHERE scope = @scope AND NOT wild) || @pattern_ids::text[])
			), v AS MATERIALIZED (
				SELECT x.pattern_version AS pv,
					coalesce((SELECT sv.version FROM S.scope_versions sv WHERE sv.scope = @scope), 0) AS sv,
					x.pattern_version = @pattern_version
						AND NOT (@handlers AND NOT @addressed AND EXISTS (SELECT 1 FROM m WHERE m.type = @handler_type)) AS ok
				FROM S.meta x
			), lk AS MATERIALIZED (
				SELECT l.id FROM S.listeners l
				WHERE l.id = ANY(ARRAY(SELECT m.id FROM m WHERE CASE WHEN m.type = @private_type
						THEN m.person = @sender OR m.person = ANY(@recipients::text[])
						ELSE NOT @addressed AND NOT (@handlers AND m.type = @handler_type) END))
					AND (SELECT ok FROM v)
				ORDER BY l.id FOR NO KEY UPDATE
			), up AS (
				UPDATE S.listeners l SET head = l.head + 1 WHERE l.id = ANY(ARRAY(SELECT id FROM lk))
				RETURNING l.id, l.head, l.created_ns
			), ins AS (
				INSERT INTO S.messages (listener, seq, dispatch, scope, sender, body, created_ns)
				SELECT id, head, @dispatch, @scope, @sender, @body, @created FROM up
			)
			SELECT v.pv, v.sv, v.ok, m.id, m.type, m.person, m.client, m.scopes, m.created_ns, m.head, up.head, ` + notifyUp + `
			FROM v LEFT JOIN (m LEFT JOIN up ON up.id = m.id) ON true`,
		// matchAppendSingle is matchAppend for a dispatch that is not
		// addressed, has no handlers and no To, to a scope no pattern
		// listener matches (the Shared case, and a person's own Private
		// listener): a listener is taken unless it is a Private listener
		// of someone other than @sender. It writes only when the scope has
		// exactly one listener, whose row its UPDATE locks by itself (there
		// is no order of several rows' locks to keep), and leaves out
		// matchAppend's CTEs of matched, version and locked rows, which
		// cost the server more than their work (see the README's
		// benchmarks). The UPDATE checks the pattern version and reads the
		// scope's listeners in the statement's snapshot, as matchAppend
		// does. Its rows are matchAppend's: the written listener, with the
		// versions read and the head it had; or, when nothing was written,
		// the scope's listener (or one row with none, or two of its
		// listeners when it has several) as the snapshot has them, with ok
		// saying whether the pattern version held. A caller that gets more
		// than one listener back, with ok, has written nothing, and sends
		// matchAppend instead; one that gets ok false matches again. Neither
		// keeps the answer.
		matchAppendSingle: `WITH up AS (
				UPDATE S.listeners l SET head = l.head + 1
				WHERE l.id = (SELECT min(x.listener) FROM (
						SELECT listener FROM S.listener_scopes WHERE scope = @scope AND NOT wild LIMIT 2) x HAVING count(*) = 1)
					AND (l.type <> @private_type OR l.person = @sender)
					AND (SELECT pattern_version FROM S.meta) = @pattern_version
				RETURNING l.id, l.type, l.person, l.client, l.scopes, l.created_ns, l.head
			), ins AS (
				INSERT INTO S.messages (listener, seq, dispatch, scope, sender, body, created_ns)
				SELECT id, head, @dispatch, @scope, @sender, @body, @created FROM up
			)
			SELECT @pattern_version::bigint, coalesce((SELECT sv.version FROM S.scope_versions sv WHERE sv.scope = @scope), 0), true,
				id, type, person, client, scopes, created_ns, head - 1, head,
				CASE WHEN ` + watchOther + `
					THEN (SELECT 1::bigint FROM pg_notify(@channel, id || ' ' || head || ',~' || created_ns)) ELSE 0 END
			FROM up
			UNION ALL
			SELECT x.pattern_version, coalesce((SELECT sv.version FROM S.scope_versions sv WHERE sv.scope = @scope), 0), x.pattern_version = @pattern_version,
				l.id, l.type, l.person, l.client, l.scopes, l.created_ns, l.head, NULL, 0
			FROM S.meta x LEFT JOIN S.listeners l ON l.id = ANY(ARRAY(SELECT listener FROM S.listener_scopes WHERE scope = @scope AND NOT wild LIMIT 2))
			WHERE NOT EXISTS (SELECT 1 FROM up)`,
		// appendOne is append for at most @notify_batch listeners: their heads fit
		// in one payload, which saves the chunking. appendSingle is
		// appendOne for one listener: its UPDATE locks the one row, so the
		// separate locking step, there to take several rows' locks in id
		// order, is left out (what that saves is in the README's benchmark
		// section).
		appendOne: "", appendSingle: "",
		// appendScalar is appendSingle for one batch of one entry, its
		// values given as scalars (see appendScalarParams): no array to
		// encode, unnest or join, and one head to notify. Its UPDATE checks
		// the match stamp itself (unless @stamp_patterns is -1), so that
		// a stale stamp and a deleted listener alike write nothing and
		// return no row, and the dispatch matches again. (A CTE of
		// stale batches, as append has, cost the server more: see the
		// README's benchmarks.)
		appendScalar: `WITH up AS (
				UPDATE S.listeners l SET head = l.head + 1
				WHERE l.id = @listener::text AND (@stamp_patterns::bigint < 0 OR (
					@stamp_patterns = (SELECT pattern_version FROM S.meta)
					AND @stamp_scope::bigint = coalesce((SELECT v.version FROM S.scope_versions v WHERE v.scope = @scope::text), 0)))
				RETURNING l.id, l.head, l.created_ns
			), ins AS (
				INSERT INTO S.messages (listener, seq, dispatch, scope, sender, body, created_ns)
				SELECT id, head, @dispatch::text, @scope, @sender::text, @body::bytea, @created::bigint FROM up
			)
			SELECT head, CASE WHEN ` + watchOther + ` THEN (SELECT true FROM pg_notify(@channel::text, id || ' ' || head || ',~' || created_ns)) ELSE false END FROM up`,
		// claimKey records an idempotency key with its request's
		// fingerprint ($5), or takes over one recorded before the window
		// ($4); it returns no row when the key is taken.
		claimKey: `INSERT INTO S.dispatch_keys AS k (sender, key, recorded_ns, fingerprint) VALUES ($1, $2, $3, $5)
			ON CONFLICT (sender, key) DO UPDATE
				SET recorded_ns = EXCLUDED.recorded_ns, listeners = '{}', seqs = '{}', fingerprint = EXCLUDED.fingerprint
				WHERE k.recorded_ns < $4
			RETURNING true`,
		keyFingerprint: `SELECT fingerprint FROM S.dispatch_keys WHERE sender = $1 AND key = $2`,
		recordKey:      `UPDATE S.dispatch_keys SET listeners = $3, seqs = $4 WHERE sender = $1 AND key = $2`,
		// replay reads a recorded keyed batch's messages that still
		// exist. One at a recorded (listener, seq) whose creation time is
		// not the key's (recorded_ns is its batch's) is another
		// dispatch's: the listener was deleted, made again, and numbered
		// from 1 anew.
		replay: `SELECT m.listener, m.seq, m.dispatch, m.scope, m.sender, m.body, m.created_ns
			FROM S.dispatch_keys k
			CROSS JOIN LATERAL unnest(k.listeners, k.seqs) WITH ORDINALITY AS x(listener, seq, ord)
			JOIN S.messages m ON m.listener = x.listener AND m.seq = x.seq
				AND m.created_ns = k.recorded_ns AND m.sender = k.sender
			WHERE k.sender = $1 AND k.key = $2
			ORDER BY x.ord`,
		read: `SELECT listener, seq, dispatch, scope, sender, body, created_ns FROM S.messages
			WHERE listener = $1 AND seq > $2 ORDER BY seq LIMIT $3`,
		// readOf is read while the listener is the incarnation created at
		// $4 (ReadOf).
		readOf: `SELECT listener, seq, dispatch, scope, sender, body, created_ns FROM S.messages
			WHERE listener = $1 AND seq > $2 AND EXISTS (SELECT 1 FROM S.listeners WHERE id = $1 AND created_ns = $4)
			ORDER BY seq LIMIT $3`,
		seek: `SELECT l.head, (SELECT min(m.seq) FROM S.messages m WHERE m.listener = l.id AND m.created_ns >= $2)
			FROM S.listeners l WHERE l.id = $1`,
		// checkpoint locks the rows in key order, then raises cursors. A
		// checkpoint applies only to the incarnation of the listener it
		// names (created_ns), or to any (the zero time, math.MinInt64).
		// One subscriber may have two that apply (one naming its
		// incarnation, one none): a folds them into one row, the larger
		// cursor and the last lease given, as UPDATE … FROM applies only
		// one row per target.
		checkpoint: `WITH c AS MATERIALIZED (
				SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[])
					WITH ORDINALITY AS c(listener, person, client, cursor, lease_ns, created_ns, ord)
			), lk AS MATERIALIZED (
				SELECT s.listener, s.person, s.client, c.cursor, c.lease_ns, c.ord FROM S.subscribers s JOIN c USING (listener, person, client)
				WHERE c.created_ns = -9223372036854775808
					OR c.created_ns = (SELECT l.created_ns FROM S.listeners l WHERE l.id = c.listener)
				ORDER BY s.listener, s.person, s.client FOR NO KEY UPDATE OF s
			), a AS (
				SELECT listener, person, client, max(cursor) AS cursor,
					coalesce((array_agg(lease_ns ORDER BY ord DESC) FILTER (WHERE lease_ns <> -9223372036854775808))[1],
						-9223372036854775808) AS lease_ns
				FROM lk GROUP BY listener, person, client
			)
			UPDATE S.subscribers s SET
				cursor = greatest(s.cursor, a.cursor),
				lease_ns = CASE WHEN a.lease_ns = -9223372036854775808 THEN s.lease_ns ELSE a.lease_ns END
			FROM a WHERE (s.listener, s.person, s.client) = (a.listener, a.person, a.client)`,

		// Sweep. expiredListeners finds listeners all of whose subscribers'
		// leases ended; trimDoomed deletes a batch of their messages before
		// the listeners themselves go. It asks again, at every batch, which
		// of them still have no subscriber with a lease running at $3 (the
		// sweep's now): one that somebody joined (or whose lease was
		// renewed) since expiredListeners read it survives the sweep, and
		// its messages must too. The check runs in the statement's own
		// snapshot, so a join committed before the batch began stops it;
		// a message appended after such a join commits after it, so any
		// batch that can see the message also sees the subscriber. (A
		// bound on seq, the head read when the listener was chosen, would
		// spare only what came after the choice, and go on deleting what a
		// renewed subscriber has yet to read.) What is left open: a
		// message appended while a join is under way, after join_listener
		// read the head it starts the new subscriber at and before it
		// committed, can still be deleted, as the join does not keep
		// appends out of the listener's row.
		expiredListeners: `SELECT DISTINCT s.listener FROM S.subscribers s WHERE s.lease_ns < $1
			AND NOT EXISTS (SELECT 1 FROM S.subscribers t WHERE t.listener = s.listener AND t.lease_ns >= $1)
			ORDER BY 1 LIMIT $2`,
		// lockTrim takes the trim locks of listeners $1 (see migration 8)
		// exclusively where it can at once, and returns the listeners
		// whose lock it holds: one a join holds is skipped, not waited for
		// (it is likely not doomed any more, and the next sweep sees).
		lockTrim: `SELECT d.id FROM S.meta m CROSS JOIN unnest($1::text[]) AS d(id)
			WHERE pg_try_advisory_xact_lock(m.tableoid::integer, coalesce(nullif(hashtext(d.id), 0), 1))`,
		trimDoomed: `DELETE FROM S.messages WHERE (listener, seq) IN (
				SELECT listener, seq FROM S.messages
				WHERE listener = ANY(ARRAY(SELECT d.id FROM unnest($1::text[]) AS d(id)
					WHERE NOT EXISTS (SELECT 1 FROM S.subscribers s WHERE s.listener = d.id AND s.lease_ns >= $3)))
				LIMIT $2)`,
		expireSubscribers: `DELETE FROM S.subscribers s USING (
				SELECT listener, person, client FROM S.subscribers WHERE lease_ns < $1 ORDER BY lease_ns LIMIT $2
			) x WHERE (s.listener, s.person, s.client) = (x.listener, x.person, x.client) AND s.lease_ns < $1
			RETURNING s.listener`,
		lockListeners: `SELECT id FROM S.listeners WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE`,
		deleteEmptyListeners: `DELETE FROM S.listeners l WHERE l.id = ANY($1::text[])
				AND NOT EXISTS (SELECT 1 FROM S.subscribers s WHERE s.listener = l.id)
			RETURNING l.id, l.type, l.person, l.client, l.scopes, l.created_ns, l.head,
				EXISTS (SELECT 1 FROM S.listener_scopes x WHERE x.listener = l.id AND x.wild),
				coalesce((SELECT x.tag FROM S.listener_scopes x WHERE x.listener = l.id AND NOT x.wild LIMIT 1), 0)`,
		deleteMsgsOf: `DELETE FROM S.messages WHERE listener = ANY($1::text[])`,
		// deleteOld removes a batch of messages created before $1, found
		// through the index on created_ns.
		deleteOld: `DELETE FROM S.messages WHERE ctid = ANY(ARRAY(
				SELECT ctid FROM S.messages WHERE created_ns < $1 ORDER BY created_ns LIMIT $2))`,
		listenerPage: `SELECT max(id), count(*) FROM (SELECT id FROM S.listeners WHERE id > $1 ORDER BY id LIMIT $2) x`,
		// trimPage removes a batch of messages beyond the newest $3 of the
		// listeners in the id range ($1, $2].
		trimPage: `DELETE FROM S.messages WHERE (listener, seq) IN (
				SELECT m.listener, m.seq FROM S.listeners l
				CROSS JOIN LATERAL (
					SELECT listener, seq FROM S.messages
					WHERE listener = l.id AND seq <= l.head - $3 ORDER BY seq LIMIT $4
				) m
				WHERE l.id > $1 AND l.id <= $2 LIMIT $4)`,
		deleteKeys: `DELETE FROM S.dispatch_keys WHERE (sender, key) IN (
				SELECT sender, key FROM S.dispatch_keys WHERE recorded_ns < $1 LIMIT $2)`,
		// lockUnusedScopes and deleteUnusedScopes, in one transaction,
		// remove the versions of scopes no listener has. The second
		// statement checks again with a snapshot taken after the locks: a
		// creation that updated a row first is then visible, and one that
		// comes later waits for the lock and inserts the row anew.
		lockUnusedScopes: `SELECT v.scope FROM S.scope_versions v
			WHERE NOT EXISTS (SELECT 1 FROM S.listener_scopes x WHERE x.scope = v.scope AND NOT x.wild)
			LIMIT $1 FOR UPDATE SKIP LOCKED`,
		deleteUnusedScopes: `DELETE FROM S.scope_versions v WHERE v.scope = ANY($1::text[])
			AND NOT EXISTS (SELECT 1 FROM S.listener_scopes x WHERE x.scope = v.scope AND NOT x.wild)`,

		// Watchers (see watchers.go and migration 6). gate takes the
		// schema's gate exclusively, as a statement of its own: it waits
		// for the appends that hold it (those of versions of this package
		// that look under it) and lets it go at once.
		registerWatcher: `INSERT INTO S.watchers (id, pid) VALUES ($1, pg_backend_pid())
			ON CONFLICT (id) DO UPDATE SET pid = EXCLUDED.pid`,
		deleteWatcher: `DELETE FROM S.watchers WHERE id = $1`,
		// deleteGoneWatchers finds the rows whose process is gone first,
		// and deletes each only if it still names that process. A Watch
		// that registers again meanwhile updates its row's pid; the
		// DELETE, finding the row locked, waits for it and then rechecks
		// the new row version against the rest of the statement as first
		// evaluated, not against the server's processes again: with NOT
		// EXISTS tested on the row itself, that recheck deleted the row
		// of a live Watch, which appends then left out. Compared with the
		// pid it found, the new version fails the recheck and stays.
		deleteGoneWatchers: `WITH d AS MATERIALIZED (
				SELECT id, pid FROM S.watchers x WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = x.pid)
			)
			DELETE FROM S.watchers w USING d WHERE w.id = d.id AND w.pid = d.pid`,
		gate: `SELECT pg_advisory_xact_lock(tableoid::integer, 0) FROM S.meta`,
		// listenerWriters lists the transactions, other than the
		// caller's, that hold the ROW EXCLUSIVE lock of the listeners
		// table ($1, its name): every append statement takes it before
		// its snapshot, and holds it until its transaction ends.
		// writersLeft counts those of them ($2) that still hold it.
		listenerWriters: `SELECT coalesce(array_agg(DISTINCT virtualtransaction), '{}') FROM pg_locks
			WHERE locktype = 'relation' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
				AND relation = to_regclass($1) AND mode = 'RowExclusiveLock' AND granted AND pid IS DISTINCT FROM pg_backend_pid()`,
		writersLeft: `SELECT count(*) FROM pg_locks
			WHERE locktype = 'relation' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
				AND relation = to_regclass($1) AND mode = 'RowExclusiveLock' AND granted AND virtualtransaction = ANY($2::text[])`,
		// notifyHeadsOf notifies the heads of listeners $2 (see
		// notifyHeads); notifyScopeHeads, those of the listeners of scope
		// $4 and of listeners $2 (the ones whose patterns match it): the
		// listeners a matchAppend statement with them can have written to.
		notifyHeadsOf:    notifyHeads(`id = ANY($2::text[])`),
		notifyScopeHeads: notifyHeads(`id = ANY(ARRAY(SELECT listener FROM S.listener_scopes WHERE scope = $4 AND NOT wild) || $2::text[])`),
	}
	q.appendOne = strings.Replace(q.append, notifyUp, `(SELECT count(*) FROM (
				SELECT pg_notify(@channel, string_agg(id || ' ' || head || ',~' || created_ns, ',')) FROM up WHERE @notify_batch > 0
				HAVING count(*) > 0 AND `+mustNotifyUp+`
			) y)`, 1)
	i, j := strings.Index(q.appendOne, "), lk AS MATERIALIZED ("), strings.Index(q.appendOne, "), ins AS (")
	if q.appendOne == q.append || i < 0 || j < i {
		panic("postgres: appendOne: the append statement changed")
	}
	q.appendSingle = q.appendOne[:i] + `), up AS (
				UPDATE S.listeners l SET head = l.head + (@counts::bigint[])[1]
				WHERE l.id = (@ids::text[])[1] AND NOT EXISTS (SELECT 1 FROM stale)
				RETURNING l.id, l.head, (@counts::bigint[])[1] AS n, l.created_ns
			` + q.appendOne[j:]
	q.changedHeadsOf = strings.Replace(q.changedHeads, "unnest($1::text::text[], $2::text::bigint[], $3::text::bigint[])", "unnest($1::text[], $2::bigint[], $3::bigint[])", 1)
	if q.changedHeadsOf == q.changedHeads {
		panic("postgres: changedHeadsOf: the changedHeads statement changed")
	}
	q.matchAppend = bindNames(q.matchAppend, matchAppendParams)
	q.matchAppendSingle = bindNames(q.matchAppendSingle, matchAppendSingleParams)
	q.append = bindNames(q.append, appendParams)
	q.appendOne = bindNames(q.appendOne, appendParams)
	q.appendSingle = bindNames(q.appendSingle, appendParams)
	q.appendScalar = bindNames(q.appendScalar, appendScalarParams)
	for _, p := range []*string{
		&q.join, &q.joinBatch, &q.bumpPatterns, &q.listener,
		&q.subscribers, &q.leave,
		&q.match, &q.loadPatterns, &q.heads, &q.changedHeads, &q.changedHeadsOf, &q.allHeads,
		&q.append, &q.appendOne, &q.appendSingle, &q.appendScalar, &q.matchAppend, &q.matchAppendSingle, &q.claimKey, &q.keyFingerprint, &q.recordKey, &q.replay, &q.read, &q.readOf, &q.seek, &q.checkpoint,
		&q.expiredListeners, &q.lockTrim, &q.trimDoomed, &q.expireSubscribers,
		&q.lockListeners, &q.deleteEmptyListeners, &q.deleteMsgsOf,
		&q.deleteOld, &q.listenerPage, &q.trimPage, &q.deleteKeys,
		&q.lockUnusedScopes, &q.deleteUnusedScopes,
		&q.registerWatcher, &q.deleteWatcher, &q.deleteGoneWatchers, &q.gate, &q.listenerWriters, &q.writersLeft, &q.notifyHeadsOf, &q.notifyScopeHeads,
	} {
		*p = r.Replace(*p)
	}
	return q
}

// notifyHeads returns a statement that notifies on channel $1 the heads
// of the listeners that where selects, $3 of them per payload. FOR SHARE
// waits for an append still writing one of them (whose caller gave up) to
// end, and then reads the head it left; it locks them in id order, as the
// appends do, so that the two cannot deadlock.
func notifyHeads(where string) string {
	return `WITH l AS MATERIALIZED (
				SELECT id, head, created_ns FROM S.listeners WHERE ` + where + ` ORDER BY id FOR SHARE
			)
			SELECT count(pg_notify($1, p)) FROM (
				SELECT string_agg(id || ' ' || head || ',~' || created_ns, ',') AS p
				FROM (SELECT id, head, created_ns, (row_number() OVER () - 1) / $3 AS chunk FROM l) x
				GROUP BY chunk
			) y`
}

// appendParams names the append statement's parameters in the order
// appendArgs.list gives their values.
var appendParams = []string{
	"ids", "counts", "entry_listener", "entry_body", "entry_rank", "entry_batch",
	"batch_dispatch", "batch_scope", "batch_sender", "batch_created",
	"channel", "notify_batch", "stamp_patterns", "stamp_scope", "self",
}

// appendScalarParams names the appendScalar statement's parameters in the
// order appendScalar gives their values.
var appendScalarParams = []string{
	"listener", "body", "dispatch", "scope", "sender", "created", "channel", "stamp_patterns", "stamp_scope", "self",
}

// matchAppendParams names the matchAppend statement's parameters in the
// order MatchAppend gives their values.
var matchAppendParams = []string{
	"scope", "pattern_ids", "pattern_version", "sender", "recipients", "addressed", "handlers",
	"private_type", "handler_type", "body", "dispatch", "created", "channel", "notify_batch", "self",
}

// matchAppendSingleParams names the matchAppendSingle statement's
// parameters in the order MatchAppend gives their values.
var matchAppendSingleParams = []string{
	"scope", "pattern_version", "sender", "private_type", "body", "dispatch", "created", "channel", "self",
}

// appendArgs are the values of the append statement's parameters, by name.
type appendArgs struct {
	ids    []string // distinct listeners written to, sorted
	counts []int64  // entries per listener of ids

	entryListener []string // per entry: its listener,
	entryBody     [][]byte // its text,
	entryRank     []int64  // its 1-based rank among its listener's entries,
	entryBatch    []int64  // and its 1-based batch

	batchDispatch, batchScope, batchSender []string // per batch
	batchCreated                           []int64  // per batch, ns since the epoch

	channel     string // NOTIFY channel
	notifyBatch int    // heads per NOTIFY payload
	self        string // watchOther's self (see watchers.go)

	stampPatterns, stampScope []int64 // per batch: its match stamp, or -1
}

// list returns the values in the order of appendParams.
func (a *appendArgs) list() []any {
	return []any{
		a.ids, a.counts, a.entryListener, a.entryBody, a.entryRank, a.entryBatch,
		a.batchDispatch, a.batchScope, a.batchSender, a.batchCreated,
		a.channel, a.notifyBatch, a.stampPatterns, a.stampScope, a.self,
	}
}

// bindNames replaces each @name in sql by $n, n being name's 1-based
// position in names, so that a long statement can name its parameters
// without pgx rewriting it on every call (pgx.NamedArgs does). It panics on
// a name not in names, or a name in names the statement does not use: both
// are programming errors, found when the store opens.
func bindNames(sql string, names []string) string {
	pos := make(map[string]int, len(names))
	for i, n := range names {
		pos[n] = i + 1
	}
	used := make(map[string]bool, len(names))
	var b strings.Builder
	for {
		i := strings.IndexByte(sql, '@')
		if i < 0 {
			b.WriteString(sql)
			break
		}
		b.WriteString(sql[:i])
		j := i + 1
		for j < len(sql) && (sql[j] == '_' || sql[j] >= 'a' && sql[j] <= 'z') {
			j++
		}
		n, ok := pos[sql[i+1:j]]
		if !ok {
			panic("postgres: unknown statement parameter " + sql[i:j])
		}
		used[sql[i+1:j]] = true
		b.WriteString("$" + strconv.Itoa(n))
		sql = sql[j:]
	}
	if len(used) != len(names) {
		panic("postgres: a named statement parameter is not used")
	}
	return b.String()
}
