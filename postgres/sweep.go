package postgres

import (
	"context"
	"math"

	"github.com/jackc/pgx/v5"

	"github.com/likestripes/moitessier"
)

// listenerPageSize is how many listeners one step of the per-listener
// retention (MaxCount) looks at.
const listenerPageSize = 500

// Sweep removes what has expired; see moitessier.Store. Every statement
// removes at most p.BatchSize rows of one table and runs in its own short
// transaction, found through an index (subscribers by lease, messages by
// creation time or by listener and sequence, keys by record time), so a
// sweep never holds long locks. One step reads a whole table: the versions
// of scopes that no listener has any more are found by reading
// scope_versions (one row per concrete scope in use, or used since the
// last sweep), each row checked through an index.
func (s *Store) Sweep(ctx context.Context, p moitessier.SweepParams) (moitessier.SweepResult, error) {
	const op = "sweep"
	var res moitessier.SweepResult
	if err := s.check(op); err != nil {
		return res, err
	}
	batch := p.BatchSize
	if batch <= 0 {
		batch = 1000
	}
	now := toNS(p.Now)
	steps := []func() error{
		func() error {
			// The registrations of Watch calls whose connection is gone
			// (a hub that crashed): until then, appends notify them.
			_, err := s.pool.Exec(ctx, s.q.deleteGoneWatchers)
			return err
		},
		func() error { return s.trimDoomed(ctx, now, batch, &res) },
		func() error { return s.expire(ctx, now, batch, &res) },
		func() error {
			if p.MaxAge <= 0 || p.Now.IsZero() {
				return nil
			}
			return s.deleteOld(ctx, toNS(p.Now.Add(-p.MaxAge)), batch, &res)
		},
		func() error {
			if p.MaxCount <= 0 {
				return nil
			}
			return s.trimCount(ctx, int64(p.MaxCount), batch, &res)
		},
		func() error {
			if p.KeysBefore.IsZero() {
				return nil
			}
			return s.deleteKeys(ctx, toNS(p.KeysBefore), batch, &res)
		},
		func() error { return s.deleteUnusedScopes(ctx, batch) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return res, s.wrap(op, err)
		}
	}
	return res, nil
}

// trimDoomed deletes, in batches, the messages of listeners whose every
// subscriber's lease has ended, so that deleting those listeners afterwards
// is a small transaction. The listeners are chosen once, but every batch
// checks again that they are still doomed (see trimDoomed in queries.go):
// a subscriber may join one of them between two batches, and expire then
// keeps the listener, which must keep what was dispatched to it. Each
// batch first takes the listeners' trim locks (lockTrim), which a join
// holds shared from before it reads the listener's head until it commits
// (migration 8), and checks, in a statement of its own whose snapshot
// comes after the locks, only the listeners whose lock it got at once:
// one a join under way holds (a join that may renew a lease, and read the
// head before messages that must be kept) is left to the next sweep, and
// the joins of the others do not wait behind it.
func (s *Store) trimDoomed(ctx context.Context, now int64, batch int, res *moitessier.SweepResult) error {
	if now == math.MinInt64 {
		return nil
	}
	rows, err := s.pool.Query(ctx, s.q.expiredListeners, now, 1000)
	if err != nil {
		return err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(ids) == 0 {
		return err
	}
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), trimLockChunk)]
		ids = ids[len(chunk):]
		for {
			var n int64
			err := retry(ctx, func() error {
				n = 0
				return pgx.BeginTxFunc(ctx, s.pool, readCommitted, func(tx pgx.Tx) error {
					rows, err := tx.Query(ctx, s.q.lockTrim, chunk)
					if err != nil {
						return err
					}
					locked, err := pgx.CollectRows(rows, pgx.RowTo[string])
					if err != nil || len(locked) == 0 {
						return err
					}
					tag, err := tx.Exec(ctx, s.q.trimDoomed, locked, batch, now)
					n = tag.RowsAffected()
					return err
				})
			})
			if err != nil {
				return err
			}
			res.Messages += int(n)
			if n < int64(batch) {
				break
			}
		}
	}
	return nil
}

// trimLockChunk is how many listeners' trim locks one transaction of
// trimDoomed holds at once.
const trimLockChunk = 100

// expire deletes subscribers whose lease ended, a batch per transaction,
// and in the same transaction the listeners they leave empty, with what
// remains of their messages.
func (s *Store) expire(ctx context.Context, now int64, batch int, res *moitessier.SweepResult) error {
	if now == math.MinInt64 {
		return nil
	}
	for {
		var (
			subs    int
			expired []moitessier.ListenerInfo
			tags    []int64 // of expired's concrete scopes' rows (see unseed)
			wild    bool
			msgs    int
		)
		err := retry(ctx, func() error {
			subs, expired, tags, wild, msgs = 0, nil, nil, false, 0
			return pgx.BeginTxFunc(ctx, s.pool, readCommitted, func(tx pgx.Tx) error {
				rows, err := tx.Query(ctx, s.q.expireSubscribers, now, batch)
				if err != nil {
					return err
				}
				ls, err := pgx.CollectRows(rows, pgx.RowTo[string])
				if err != nil {
					return err
				}
				subs = len(ls)
				if subs == 0 {
					return nil
				}
				if _, err := tx.Exec(ctx, s.q.lockListeners, ls); err != nil {
					return err
				}
				rows, err = tx.Query(ctx, s.q.deleteEmptyListeners, ls)
				if err != nil {
					return err
				}
				var ids []string
				for rows.Next() {
					var (
						l       moitessier.ListenerInfo
						typ     int
						created int64
						head    int64
						lwild   bool
						tag     int64
					)
					if err := rows.Scan(&l.ID, &typ, &l.Person, &l.Client, &l.Scopes, &created, &head, &lwild, &tag); err != nil {
						rows.Close()
						return err
					}
					l.Type, l.Created, l.Head = moitessier.ListenerType(typ), fromNS(created), moitessier.Cursor(head)
					expired = append(expired, l)
					tags = append(tags, tag)
					ids = append(ids, l.ID)
					wild = wild || lwild
				}
				if err := rows.Err(); err != nil {
					return err
				}
				if len(ids) == 0 {
					return nil
				}
				tag, err := tx.Exec(ctx, s.q.deleteMsgsOf, ids)
				if err != nil {
					return err
				}
				msgs = int(tag.RowsAffected())
				if wild {
					_, err = tx.Exec(ctx, s.q.bumpPatterns)
				}
				return err
			})
		})
		if err != nil {
			return err
		}
		if wild {
			s.patternsChanged() // every answer, once for the batch
		} else {
			for i, l := range expired {
				s.unseed(l, tags[i], false)
			}
		}
		res.Subscribers += subs
		res.Messages += msgs
		res.Expired = append(res.Expired, expired...)
		if subs < batch {
			return nil
		}
	}
}

// deleteOld deletes messages created before cutoff, a batch at a time.
func (s *Store) deleteOld(ctx context.Context, cutoff int64, batch int, res *moitessier.SweepResult) error {
	for {
		tag, err := s.pool.Exec(ctx, s.q.deleteOld, cutoff, batch)
		if err != nil {
			return err
		}
		res.Messages += int(tag.RowsAffected())
		if tag.RowsAffected() < int64(batch) {
			return nil
		}
	}
}

// trimCount keeps the newest maxCount messages of every listener: it walks
// the listeners in id order, a page at a time, deleting a batch at a time.
func (s *Store) trimCount(ctx context.Context, maxCount int64, batch int, res *moitessier.SweepResult) error {
	after := ""
	for {
		var (
			last *string
			n    int
		)
		if err := s.pool.QueryRow(ctx, s.q.listenerPage, after, listenerPageSize).Scan(&last, &n); err != nil {
			return err
		}
		if last == nil {
			return nil
		}
		for {
			tag, err := s.pool.Exec(ctx, s.q.trimPage, after, *last, maxCount, batch)
			if err != nil {
				return err
			}
			res.Messages += int(tag.RowsAffected())
			if tag.RowsAffected() < int64(batch) {
				break
			}
		}
		if n < listenerPageSize {
			return nil
		}
		after = *last
	}
}

// deleteKeys deletes idempotency keys recorded before cutoff.
func (s *Store) deleteKeys(ctx context.Context, cutoff int64, batch int, res *moitessier.SweepResult) error {
	for {
		tag, err := s.pool.Exec(ctx, s.q.deleteKeys, cutoff, batch)
		if err != nil {
			return err
		}
		res.Keys += int(tag.RowsAffected())
		if tag.RowsAffected() < int64(batch) {
			return nil
		}
	}
}

// deleteUnusedScopes removes, a batch at a time, the versions of scopes
// that no listener has any more (see lockUnusedScopes in queries.go).
func (s *Store) deleteUnusedScopes(ctx context.Context, batch int) error {
	for {
		var n int
		err := retry(ctx, func() error {
			return pgx.BeginTxFunc(ctx, s.pool, readCommitted, func(tx pgx.Tx) error {
				rows, err := tx.Query(ctx, s.q.lockUnusedScopes, batch)
				if err != nil {
					return err
				}
				scopes, err := pgx.CollectRows(rows, pgx.RowTo[string])
				if err != nil {
					return err
				}
				n = len(scopes)
				if n == 0 {
					return nil
				}
				_, err = tx.Exec(ctx, s.q.deleteUnusedScopes, scopes)
				return err
			})
		})
		if err != nil || n < batch {
			return err
		}
	}
}
