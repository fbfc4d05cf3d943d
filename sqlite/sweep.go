package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/likestripes/moitessier"
)

const defaultBatchSize = 1000

// Sweep removes what has expired, as [moitessier.Store] describes, in
// transactions of at most p.BatchSize removed rows each, so that a write
// waits at most one batch. It stops at the first error, and what it removed
// until then stays removed and is counted in the result.
func (s *Store) Sweep(ctx context.Context, p moitessier.SweepParams) (moitessier.SweepResult, error) {
	var res moitessier.SweepResult
	if err := s.enter("sweep"); err != nil {
		return res, err
	}
	defer s.exit()
	batch := p.BatchSize
	if batch <= 0 {
		batch = defaultBatchSize
	}
	steps := []struct {
		name string
		fn   func(context.Context, moitessier.SweepParams, int, *moitessier.SweepResult) error
	}{
		{"subscribers", s.sweepSubscribers},
		{"listeners", s.sweepListeners},
		{"messages", s.sweepRetention},
		{"idempotency keys", s.sweepKeys},
	}
	for _, step := range steps {
		if err := step.fn(ctx, p, batch, &res); err != nil {
			return res, fmt.Errorf("sqlite: sweep %s: %w", step.name, err)
		}
	}
	return res, nil
}

// affected returns how many rows the statement whose result and error it is
// given changed.
func affected(res sql.Result, err error) (int, error) {
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	return int(n), err
}

// deleteBatches runs the delete statement, whose last argument is the batch
// size, in one transaction per batch until a batch removes fewer rows.
func (s *Store) deleteBatches(ctx context.Context, batch int, query string, args ...any) (int, error) {
	args = append(args, batch)
	total := 0
	for {
		var n int
		err := s.writeSolo(ctx, func(ctx context.Context, tx *wtx) error {
			var err error
			n, err = affected(tx.ExecContext(ctx, query, args...))
			return err
		}, nil)
		if err != nil {
			return total, err
		}
		total += n
		if n < batch {
			return total, nil
		}
	}
}

func (s *Store) sweepSubscribers(ctx context.Context, p moitessier.SweepParams, batch int, res *moitessier.SweepResult) error {
	n, err := s.deleteBatches(ctx, batch, `DELETE FROM subscribers WHERE (listener_id, person, client) IN (
		SELECT listener_id, person, client FROM subscribers WHERE lease_expires < ? LIMIT ?)`, toNanos(p.Now))
	res.Subscribers += n
	return err
}

// sweepListeners deletes the listeners left with no subscriber, with their
// messages. A listener with many messages takes several transactions; each
// checks again that the listener has no subscriber, so one that somebody
// joins meanwhile survives (without some of its old messages, which nobody
// was subscribed to read).
func (s *Store) sweepListeners(ctx context.Context, p moitessier.SweepParams, batch int, res *moitessier.SweepResult) error {
	// Find candidates on a reader, without holding the write lock.
	rows, err := s.r.QueryContext(ctx, `SELECT id FROM listeners AS l
		WHERE NOT EXISTS (SELECT 1 FROM subscribers AS s WHERE s.listener_id = l.id)`)
	if err != nil {
		return err
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}

	for len(ids) > 0 {
		var (
			deleted  []string
			messages int
			budget   = batch
		)
		err := s.writeSolo(ctx, func(ctx context.Context, tx *wtx) error {
			for budget > 0 && len(ids) > 0 {
				id := ids[0]
				var empty bool
				if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM listeners WHERE id = ?)
					AND NOT EXISTS (SELECT 1 FROM subscribers WHERE listener_id = ?)`, id, id).Scan(&empty); err != nil {
					return err
				}
				if !empty {
					ids = ids[1:]
					continue
				}
				// The listener may outlive this transaction (budget, or a
				// Join before the next): its head must outlive its messages.
				if _, err := tx.StmtContext(ctx, s.stmts.keepHead).ExecContext(ctx, id); err != nil {
					return err
				}
				n, err := affected(tx.ExecContext(ctx, `DELETE FROM messages WHERE (listener_id, seq) IN (
					SELECT listener_id, seq FROM messages WHERE listener_id = ? ORDER BY seq LIMIT ?)`, id, budget))
				if err != nil {
					return err
				}
				messages += n
				budget -= n
				if budget <= 0 {
					break // more messages may remain: the next transaction goes on
				}
				if _, err := tx.ExecContext(ctx, `DELETE FROM listeners WHERE id = ?`, id); err != nil {
					return err
				}
				budget--
				deleted = append(deleted, id)
				ids = ids[1:]
			}
			return nil
		}, func() {
			for _, id := range deleted {
				if c := s.forget(id); c != nil {
					res.Expired = append(res.Expired, c.info)
				}
			}
		})
		if err != nil {
			return err
		}
		res.Messages += messages
	}
	return nil
}

// sweepRetention removes, per listener, the messages older than MaxAge and
// those beyond the newest MaxCount: the messages with seq <= a cut. Like the
// memory store it takes a listener's messages to be created in sequence
// order, so the messages older than MaxAge are those before the first one
// that is not. The cuts are found on a reader, without the write lock, and
// the cache remembers up to where each listener was trimmed, so a listener
// that received nothing since the last sweep costs at most one lookup.
func (s *Store) sweepRetention(ctx context.Context, p moitessier.SweepParams, batch int, res *moitessier.SweepResult) error {
	if p.MaxAge <= 0 && p.MaxCount <= 0 {
		return nil
	}
	type trim struct {
		c             *cachedListener // as cached, so that one recreated meanwhile is left alone
		id            string
		head, trimmed moitessier.Cursor // as cached
		cut           moitessier.Cursor
	}
	var todo []trim
	s.mu.RLock()
	for id, c := range s.listeners {
		if c.info.Head > c.trimmed {
			todo = append(todo, trim{c: c, id: id, head: c.info.Head, trimmed: c.trimmed, cut: c.trimmed})
		}
	}
	s.mu.RUnlock()

	cutoff := toNanos(p.Now.Add(-p.MaxAge))
	keep := todo[:0]
	for _, t := range todo {
		head := t.head
		if p.MaxCount > 0 && head > moitessier.Cursor(p.MaxCount) {
			t.cut = max(t.cut, head-moitessier.Cursor(p.MaxCount))
		}
		if p.MaxAge > 0 {
			var seq int64
			err := s.stmts.seek.QueryRowContext(ctx, t.id, seqArg(t.cut), seqArg(head), cutoff).Scan(&seq)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				t.cut = head
			case err != nil:
				return err
			default:
				t.cut = max(t.cut, moitessier.Cursor(seq-1))
			}
		}
		if t.cut > t.trimmed {
			keep = append(keep, t)
		}
	}
	todo = keep

	for len(todo) > 0 {
		var (
			done     []trim
			messages int
			budget   = batch
		)
		err := s.writeSolo(ctx, func(ctx context.Context, tx *wtx) error {
			for budget > 0 && len(todo) > 0 {
				t := todo[0]
				s.mu.RLock()
				same := s.listeners[t.id] == t.c
				s.mu.RUnlock()
				if !same {
					todo = todo[1:]
					continue
				}
				if _, err := tx.StmtContext(ctx, s.stmts.keepHead).ExecContext(ctx, t.id); err != nil {
					return err
				}
				n, err := affected(tx.ExecContext(ctx, `DELETE FROM messages WHERE (listener_id, seq) IN (
					SELECT listener_id, seq FROM messages WHERE listener_id = ? AND seq <= ? ORDER BY seq LIMIT ?)`,
					t.id, seqArg(t.cut), budget))
				if err != nil {
					return err
				}
				messages += n
				budget -= n
				if budget <= 0 {
					break // the next transaction goes on with this listener
				}
				done = append(done, t)
				todo = todo[1:]
			}
			return nil
		}, func() {
			for _, t := range done {
				if t.cut > t.c.trimmed {
					t.c.trimmed = t.cut
				}
			}
		})
		if err != nil {
			return err
		}
		res.Messages += messages
	}
	return nil
}

func (s *Store) sweepKeys(ctx context.Context, p moitessier.SweepParams, batch int, res *moitessier.SweepResult) error {
	n, err := s.deleteBatches(ctx, batch, `DELETE FROM idempotency_keys WHERE (sender, key) IN (
		SELECT sender, key FROM idempotency_keys WHERE created < ? LIMIT ?)`, toNanos(p.KeysBefore))
	res.Keys += n
	return err
}
