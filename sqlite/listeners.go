package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"slices"

	"github.com/likestripes/moitessier"
)

// Join stores l unless it exists and adds or renews the subscriber sub, as
// [moitessier.Store] describes.
func (s *Store) Join(ctx context.Context, l moitessier.ListenerInfo, sub moitessier.Subscriber) (moitessier.ListenerInfo, moitessier.Subscriber, bool, error) {
	if err := s.enter("join"); err != nil {
		return moitessier.ListenerInfo{}, moitessier.Subscriber{}, false, err
	}
	defer s.exit()

	var (
		stored  moitessier.ListenerInfo
		created bool
		out     = moitessier.Subscriber{Person: sub.Person, Client: sub.Client}
	)
	err := s.write(ctx, func(tx *sql.Tx) error {
		// wmu is held: the cache is what the file holds.
		s.mu.RLock()
		c := s.listeners[l.ID]
		if c != nil {
			stored = c.info
		}
		s.mu.RUnlock()
		if c == nil {
			created = true
			stored = l
			stored.Scopes = slices.Clone(l.Scopes)
			stored.Head = 0
			if _, err := tx.ExecContext(ctx, `INSERT INTO listeners (id, type, person, client, created, head)
				VALUES (?, ?, ?, ?, ?, 0)`, l.ID, int(l.Type), l.Person, l.Client, toNanos(l.Created)); err != nil {
				return err
			}
			for i, scope := range l.Scopes {
				if _, err := tx.ExecContext(ctx, `INSERT INTO listener_scopes (listener_id, ord, scope)
					VALUES (?, ?, ?)`, l.ID, i, scope); err != nil {
					return err
				}
			}
		}
		var cursor, joined, lease int64
		err := tx.QueryRowContext(ctx, `INSERT INTO subscribers (listener_id, person, client, cursor, joined, lease_expires)
			VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (listener_id, person, client) DO UPDATE
				SET lease_expires = max(lease_expires, excluded.lease_expires)
			RETURNING cursor, joined, lease_expires`,
			l.ID, sub.Person, sub.Client, seqArg(stored.Head), toNanos(sub.Joined), toNanos(sub.LeaseExpires),
		).Scan(&cursor, &joined, &lease)
		if err != nil {
			return err
		}
		out.Cursor, out.Joined, out.LeaseExpires = moitessier.Cursor(cursor), fromNanos(joined), fromNanos(lease)
		return nil
	}, func() {
		if created {
			s.listeners[l.ID] = &cachedListener{info: stored}
			s.index.Add(l.ID, stored.Scopes)
		}
	})
	if err != nil {
		return moitessier.ListenerInfo{}, moitessier.Subscriber{}, false, fmt.Errorf("sqlite: join %s: %w", l.ID, err)
	}
	stored.Scopes = slices.Clone(stored.Scopes)
	return stored, out, created, nil
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

// Subscribers returns the subscribers of a listener, ordered by Person then
// Client. It returns an error wrapping [moitessier.ErrNotFound] if the
// listener does not exist.
func (s *Store) Subscribers(ctx context.Context, listenerID string) ([]moitessier.Subscriber, error) {
	if err := s.enter("subscribers"); err != nil {
		return nil, err
	}
	defer s.exit()
	if !s.exists(listenerID) {
		return nil, fmt.Errorf("sqlite: subscribers of %s: %w", listenerID, moitessier.ErrNotFound)
	}
	rows, err := s.stmts.subs.QueryContext(ctx, listenerID)
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
	if err := s.enter("leave"); err != nil {
		return false, err
	}
	defer s.exit()
	var deleted bool
	err := s.write(ctx, func(tx *sql.Tx) error {
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
