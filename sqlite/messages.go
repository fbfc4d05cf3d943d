package sqlite

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/likestripes/moitessier"
)

// Append writes a batch in one transaction, every entry or none, as
// [moitessier.Store] describes. Entries whose listener no longer exists are
// skipped. Concurrent calls may share a transaction, each in a savepoint of
// its own (see the package documentation).
func (s *Store) Append(ctx context.Context, b *moitessier.Batch) ([]moitessier.Message, bool, error) {
	if err := s.enter("append"); err != nil {
		return nil, false, err
	}
	defer s.exit()
	var (
		msgs     []moitessier.Message
		replayed bool
	)
	err := s.write(ctx, func(wctx context.Context, tx *wtx) error {
		if b.Key != "" {
			var err error
			msgs, replayed, err = s.replay(wctx, tx, b)
			if err != nil || replayed {
				return err
			}
		}
		insert := tx.StmtContext(wctx, s.stmts.insertMessage)
		insertAt := tx.StmtContext(wctx, s.stmts.insertMessageAt)
		created := toNanos(b.Created)
		msgs = make([]moitessier.Message, 0, len(b.Entries))
		for i, e := range b.Entries {
			if i%64 == 63 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			// In a transaction no write has changed yet, the cached head is
			// the stored one and the next seq is known: no need to look it
			// up. Otherwise (an earlier write of this transaction may have
			// added to this listener, or deleted and made it anew) the
			// transaction is asked.
			var seq int64
			if h, ok := s.cachedHead(e.Listener); ok && tx.fresh {
				r, err := insertAt.ExecContext(wctx, e.Listener, int64(h)+1, b.Dispatch, b.Scope, b.Sender, e.Text, created)
				if err != nil {
					return err
				}
				if n, err := r.RowsAffected(); err != nil {
					return err
				} else if n == 1 {
					seq = int64(h) + 1
				}
			}
			if seq == 0 {
				err := insert.QueryRowContext(wctx, b.Dispatch, b.Scope, b.Sender, e.Text, created, e.Listener).Scan(&seq)
				if errors.Is(err, sql.ErrNoRows) {
					continue // the listener was deleted
				} else if err != nil {
					return err
				}
			}
			msgs = append(msgs, moitessier.Message{
				Listener: e.Listener,
				Seq:      moitessier.Cursor(seq),
				Dispatch: b.Dispatch,
				Scope:    b.Scope,
				Sender:   b.Sender,
				Text:     e.Text,
				Created:  fromNanos(created),
			})
			if s.appendHook != nil {
				if err := s.appendHook(b, i); err != nil {
					return err
				}
			}
		}
		if b.Key != "" {
			_, err := tx.StmtContext(wctx, s.stmts.putKey).ExecContext(wctx, b.Sender, b.Key, b.Dispatch, created, encodeRefs(msgs), fingerprint(b))
			return err
		}
		return nil
	}, func() {
		if replayed {
			return
		}
		for _, m := range msgs {
			if c := s.listeners[m.Listener]; c != nil && m.Seq > c.info.Head {
				c.info.Head = m.Seq
			}
		}
	})
	if err != nil {
		return nil, false, fmt.Errorf("sqlite: append %s: %w", b.Dispatch, err)
	}
	return msgs, replayed, nil
}

// cachedHead returns the cached head of a listener, if it is cached.
func (s *Store) cachedHead(id string) (moitessier.Cursor, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if c := s.listeners[id]; c != nil {
		return c.info.Head, true
	}
	return 0, false
}

// replay looks up b's idempotency key. If a batch with that key was appended
// at or after b.KeySince, it returns that batch's messages that still exist,
// or an error wrapping moitessier.ErrIdempotencyMismatch if that batch was
// another request.
func (s *Store) replay(ctx context.Context, tx *wtx, b *moitessier.Batch) ([]moitessier.Message, bool, error) {
	var (
		at       int64
		refs, fp []byte
		dispatch string
	)
	err := tx.StmtContext(ctx, s.stmts.getKey).QueryRowContext(ctx, b.Sender, b.Key).Scan(&at, &refs, &fp, &dispatch)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("idempotency key: %w", err)
	}
	if at < toNanos(b.KeySince) {
		return nil, false, nil // expired: the batch is written anew
	}
	if !b.SameRequest(fp) {
		return nil, false, fmt.Errorf("key %q: %w", b.Key, moitessier.ErrIdempotencyMismatch)
	}
	get := tx.StmtContext(ctx, s.stmts.getMessage)
	var msgs []moitessier.Message
	err = decodeRefs(refs, func(listener string, seq int64) error {
		m := moitessier.Message{Listener: listener, Seq: moitessier.Cursor(seq)}
		var created int64
		err := get.QueryRowContext(ctx, listener, seq).Scan(&m.Dispatch, &m.Scope, &m.Sender, &m.Text, &created)
		if errors.Is(err, sql.ErrNoRows) {
			return nil // swept since
		}
		if err != nil {
			return err
		}
		if m.Dispatch != dispatch {
			// Another dispatch's: the listener was deleted and made
			// again, and renumbered from 1.
			return nil
		}
		m.Created = fromNanos(created)
		msgs = append(msgs, m)
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("idempotency key: %w", err)
	}
	return msgs, true, nil
}

// fingerprint is b's fingerprint as stored: never NULL.
func fingerprint(b *moitessier.Batch) []byte {
	if b.Fingerprint == nil {
		return []byte{}
	}
	return b.Fingerprint
}

// encodeRefs encodes the (listener, seq) of messages as, for each, the
// uvarint length of the listener ID, the ID, and the uvarint seq.
func encodeRefs(msgs []moitessier.Message) []byte {
	b := make([]byte, 0, len(msgs)*(len("p")+32+4))
	for _, m := range msgs {
		b = binary.AppendUvarint(b, uint64(len(m.Listener)))
		b = append(b, m.Listener...)
		b = binary.AppendUvarint(b, uint64(m.Seq))
	}
	return b
}

func decodeRefs(b []byte, fn func(listener string, seq int64) error) error {
	for len(b) > 0 {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return errors.New("corrupt message references")
		}
		listener := string(b[k : k+int(n)])
		b = b[k+int(n):]
		seq, k := binary.Uvarint(b)
		if k <= 0 {
			return errors.New("corrupt message references")
		}
		b = b[k:]
		if err := fn(listener, int64(seq)); err != nil {
			return err
		}
	}
	return nil
}

// Read returns up to limit messages of a listener with Seq > after, in
// sequence order. A listener that does not exist, or whose Head is not past
// after, has none, and Read returns them without a query.
func (s *Store) Read(ctx context.Context, listenerID string, after moitessier.Cursor, limit int) ([]moitessier.Message, error) {
	return s.read(ctx, listenerID, nil, after, limit)
}

var _ moitessier.IncarnationReader = (*Store)(nil)

// ReadOf implements moitessier.IncarnationReader: Read, in a statement
// that finds the messages only while the listener is the incarnation
// created.
func (s *Store) ReadOf(ctx context.Context, listenerID string, created time.Time, after moitessier.Cursor, limit int) ([]moitessier.Message, error) {
	return s.read(ctx, listenerID, &created, after, limit)
}

// read is Read, or ReadOf if created is not nil.
func (s *Store) read(ctx context.Context, listenerID string, created *time.Time, after moitessier.Cursor, limit int) ([]moitessier.Message, error) {
	if err := s.enter("read"); err != nil {
		return nil, err
	}
	defer s.exit()
	current := func() bool {
		s.mu.RLock()
		defer s.mu.RUnlock()
		c := s.listeners[listenerID]
		return c != nil && c.info.Created.Equal(*created)
	}
	if created != nil && !current() {
		return nil, fmt.Errorf("sqlite: read %s: %w: no listener of that incarnation", listenerID, moitessier.ErrNotFound)
	}
	if limit <= 0 {
		return nil, nil
	}
	s.mu.RLock()
	c := s.listeners[listenerID]
	var head moitessier.Cursor
	if c != nil {
		head = c.info.Head
	}
	s.mu.RUnlock()
	if head <= after {
		return nil, nil
	}
	// Only committed messages are in the cache's head, so at most head-after
	// rows can be found now.
	if n := head - after; uint64(limit) > uint64(n) {
		limit = int(n)
	}
	var (
		rows *sql.Rows
		err  error
	)
	if created == nil {
		rows, err = s.stmts.read.QueryContext(ctx, listenerID, seqArg(after), limit)
	} else {
		rows, err = s.stmts.readOf.QueryContext(ctx, listenerID, seqArg(after), toNanos(*created), limit)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: read %s: %w", listenerID, err)
	}
	defer rows.Close()
	msgs := make([]moitessier.Message, 0, limit)
	for rows.Next() {
		m := moitessier.Message{Listener: listenerID}
		var seq, at int64
		if err := rows.Scan(&seq, &m.Dispatch, &m.Scope, &m.Sender, &m.Text, &at); err != nil {
			return nil, fmt.Errorf("sqlite: read %s: %w", listenerID, err)
		}
		m.Seq, m.Created = moitessier.Cursor(seq), fromNanos(at)
		msgs = append(msgs, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: read %s: %w", listenerID, err)
	}
	if created != nil && len(msgs) == 0 && !current() {
		// None found: perhaps because the listener was made again.
		return nil, fmt.Errorf("sqlite: read %s: %w: no listener of that incarnation", listenerID, moitessier.ErrNotFound)
	}
	return msgs, nil
}

// Seek returns the cursor just before the listener's first message created
// at or after t, or its Head if there is none. It returns an error wrapping
// [moitessier.ErrNotFound] if the listener does not exist.
func (s *Store) Seek(ctx context.Context, listenerID string, t time.Time) (moitessier.Cursor, error) {
	if err := s.enter("seek"); err != nil {
		return 0, err
	}
	defer s.exit()
	s.mu.RLock()
	c := s.listeners[listenerID]
	var head moitessier.Cursor
	if c != nil {
		head = c.info.Head
	}
	s.mu.RUnlock()
	if c == nil {
		return 0, fmt.Errorf("sqlite: seek %s: %w", listenerID, moitessier.ErrNotFound)
	}
	var seq int64
	err := s.stmts.seek.QueryRowContext(ctx, listenerID, 0, int64(math.MaxInt64), toNanos(t)).Scan(&seq)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return head, nil
	case err != nil:
		return 0, fmt.Errorf("sqlite: seek %s: %w", listenerID, err)
	}
	return moitessier.Cursor(seq - 1), nil
}

// Checkpoint saves subscribers' positions and leases in one transaction,
// ignoring subscribers that no longer exist and checkpoints of another
// incarnation of their listener.
func (s *Store) Checkpoint(ctx context.Context, cps []moitessier.Checkpoint) error {
	if err := s.enter("checkpoint"); err != nil {
		return err
	}
	defer s.exit()
	if len(cps) == 0 {
		return nil
	}
	err := s.write(ctx, func(ctx context.Context, tx *wtx) error {
		var both, cursor *sql.Stmt // prepared on the transaction when first needed
		for _, cp := range cps {
			var err error
			if cp.LeaseExpires.IsZero() {
				if cursor == nil {
					cursor = tx.StmtContext(ctx, s.stmts.checkpointCursor)
				}
				_, err = cursor.ExecContext(ctx, seqArg(cp.Cursor), cp.Listener, cp.Person, cp.Client, toNanos(cp.Created))
			} else {
				if both == nil {
					both = tx.StmtContext(ctx, s.stmts.checkpoint)
				}
				_, err = both.ExecContext(ctx, seqArg(cp.Cursor), toNanos(cp.LeaseExpires), cp.Listener, cp.Person, cp.Client, toNanos(cp.Created))
			}
			if err != nil {
				return err
			}
		}
		return nil
	}, nil)
	if err != nil {
		return fmt.Errorf("sqlite: checkpoint: %w", err)
	}
	return nil
}
