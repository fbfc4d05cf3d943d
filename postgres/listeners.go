package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/likestripes/moitessier"
)

// Join stores l unless it exists and adds sub as its subscriber unless it
// exists; see moitessier.Store. A join that creates the listener or the
// subscriber checks the quota in its transaction, under a transaction-level
// advisory lock of the person taken after the insert: every process's joins
// for one person count in turn, each seeing the ones committed before, and
// a join that creates nothing (a lease renewal) takes no lock and counts
// nothing.
func (s *Store) Join(ctx context.Context, l moitessier.ListenerInfo, sub moitessier.Subscriber, q moitessier.Quota) (moitessier.ListenerInfo, moitessier.Subscriber, bool, error) {
	const op = "join"
	if err := s.check(op); err != nil {
		return moitessier.ListenerInfo{}, moitessier.Subscriber{}, false, err
	}
	var (
		info    moitessier.ListenerInfo
		stored  moitessier.Subscriber
		created bool
	)
	err := retry(ctx, func() error {
		return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			var id string
			err := tx.QueryRow(ctx, s.q.insertListener, l.ID, int(l.Type), l.Person, l.Client, l.Scopes, toNS(l.Created)).Scan(&id)
			switch {
			case err == nil:
				created = true
				wild := make([]bool, len(l.Scopes))
				anyWild := false
				for i, p := range l.Scopes {
					wild[i] = moitessier.IsPattern(p)
					anyWild = anyWild || wild[i]
				}
				if _, err := tx.Exec(ctx, s.q.insertScopes, l.ID, l.Scopes, wild); err != nil {
					return err
				}
				if anyWild {
					if _, err := tx.Exec(ctx, s.q.bumpPatterns); err != nil {
						return err
					}
				}
				if err := s.checkListenerQuota(ctx, tx, l, q); err != nil {
					return err
				}
			case errors.Is(err, pgx.ErrNoRows):
				created = false
			default:
				return err
			}
			stored = moitessier.Subscriber{Person: sub.Person, Client: sub.Client}
			var (
				cur, joined, lease int64
				inserted           bool
			)
			err = tx.QueryRow(ctx, s.q.joinSubscriber, l.ID, sub.Person, sub.Client, toNS(sub.Joined), toNS(sub.LeaseExpires), toSeq(sub.Cursor)).Scan(&cur, &joined, &lease, &inserted)
			if errors.Is(err, pgx.ErrNoRows) {
				// The listener was deleted after our insert found it:
				// retry, creating it anew.
				return &retryError{}
			}
			if err != nil {
				return err
			}
			if inserted && q.Subscriptions > 0 {
				if err := s.checkSubscriptionQuota(ctx, tx, sub.Person, !(created && quotaLocked(l, q) && l.Person == sub.Person), q); err != nil {
					return err
				}
			}
			stored.Cursor, stored.Joined, stored.LeaseExpires = moitessier.Cursor(cur), fromNS(joined), fromNS(lease)
			info, err = scanListener(tx.QueryRow(ctx, s.q.listener, l.ID))
			return err
		})
	})
	if err != nil {
		return moitessier.ListenerInfo{}, moitessier.Subscriber{}, false, s.wrap(op, fmt.Errorf("listener %s: %w", l.ID, err))
	}
	return info, stored, created, nil
}

// quotaLocked reports whether a quota check took person's lock: the
// listener's check, if it ran, took l.Person's.
func quotaLocked(l moitessier.ListenerInfo, q moitessier.Quota) bool {
	_, limit := typeQuota(l.Type, q)
	return q.Listeners > 0 || limit > 0
}

// typeQuota returns the bound of q on one person's listeners of type t
// (Handler, Shared), or 0 if q sets none.
func typeQuota(t moitessier.ListenerType, q moitessier.Quota) (moitessier.QuotaKind, int) {
	switch t {
	case moitessier.Handler:
		return moitessier.QuotaHandlers, q.Handlers
	case moitessier.Shared:
		return moitessier.QuotaShared, q.Shared
	}
	return "", 0
}

// checkListenerQuota counts the listeners of l.Person, and those of l's
// type, l among them, in the transaction that created l, and returns a
// *moitessier.QuotaError if they are past q.
func (s *Store) checkListenerQuota(ctx context.Context, tx pgx.Tx, l moitessier.ListenerInfo, q moitessier.Quota) error {
	if !quotaLocked(l, q) {
		return nil
	}
	if _, err := tx.Exec(ctx, s.q.quotaLock, advisoryKey("quota\x00"+l.Person, s.cfg.Schema)); err != nil {
		return err
	}
	kind, limit := typeQuota(l.Type, q)
	var owned, ofType int
	if err := tx.QueryRow(ctx, s.q.countListeners, l.Person, limitPlusOne(q.Listeners), int(l.Type), limitPlusOne(limit)).Scan(&owned, &ofType); err != nil {
		return err
	}
	if q.Listeners > 0 && owned > q.Listeners {
		return &moitessier.QuotaError{Person: l.Person, Kind: moitessier.QuotaListeners, Limit: q.Listeners}
	}
	if limit > 0 && ofType > limit {
		return &moitessier.QuotaError{Person: l.Person, Kind: kind, Limit: limit}
	}
	return nil
}

// checkSubscriptionQuota counts the subscriptions of person, the one just
// inserted among them, and returns a *moitessier.QuotaError if they are
// past q. lock is false when the transaction holds person's lock already.
func (s *Store) checkSubscriptionQuota(ctx context.Context, tx pgx.Tx, person string, lock bool, q moitessier.Quota) error {
	if lock {
		if _, err := tx.Exec(ctx, s.q.quotaLock, advisoryKey("quota\x00"+person, s.cfg.Schema)); err != nil {
			return err
		}
	}
	var n int
	if err := tx.QueryRow(ctx, s.q.countSubscriptions, person, limitPlusOne(q.Subscriptions)).Scan(&n); err != nil {
		return err
	}
	if n > q.Subscriptions {
		return &moitessier.QuotaError{Person: person, Kind: moitessier.QuotaSubscriptions, Limit: q.Subscriptions}
	}
	return nil
}

// limitPlusOne is the LIMIT of a quota count: one more than the limit
// tells that it is passed; no limit counts nothing.
func limitPlusOne(limit int) int64 {
	if limit <= 0 {
		return 0
	}
	return int64(limit) + 1
}

// retryError asks retry to run a transaction again.
type retryError struct{}

func (*retryError) Error() string { return "concurrent deletion; retry" }

type rowScanner interface{ Scan(dest ...any) error }

func scanListener(r rowScanner) (moitessier.ListenerInfo, error) {
	var (
		l       moitessier.ListenerInfo
		typ     int
		created int64
		head    int64
	)
	if err := r.Scan(&l.ID, &typ, &l.Person, &l.Client, &l.Scopes, &created, &head); err != nil {
		return l, err
	}
	l.Type, l.Created, l.Head = moitessier.ListenerType(typ), fromNS(created), moitessier.Cursor(head)
	return l, nil
}

// Listener returns the listener with the given ID, or ErrNotFound.
func (s *Store) Listener(ctx context.Context, id string) (moitessier.ListenerInfo, error) {
	const op = "listener"
	if err := s.check(op); err != nil {
		return moitessier.ListenerInfo{}, err
	}
	l, err := scanListener(s.pool.QueryRow(ctx, s.q.listener, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return moitessier.ListenerInfo{}, fmt.Errorf("postgres: listener %s: %w", id, moitessier.ErrNotFound)
	}
	if err != nil {
		return moitessier.ListenerInfo{}, s.wrap(op, err)
	}
	return l, nil
}

// Subscribers returns a listener's subscribers in the range r, ordered by
// Person then Client, or ErrNotFound if the listener does not exist.
func (s *Store) Subscribers(ctx context.Context, listenerID string, r moitessier.SubscriberRange) ([]moitessier.Subscriber, error) {
	const op = "subscribers"
	if err := s.check(op); err != nil {
		return nil, err
	}
	var limit *int64
	if r.Limit > 0 {
		n := int64(r.Limit)
		limit = &n
	}
	rows, err := s.pool.Query(ctx, s.q.subscribers, listenerID, r.Person, r.Client, limit)
	if err != nil {
		return nil, s.wrap(op, err)
	}
	var (
		subs  []moitessier.Subscriber
		found bool
	)
	for rows.Next() {
		found = true
		var (
			person, client          *string
			cur, joined, leaseUntil *int64
		)
		if err := rows.Scan(&person, &client, &cur, &joined, &leaseUntil); err != nil {
			rows.Close()
			return nil, s.wrap(op, err)
		}
		if person == nil {
			continue // the listener, without subscribers
		}
		subs = append(subs, moitessier.Subscriber{Person: *person, Client: *client, Cursor: moitessier.Cursor(*cur), Joined: fromNS(*joined), LeaseExpires: fromNS(*leaseUntil)})
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap(op, err)
	}
	if !found {
		return nil, fmt.Errorf("postgres: subscribers of %s: %w", listenerID, moitessier.ErrNotFound)
	}
	return subs, nil
}

// Leave removes one subscriber and, if it was the last, the listener and its
// messages in the same transaction. It returns ErrNotFound if there is no
// such subscriber.
func (s *Store) Leave(ctx context.Context, listenerID, person, client string) (bool, error) {
	const op = "leave"
	if err := s.check(op); err != nil {
		return false, err
	}
	var deleted bool
	err := retry(ctx, func() error {
		deleted = false
		return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, s.q.deleteSubscriber, listenerID, person, client)
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 0 {
				return fmt.Errorf("subscriber %q/%q of %s: %w", person, client, listenerID, moitessier.ErrNotFound)
			}
			if _, err := tx.Exec(ctx, s.q.lockListener, listenerID); err != nil {
				return err
			}
			var wild bool
			err = tx.QueryRow(ctx, s.q.deleteListener, listenerID).Scan(&wild)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil // other subscribers remain
			}
			if err != nil {
				return err
			}
			deleted = true
			if _, err := tx.Exec(ctx, s.q.deleteMsgs, listenerID); err != nil {
				return err
			}
			if wild {
				if _, err := tx.Exec(ctx, s.q.bumpPatterns); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if errors.Is(err, moitessier.ErrNotFound) {
		return false, fmt.Errorf("postgres: leave: %w", err)
	}
	if err != nil {
		return false, s.wrap(op, err)
	}
	return deleted, nil
}
