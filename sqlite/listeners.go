package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/likestripes/moitessier"
)

// Join stores l unless it exists and adds or renews the subscriber sub, as
// [moitessier.Store] describes. The quota's counts are read in the write
// transaction, from the indexes on person, so the count and the insert are
// one step; past the quota the write rolls back.
func (s *Store) Join(ctx context.Context, l moitessier.ListenerInfo, sub moitessier.Subscriber, q moitessier.Quota) (moitessier.ListenerInfo, moitessier.Subscriber, bool, error) {
	if err := s.enter("join"); err != nil {
		return moitessier.ListenerInfo{}, moitessier.Subscriber{}, false, err
	}
	defer s.exit()

	var (
		stored  moitessier.ListenerInfo
		created bool
		out     moitessier.Subscriber
	)
	err := s.write(ctx, func(ctx context.Context, tx *wtx) error {
		var err error
		stored, created, err = s.joinListener(ctx, tx, l)
		if err != nil {
			return err
		}
		if err := checkQuota(ctx, tx, l, sub, created, q); err != nil {
			return err
		}
		out = moitessier.Subscriber{Person: sub.Person, Client: sub.Client}
		var cursor, joined, lease int64
		err = tx.StmtContext(ctx, s.stmts.joinSubscriber).QueryRowContext(ctx,
			l.ID, sub.Person, sub.Client, seqArg(min(stored.Head, sub.Cursor)), toNanos(sub.Joined), toNanos(sub.LeaseExpires),
		).Scan(&cursor, &joined, &lease)
		if err != nil {
			return err
		}
		out.Cursor, out.Joined, out.LeaseExpires = moitessier.Cursor(cursor), fromNanos(joined), fromNanos(lease)
		return nil
	}, func() {
		if created {
			c := &cachedListener{info: stored}
			c.info.Scopes = slices.Clone(stored.Scopes)
			s.listeners[l.ID] = c
			s.index.Add(l.ID, c.info.Scopes)
		}
	})
	if err != nil {
		return moitessier.ListenerInfo{}, moitessier.Subscriber{}, false, fmt.Errorf("sqlite: join %s: %w", l.ID, err)
	}
	return stored, out, created, nil
}

// checkQuota returns a *moitessier.QuotaError if the listener l, when this
// join created it, or the subscriber sub, if it is new, takes its person
// past q. The listener is already inserted, the subscriber not yet.
func checkQuota(ctx context.Context, tx *wtx, l moitessier.ListenerInfo, sub moitessier.Subscriber, created bool, q moitessier.Quota) error {
	// count returns how many rows query finds, at most limit.
	count := func(limit int, query string, args ...any) (int, error) {
		var n int
		err := tx.QueryRowContext(ctx, `SELECT count(*) FROM (`+query+` LIMIT ?)`, append(args, limit)...).Scan(&n)
		return n, err
	}
	if created && q.Listeners > 0 {
		n, err := count(q.Listeners+1, `SELECT 1 FROM listeners WHERE person = ?`, l.Person)
		if err != nil {
			return err
		}
		if n > q.Listeners {
			return &moitessier.QuotaError{Person: l.Person, Kind: moitessier.QuotaListeners, Limit: q.Listeners}
		}
	}
	if kind, limit := q.OfType(l.Type); created && limit > 0 {
		n, err := count(limit+1, `SELECT 1 FROM listeners WHERE person = ? AND type = ?`, l.Person, int(l.Type))
		if err != nil {
			return err
		}
		if n > limit {
			return &moitessier.QuotaError{Person: l.Person, Kind: kind, Limit: limit}
		}
	}
	if q.Subscriptions <= 0 {
		return nil
	}
	if !created {
		var exists bool
		if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM subscribers WHERE listener_id = ? AND person = ? AND client = ?)`,
			l.ID, sub.Person, sub.Client).Scan(&exists); err != nil || exists {
			return err
		}
	}
	n, err := count(q.Subscriptions, `SELECT 1 FROM subscribers WHERE person = ?`, sub.Person)
	if err != nil {
		return err
	}
	if n >= q.Subscriptions {
		return &moitessier.QuotaError{Person: sub.Person, Kind: moitessier.QuotaSubscriptions, Limit: q.Subscriptions}
	}
	return nil
}

// joinListener stores l unless a listener with its ID exists, and returns
// the stored listener and whether it created it.
func (s *Store) joinListener(ctx context.Context, tx *wtx, l moitessier.ListenerInfo) (moitessier.ListenerInfo, bool, error) {
	res, err := tx.StmtContext(ctx, s.stmts.insertListener).ExecContext(ctx,
		l.ID, int(l.Type), l.Person, l.Client, toNanos(l.Created))
	if err != nil {
		return l, false, err
	}
	if n, err := res.RowsAffected(); err != nil {
		return l, false, err
	} else if n == 1 {
		ins := tx.StmtContext(ctx, s.stmts.insertScope)
		for i, scope := range l.Scopes {
			if _, err := ins.ExecContext(ctx, l.ID, i, scope); err != nil {
				return l, false, err
			}
		}
		l.Scopes = slices.Clone(l.Scopes)
		l.Head = 0
		return l, true, nil
	}

	stored := moitessier.ListenerInfo{ID: l.ID}
	var created, head int64
	if err := tx.StmtContext(ctx, s.stmts.getListener).QueryRowContext(ctx, l.ID).
		Scan(&stored.Type, &stored.Person, &stored.Client, &created, &head); err != nil {
		return l, false, err
	}
	stored.Created, stored.Head = fromNanos(created), moitessier.Cursor(head)
	rows, err := tx.StmtContext(ctx, s.stmts.getScopes).QueryContext(ctx, l.ID)
	if err != nil {
		return l, false, err
	}
	defer rows.Close()
	for rows.Next() {
		var scope string
		if err := rows.Scan(&scope); err != nil {
			return l, false, err
		}
		stored.Scopes = append(stored.Scopes, scope)
	}
	return stored, false, rows.Err()
}

// Listener returns the listener with the given ID, with its Head, from
// memory. It returns an error wrapping [moitessier.ErrNotFound] if there is
// none.
func (s *Store) Listener(ctx context.Context, id string) (moitessier.ListenerInfo, error) {
	if err := s.enter("listener"); err != nil {
		return moitessier.ListenerInfo{}, err
	}
	defer s.exit()
	s.mu.RLock()
	c := s.listeners[id]
	var l moitessier.ListenerInfo
	if c != nil {
		l = c.info
	}
	s.mu.RUnlock()
	if c == nil {
		return moitessier.ListenerInfo{}, fmt.Errorf("sqlite: listener %s: %w", id, moitessier.ErrNotFound)
	}
	l.Scopes = slices.Clone(l.Scopes)
	return l, nil
}

// Subscribers returns the subscribers of a listener in the range r, ordered
// by Person then Client, read from the primary key's index. It returns an
// error wrapping [moitessier.ErrNotFound] if the listener does not exist.
func (s *Store) Subscribers(ctx context.Context, listenerID string, r moitessier.SubscriberRange) ([]moitessier.Subscriber, error) {
	if err := s.enter("subscribers"); err != nil {
		return nil, err
	}
	defer s.exit()
	if !s.exists(listenerID) {
		return nil, fmt.Errorf("sqlite: subscribers of %s: %w", listenerID, moitessier.ErrNotFound)
	}
	limit := int64(r.Limit)
	if limit <= 0 {
		limit = -1
	}
	rows, err := s.stmts.subs.QueryContext(ctx, listenerID, r.Person, r.Client, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: subscribers of %s: %w", listenerID, err)
	}
	defer rows.Close()
	var subs []moitessier.Subscriber
	for rows.Next() {
		var (
			sub                   moitessier.Subscriber
			cursor, joined, lease int64
		)
		if err := rows.Scan(&sub.Person, &sub.Client, &cursor, &joined, &lease); err != nil {
			return nil, fmt.Errorf("sqlite: subscribers of %s: %w", listenerID, err)
		}
		sub.Cursor, sub.Joined, sub.LeaseExpires = moitessier.Cursor(cursor), fromNanos(joined), fromNanos(lease)
		subs = append(subs, sub)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: subscribers of %s: %w", listenerID, err)
	}
	return subs, nil
}

func (s *Store) exists(id string) bool {
	s.mu.RLock()
	_, ok := s.listeners[id]
	s.mu.RUnlock()
	return ok
}

// Leave removes one subscriber, and the listener with its messages when no
// subscriber remains. It returns an error wrapping [moitessier.ErrNotFound]
// if there is no such subscriber.
func (s *Store) Leave(ctx context.Context, listenerID, person, client string) (bool, error) {
	return s.leave(ctx, listenerID, nil, person, client)
}

var _ moitessier.IncarnationLeaver = (*Store)(nil)

// LeaveOf implements moitessier.IncarnationLeaver: Leave, in a transaction
// that leaves only while the listener is the incarnation created.
func (s *Store) LeaveOf(ctx context.Context, listenerID string, created time.Time, person, client string) (bool, error) {
	return s.leave(ctx, listenerID, &created, person, client)
}

// leave is Leave, or LeaveOf if created is not nil.
func (s *Store) leave(ctx context.Context, listenerID string, created *time.Time, person, client string) (bool, error) {
	if err := s.enter("leave"); err != nil {
		return false, err
	}
	defer s.exit()
	var deleted bool
	err := s.write(ctx, func(ctx context.Context, tx *wtx) error {
		deleted = false
		if created != nil {
			var ns int64
			err := tx.QueryRowContext(ctx, `SELECT created FROM listeners WHERE id = ?`, listenerID).Scan(&ns)
			if errors.Is(err, sql.ErrNoRows) || err == nil && ns != toNanos(*created) {
				return fmt.Errorf("%w: no listener of that incarnation", moitessier.ErrNotFound)
			}
			if err != nil {
				return err
			}
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM subscribers WHERE listener_id = ? AND person = ? AND client = ?`,
			listenerID, person, client)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return moitessier.ErrNotFound
		}
		var left bool
		if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM subscribers WHERE listener_id = ?)`,
			listenerID).Scan(&left); err != nil {
			return err
		}
		if left {
			return nil
		}
		deleted = true
		if _, err := tx.ExecContext(ctx, `DELETE FROM messages WHERE listener_id = ?`, listenerID); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM listeners WHERE id = ?`, listenerID)
		return err
	}, func() {
		if deleted {
			s.forget(listenerID)
		}
	})
	if err != nil {
		return false, fmt.Errorf("sqlite: leave %s (%q, %q): %w", listenerID, person, client, err)
	}
	return deleted, nil
}

// forget drops a deleted listener from the cache; s.mu is held.
func (s *Store) forget(id string) *cachedListener {
	c := s.listeners[id]
	if c != nil {
		s.index.Remove(id, c.info.Scopes)
		delete(s.listeners, id)
	}
	return c
}

// Match returns every listener one of whose scopes matches the concrete
// scope, from memory: it costs no query.
func (s *Store) Match(ctx context.Context, scope string) ([]moitessier.ListenerInfo, error) {
	if err := s.enter("match"); err != nil {
		return nil, err
	}
	defer s.exit()
	var out []moitessier.ListenerInfo
	s.mu.RLock()
	s.index.Match(scope, func(id string) {
		if c := s.listeners[id]; c != nil {
			l := c.info
			l.Scopes = slices.Clone(l.Scopes)
			out = append(out, l)
		}
	})
	s.mu.RUnlock()
	return out, nil
}
