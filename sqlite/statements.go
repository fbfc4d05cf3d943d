package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// statements are the prepared statements of the hot paths. Writer statements
// are prepared on the writer's one connection, where its transactions (wtx)
// run them.
type statements struct {
	// writer
	begin, commit, rollback        *sql.Stmt
	savepoint, release, rollbackTo *sql.Stmt
	insertMessage, insertMessageAt *sql.Stmt
	keepHead                       *sql.Stmt
	getKey                         *sql.Stmt
	putKey                         *sql.Stmt
	getMessage                     *sql.Stmt // by listener and seq, for replays
	checkpoint                     *sql.Stmt
	checkpointCursor               *sql.Stmt // a checkpoint that leaves the lease as it is
	// Join: preparing its statements anew each time was a quarter of the
	// CPU of creating a listener.
	insertListener, insertScope, joinSubscriber *sql.Stmt
	getListener, getScopes                      *sql.Stmt

	// readers
	read *sql.Stmt
	// readOf is read while the listener is one incarnation (ReadOf).
	readOf *sql.Stmt
	seek   *sql.Stmt // the first seq in (after, upTo] created at or after t
	subs   *sql.Stmt
}

// sameIncarnation is an UPDATE subscribers condition: the subscriber's
// listener was created at the time in parameter p (Unix nanoseconds), or p
// is the zero time (toNanos), which stands for any incarnation.
func sameIncarnation(p string) string {
	return `(` + p + ` = -9223372036854775808 OR ` + p + ` = (SELECT created FROM listeners WHERE id = subscribers.listener_id))`
}

// headExpr is the head of the listener whose row is in scope (id, head): the
// seq of its newest message, or listeners.head if that is larger (the
// messages up to it deleted). Appends do not write listeners.head; the
// store raises it (keepHead) before it deletes a listener's messages.
const headExpr = `max(head, coalesce((SELECT max(seq) FROM messages WHERE listener_id = id), 0))`

// preparer is a *sql.DB or a *sql.Conn.
type preparer interface {
	PrepareContext(ctx context.Context, query string) (*sql.Stmt, error)
}

func (st *statements) prepare(ctx context.Context, w *sql.Conn, r *sql.DB) error {
	list := []struct {
		db   preparer
		dst  **sql.Stmt
		text string
	}{
		{w, &st.begin, `BEGIN IMMEDIATE`},
		{w, &st.commit, `COMMIT`},
		{w, &st.rollback, `ROLLBACK`},
		{w, &st.savepoint, `SAVEPOINT op`},
		{w, &st.release, `RELEASE op`},
		{w, &st.rollbackTo, `ROLLBACK TO op`},
		// A message's seq is its listener's head plus one (see headExpr);
		// no row if the listener is gone.
		{w, &st.insertMessage, `INSERT INTO messages (listener_id, seq, dispatch, scope, sender, text, created)
			SELECT id, ` + headExpr + ` + 1, ?, ?, ?, ?, ? FROM listeners WHERE id = ? RETURNING seq`},
		// The same at a seq known to be the next (see Append); a conflict
		// leaves no row.
		{w, &st.insertMessageAt, `INSERT INTO messages (listener_id, seq, dispatch, scope, sender, text, created)
			VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`},
		// Before messages are deleted: listeners.head keeps the head.
		{w, &st.keepHead, `UPDATE listeners SET head = ` + headExpr + ` WHERE id = ?`},
		{w, &st.getKey, `SELECT created, refs, fingerprint, dispatch FROM idempotency_keys WHERE sender = ? AND key = ?`},
		{w, &st.putKey, `INSERT INTO idempotency_keys (sender, key, dispatch, created, refs, fingerprint) VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (sender, key) DO UPDATE SET
				dispatch = excluded.dispatch, created = excluded.created, refs = excluded.refs,
				fingerprint = excluded.fingerprint`},
		{w, &st.getMessage, `SELECT dispatch, scope, sender, text, created FROM messages
			WHERE listener_id = ? AND seq = ?`},
		// A checkpoint applies to the incarnation of the listener it names
		// (its creation time), or to any (the zero time): see
		// sameIncarnation.
		{w, &st.checkpoint, `UPDATE subscribers
			SET cursor = max(cursor, ?1), lease_expires = ?2
			WHERE listener_id = ?3 AND person = ?4 AND client = ?5 AND ` + sameIncarnation("?6")},
		// Most checkpoints move cursors only: leaving lease_expires out of
		// the SET spares its index (a third of the statement's cost).
		{w, &st.checkpointCursor, `UPDATE subscribers SET cursor = max(cursor, ?1)
			WHERE listener_id = ?2 AND person = ?3 AND client = ?4 AND ` + sameIncarnation("?5")},
		{w, &st.insertListener, `INSERT INTO listeners (id, type, person, client, created, head)
			VALUES (?, ?, ?, ?, ?, 0) ON CONFLICT (id) DO NOTHING`},
		{w, &st.insertScope, `INSERT INTO listener_scopes (listener_id, ord, scope) VALUES (?, ?, ?)`},
		{w, &st.joinSubscriber, `INSERT INTO subscribers (listener_id, person, client, cursor, joined, lease_expires)
			VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (listener_id, person, client) DO UPDATE
				SET lease_expires = max(lease_expires, excluded.lease_expires)
			RETURNING cursor, joined, lease_expires`},
		{w, &st.getListener, `SELECT type, person, client, created, ` + headExpr + ` FROM listeners WHERE id = ?`},
		{w, &st.getScopes, `SELECT scope FROM listener_scopes WHERE listener_id = ? ORDER BY ord`},
		{r, &st.read, `SELECT seq, dispatch, scope, sender, text, created FROM messages
			WHERE listener_id = ? AND seq > ? ORDER BY seq LIMIT ?`},
		{r, &st.readOf, `SELECT seq, dispatch, scope, sender, text, created FROM messages
			WHERE listener_id = ?1 AND seq > ?2 AND EXISTS (SELECT 1 FROM listeners WHERE id = ?1 AND created = ?3)
			ORDER BY seq LIMIT ?4`},
		{r, &st.seek, `SELECT seq FROM messages
			WHERE listener_id = ? AND seq > ? AND seq <= ? AND created >= ? ORDER BY seq LIMIT 1`},
		// A page of subscribers, from the primary key's order: the rows at
		// or after (person, client), LIMIT -1 for all of them.
		{r, &st.subs, `SELECT person, client, cursor, joined, lease_expires FROM subscribers
			WHERE listener_id = ? AND (person, client) >= (?, ?) ORDER BY person, client LIMIT ?`},
	}
	for _, p := range list {
		stmt, err := p.db.PrepareContext(ctx, p.text)
		if err != nil {
			return fmt.Errorf("prepare %q: %w", p.text, err)
		}
		*p.dst = stmt
	}
	return nil
}

func (st *statements) close() error {
	var errs []error
	for _, s := range []*sql.Stmt{st.begin, st.commit, st.rollback, st.savepoint, st.release, st.rollbackTo,
		st.insertMessage, st.insertMessageAt, st.keepHead, st.getKey, st.putKey, st.getMessage, st.checkpoint, st.checkpointCursor,
		st.insertListener, st.insertScope, st.joinSubscriber, st.getListener, st.getScopes,
		st.read, st.readOf, st.seek, st.subs} {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	return errors.Join(errs...)
}
