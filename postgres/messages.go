package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/internal/checkpoints"
)

// Append writes a batch atomically; see moitessier.Store. A batch without
// an idempotency key is one statement, so one round trip whatever the
// number of entries; with a key it is a short transaction.
//
// An error means that nothing was stored, except one wrapping
// moitessier.ErrOutcomeUnknown: the statement (or the commit) was sent but
// no answer came back, because ctx ended while it ran, the connection
// broke, or the store was closed; it may have committed.
func (s *Store) Append(ctx context.Context, b *moitessier.Batch) ([]moitessier.Message, bool, error) {
	const op = "append"
	if err := s.check(op); err != nil {
		return nil, false, err
	}
	if b.Key == "" {
		if len(b.Entries) == 0 {
			return nil, false, nil
		}
		msgs, err := s.combine(ctx, b)
		if err != nil {
			return nil, false, s.wrap(op, fmt.Errorf("dispatch %s to %q: %w", b.Dispatch, b.Scope, err))
		}
		return msgs, false, nil
	}
	var (
		msgs     []moitessier.Message
		replayed bool
	)
	ctx, cancel := s.cmb.bound(ctx)
	defer cancel()
	err := retry(ctx, func() error {
		conn, err := s.pool.Acquire(ctx)
		if err != nil {
			return &notSentError{fmt.Errorf("acquire a connection: %w", err)}
		}
		defer conn.Release()
		tx, err := conn.BeginTx(ctx, readCommitted)
		if err != nil {
			return err
		}
		// Its transaction spans round trips: it notifies without looking
		// (see watchers.go).
		msgs, replayed, err = s.appendKeyed(ctx, tx, b, selfAlways)
		ectx, cancel := s.endCtx(ctx)
		defer cancel()
		if err != nil {
			// Not committed: whatever it wrote is rolled back (by the server,
			// if the connection broke).
			_ = tx.Rollback(ectx)
			if !definite(err) {
				err = &notSentError{err}
			}
			return err
		}
		// Only the commit leaves the outcome open, if it gets no answer.
		return outcome(tx.Commit(ectx))
	})
	if err != nil {
		return nil, false, s.wrap(op, fmt.Errorf("dispatch %s to %q: %w", b.Dispatch, b.Scope, err))
	}
	return msgs, replayed, nil
}

// AppendTx does the work of Append inside the caller's transaction tx: the
// messages become visible to readers, and the Watch notifications are
// delivered, if and only if tx commits. Until tx ends it holds the row locks
// of the listeners it wrote to, so other appends to those listeners wait:
// keep such transactions short, and when a transaction calls AppendTx more
// than once, expect concurrent ones to be able to deadlock (PostgreSQL
// aborts one of them with SQLSTATE 40P01, and the caller retries).
//
// A batch from [moitessier.Hub.Prepare] carries no match stamp. One that
// does (see MatchCached) and is stale fails with an error wrapping
// moitessier.ErrStale, writing nothing; tx is not aborted by it.
//
// In a REPEATABLE READ or SERIALIZABLE transaction an idempotency key
// claimed concurrently by another transaction fails with a serialisation
// error (40001) rather than waiting; retry the transaction.
func (s *Store) AppendTx(ctx context.Context, tx pgx.Tx, b *moitessier.Batch) ([]moitessier.Message, bool, error) {
	const op = "append in transaction"
	if err := s.check(op); err != nil {
		return nil, false, err
	}
	var (
		msgs     []moitessier.Message
		replayed bool
		err      error
	)
	// The caller's transaction commits after this returns, and its hub
	// hears of it only through Watch: it always notifies.
	switch {
	case b.Key != "":
		msgs, replayed, err = s.appendKeyed(ctx, tx, b, selfAlways)
	case len(b.Entries) > 0:
		msgs, err = s.appendEntries(ctx, tx, b, selfAlways)
	}
	if err != nil {
		return nil, false, s.wrap(op, fmt.Errorf("dispatch %s to %q: %w", b.Dispatch, b.Scope, err))
	}
	return msgs, replayed, nil
}

// appendKeyed appends a batch with an idempotency key inside tx. A key
// taken by another request fails with moitessier.ErrIdempotencyMismatch.
// self is watchOther's (see watchers.go).
func (s *Store) appendKeyed(ctx context.Context, tx pgx.Tx, b *moitessier.Batch, self string) ([]moitessier.Message, bool, error) {
	var claimed bool
	fp := b.Fingerprint
	if fp == nil {
		fp = []byte{}
	}
	err := tx.QueryRow(ctx, s.q.claimKey, b.Sender, b.Key, toNS(b.Created), toNS(b.KeySince), fp).Scan(&claimed)
	if errors.Is(err, pgx.ErrNoRows) {
		var recorded []byte
		if err := tx.QueryRow(ctx, s.q.keyFingerprint, b.Sender, b.Key).Scan(&recorded); err != nil {
			return nil, false, fmt.Errorf("idempotency key: %w", err)
		}
		if !b.SameRequest(recorded) {
			return nil, false, fmt.Errorf("key %q: %w", b.Key, moitessier.ErrIdempotencyMismatch)
		}
		rows, err := tx.Query(ctx, s.q.replay, b.Sender, b.Key)
		if err != nil {
			return nil, false, err
		}
		msgs, err := scanMessages(rows, 0)
		return msgs, true, err
	}
	if err != nil {
		return nil, false, fmt.Errorf("claim idempotency key: %w", err)
	}
	var msgs []moitessier.Message
	if len(b.Entries) > 0 {
		if msgs, err = s.appendEntries(ctx, tx, b, self); err != nil {
			return nil, false, err
		}
	}
	ids := make([]string, len(msgs))
	seqs := make([]int64, len(msgs))
	for i, m := range msgs {
		ids[i], seqs[i] = m.Listener, int64(m.Seq)
	}
	if _, err := tx.Exec(ctx, s.q.recordKey, b.Sender, b.Key, ids, seqs); err != nil {
		return nil, false, fmt.Errorf("record idempotency key: %w", err)
	}
	return msgs, false, nil
}

// appendEntries runs the append statement (see queries.go) on q for one
// batch.
func (s *Store) appendEntries(ctx context.Context, q queryer, b *moitessier.Batch, self string) ([]moitessier.Message, error) {
	out, err := s.appendBatches(ctx, q, []*moitessier.Batch{b}, self)
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

type queryer interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// appendBatches writes several batches in one statement, so in one
// transaction, and returns each batch's messages. Entries of one listener
// take sequence numbers in batch order, then entry order. self is
// watchOther's (see watchers.go).
func (s *Store) appendBatches(ctx context.Context, q queryer, bs []*moitessier.Batch, self string) ([][]moitessier.Message, error) {
	if len(bs) == 1 && len(bs[0].Entries) == 1 {
		return s.appendScalar(ctx, q, bs[0], self)
	}
	n := 0
	for _, b := range bs {
		n += len(b.Entries)
	}
	a := appendArgs{
		entryListener: make([]string, 0, n),
		entryBody:     make([][]byte, 0, n),
		entryRank:     make([]int64, 0, n),
		entryBatch:    make([]int64, 0, n),
		batchDispatch: make([]string, len(bs)),
		batchScope:    make([]string, len(bs)),
		batchSender:   make([]string, len(bs)),
		batchCreated:  make([]int64, len(bs)),
		stampPatterns: make([]int64, len(bs)),
		stampScope:    make([]int64, len(bs)),
		channel:       s.channel,
		notifyBatch:   s.cfg.NotifyBatch,
		self:          self,
	}
	counts := make(map[string]int64, n)
	for i, b := range bs {
		a.batchDispatch[i], a.batchScope[i], a.batchSender[i], a.batchCreated[i] = b.Dispatch, b.Scope, b.Sender, toNS(b.Created)
		a.stampPatterns[i], a.stampScope[i] = -1, -1
		if st, ok := b.Stamp.(matchStamp); ok {
			a.stampPatterns[i], a.stampScope[i] = st.patterns, st.scope
		}
		for _, e := range b.Entries {
			counts[e.Listener]++
			a.entryListener = append(a.entryListener, e.Listener)
			a.entryBody = append(a.entryBody, []byte(e.Text))
			a.entryRank = append(a.entryRank, counts[e.Listener])
			a.entryBatch = append(a.entryBatch, int64(i+1))
		}
	}
	a.ids = make([]string, 0, len(counts))
	for id := range counts {
		a.ids = append(a.ids, id)
	}
	slices.Sort(a.ids)
	a.counts = make([]int64, len(a.ids))
	for i, id := range a.ids {
		a.counts[i] = counts[id]
	}
	ids, ranks := a.ids, a.entryRank
	stmt := s.q.append
	switch {
	case len(ids) == 1:
		stmt = s.q.appendSingle
	case len(ids) <= s.cfg.NotifyBatch:
		stmt = s.q.appendOne
	}
	rows, err := q.Query(ctx, stmt, a.list()...)
	if err != nil {
		return nil, err
	}
	base := make(map[string]int64, len(ids)) // old head of each written listener
	var stale []int
	for rows.Next() {
		var (
			id            *string
			head, cnt, nt *int64
			staleBatch    *int64
		)
		if err := rows.Scan(&id, &head, &cnt, &nt, &staleBatch); err != nil {
			rows.Close()
			return nil, err
		}
		if staleBatch != nil {
			stale = append(stale, int(*staleBatch-1))
			continue
		}
		if len(base) == 0 {
			s.watchers.saw(self, *nt > 0) // payloads sent: the same on every row
		}
		base[*id] = *head - *cnt
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(stale) > 0 {
		for _, i := range stale {
			s.mc.Drop(bs[i].Scope)
		}
		return nil, &staleError{batches: stale}
	}
	out := make([][]moitessier.Message, len(bs))
	k := 0
	for i, b := range bs {
		msgs := make([]moitessier.Message, 0, len(b.Entries))
		for _, e := range b.Entries {
			rank := ranks[k]
			k++
			old, ok := base[e.Listener]
			if !ok {
				continue // the listener no longer exists
			}
			msgs = append(msgs, moitessier.Message{
				Listener: e.Listener, Seq: moitessier.Cursor(old + rank), Dispatch: b.Dispatch,
				Scope: b.Scope, Sender: b.Sender, Text: e.Text, Created: b.Created,
			})
		}
		out[i] = msgs
	}
	return out, nil
}

// appendScalar is appendBatches for one batch of one entry, in the
// appendScalar statement.
func (s *Store) appendScalar(ctx context.Context, q queryer, b *moitessier.Batch, self string) ([][]moitessier.Message, error) {
	e := b.Entries[0]
	patterns, scope := int64(-1), int64(-1)
	if st, ok := b.Stamp.(matchStamp); ok {
		patterns, scope = st.patterns, st.scope
	}
	var (
		head     int64
		notified bool
	)
	found, err := scanOne(ctx, q, []any{&head, &notified}, s.q.appendScalar, e.Listener, []byte(e.Text), b.Dispatch, b.Scope, b.Sender, toNS(b.Created),
		s.channel, patterns, scope, self)
	if err != nil {
		return nil, err
	}
	if !found {
		// Nothing was written: the stamp no longer holds, or the listener
		// no longer exists. With a stamp, either way the dispatch matches
		// again (a deleted listener's scope changed since the match, and
		// a new match leaves it out); without one, the listener is gone.
		if patterns >= 0 {
			s.mc.Drop(b.Scope)
			return nil, &staleError{batches: []int{0}}
		}
		return [][]moitessier.Message{{}}, nil // the listener no longer exists
	}
	s.watchers.saw(self, notified)
	return [][]moitessier.Message{{{
		Listener: e.Listener, Seq: moitessier.Cursor(head), Dispatch: b.Dispatch,
		Scope: b.Scope, Sender: b.Sender, Text: e.Text, Created: b.Created,
	}}}, nil
}

// scanOne runs sql and scans its first row, if any, into dest; found
// reports whether there was one.
func scanOne(ctx context.Context, q queryer, dest []any, sql string, args ...any) (found bool, err error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return false, err
	}
	defer rows.Close()
	if rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return false, err
		}
		found = true
	}
	rows.Close()
	return found, rows.Err()
}

// staleError reports batches of an append statement whose stamps no longer
// hold; the statement wrote nothing.
type staleError struct{ batches []int }

func (e *staleError) Error() string {
	return fmt.Sprintf("%d of the batches were matched before listeners on their scopes were created or deleted", len(e.batches))
}

func (e *staleError) Unwrap() error { return moitessier.ErrStale }

func scanMessages(rows pgx.Rows, sizeHint int) ([]moitessier.Message, error) {
	defer rows.Close()
	msgs := make([]moitessier.Message, 0, sizeHint)
	var (
		seq, created int64
		body         []byte
	)
	for rows.Next() {
		var m moitessier.Message
		if err := rows.Scan(&m.Listener, &seq, &m.Dispatch, &m.Scope, &m.Sender, &body, &created); err != nil {
			return nil, err
		}
		m.Seq, m.Text, m.Created = moitessier.Cursor(seq), string(body), fromNS(created)
		msgs = append(msgs, m)
	}
	return msgs, rows.Err()
}

// Read returns up to limit messages of a listener with Seq > after, in order.
func (s *Store) Read(ctx context.Context, listenerID string, after moitessier.Cursor, limit int) ([]moitessier.Message, error) {
	const op = "read"
	if err := s.check(op); err != nil {
		return nil, err
	}
	if limit <= 0 || after >= moitessier.Resume {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, s.q.read, listenerID, toSeq(after), limit)
	if err != nil {
		return nil, s.wrap(op, err)
	}
	msgs, err := scanMessages(rows, min(limit, 256))
	if err != nil {
		return nil, s.wrap(op, err)
	}
	return msgs, nil
}

// ReadOf implements moitessier.IncarnationReader: Read, in a statement
// that finds the messages only while the listener is the incarnation
// created; when it finds none, it asks whether the listener still is.
func (s *Store) ReadOf(ctx context.Context, listenerID string, created time.Time, after moitessier.Cursor, limit int) ([]moitessier.Message, error) {
	const op = "read"
	if err := s.check(op); err != nil {
		return nil, err
	}
	var msgs []moitessier.Message
	if limit > 0 && after < moitessier.Resume {
		rows, err := s.pool.Query(ctx, s.q.readOf, listenerID, toSeq(after), limit, toNS(created))
		if err != nil {
			return nil, s.wrap(op, err)
		}
		if msgs, err = scanMessages(rows, min(limit, 256)); err != nil {
			return nil, s.wrap(op, err)
		}
	}
	if len(msgs) == 0 {
		l, err := s.Listener(ctx, listenerID)
		switch {
		case errors.Is(err, moitessier.ErrNotFound), err == nil && !l.Created.Equal(created):
			return nil, fmt.Errorf("postgres: read %s: %w: no listener of that incarnation", listenerID, moitessier.ErrNotFound)
		case err != nil:
			return nil, err
		}
	}
	return msgs, nil
}

// Seek returns the cursor just before the listener's first message created
// at or after t, or ErrNotFound.
func (s *Store) Seek(ctx context.Context, listenerID string, t time.Time) (moitessier.Cursor, error) {
	const op = "seek"
	if err := s.check(op); err != nil {
		return 0, err
	}
	var (
		head  int64
		first *int64
	)
	err := s.pool.QueryRow(ctx, s.q.seek, listenerID, toNS(t)).Scan(&head, &first)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("postgres: seek %s: %w", listenerID, moitessier.ErrNotFound)
	}
	if err != nil {
		return 0, s.wrap(op, err)
	}
	if first == nil {
		return moitessier.Cursor(head), nil
	}
	return moitessier.Cursor(*first - 1), nil
}

// Checkpoint saves subscribers' cursors and leases in one statement.
func (s *Store) Checkpoint(ctx context.Context, cps []moitessier.Checkpoint) error {
	const op = "checkpoint"
	if err := s.check(op); err != nil {
		return err
	}
	if len(cps) == 0 {
		return nil
	}
	// Merge duplicates (largest cursor, last non-zero lease) and sort, so
	// that one UPDATE sees each row once.
	all := checkpoints.Merge(cps)
	n := len(all)
	ls, ps, cs := make([]string, n), make([]string, n), make([]string, n)
	curs, leases, created := make([]int64, n), make([]int64, n), make([]int64, n)
	for i, c := range all {
		ls[i], ps[i], cs[i], curs[i], leases[i] = c.Listener, c.Person, c.Client, toSeq(c.Cursor), toNS(c.LeaseExpires)
		created[i] = toNS(c.Created)
	}
	err := retry(ctx, func() error {
		_, err := s.pool.Exec(ctx, s.q.checkpoint, ls, ps, cs, curs, leases, created)
		return err
	})
	return s.wrap(op, err)
}
