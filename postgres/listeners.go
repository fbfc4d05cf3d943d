package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/internal/scopeindex"
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

// patternCache is this process's copy of every wildcard pattern in the
// schema, in a scope index, with the pattern version it was loaded at.
type patternCache struct {
	mu      sync.RWMutex
	version int64 // -1 until loaded
	idx     *scopeindex.Index
}

func (p *patternCache) match(scope string) (ids []string, version int64) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.idx != nil {
		p.idx.Match(scope, func(id string) { ids = append(ids, id) })
	}
	return ids, p.version
}

// Match returns every listener one of whose scopes matches scope.
//
// Concrete scopes are looked up in the listener_scopes index. Wildcard
// patterns are matched in Go against a cached index of all patterns; the
// query also returns the schema's pattern version, which every creation or
// deletion of a pattern listener raises in its transaction. If the version
// differs from the cache's, the cache is reloaded and the query repeated, so
// a listener created by any process before Match began is always found.
// The answer is kept for MatchCached.
func (s *Store) Match(ctx context.Context, scope string) ([]moitessier.ListenerInfo, error) {
	ls, _, err := s.match(ctx, scope)
	return ls, err
}

// MatchCached is Match answered from this process's cache of recent
// answers, when it has one for scope; see moitessier.MatchCacher. The
// stamp is the pattern version and the scope's version (the last
// transaction that created or deleted a listener on it) the answer was
// read at; Append checks both in its statement, so a cached answer costs no
// round trip and nothing is stored from one that is out of date.
func (s *Store) MatchCached(ctx context.Context, scope string) ([]moitessier.ListenerInfo, moitessier.MatchStamp, error) {
	if e, ok := s.mc.get(scope); ok {
		return e.ls, e.stamp, nil
	}
	ls, st, err := s.match(ctx, scope)
	if err != nil || st == nil {
		return ls, nil, err
	}
	return ls, *st, nil
}

// match runs the Match query and caches the answer if it is complete at
// its stamp.
func (s *Store) match(ctx context.Context, scope string) ([]moitessier.ListenerInfo, *matchStamp, error) {
	const op = "match"
	if err := s.check(op); err != nil {
		return nil, nil, err
	}
	ids, cached := s.pat.match(scope)
	ls, st, err := s.matchQuery(ctx, scope, ids)
	if err != nil {
		return nil, nil, s.wrap(op, err)
	}
	if st.patterns != cached {
		// Reload: the index then holds every pattern committed before
		// this call began, so the second answer is complete.
		if err := s.reloadPatterns(ctx, st.patterns); err != nil {
			return nil, nil, s.wrap(op, err)
		}
		ids, cached = s.pat.match(scope)
		ls, st, err = s.matchQuery(ctx, scope, ids)
		if err != nil {
			return nil, nil, s.wrap(op, err)
		}
	}
	if st.patterns != cached {
		// A pattern listener was created between the reload and the
		// query: the answer is complete for a Match, which may miss a
		// listener created after it began, but not at its stamp.
		return ls, nil, nil
	}
	s.mc.put(scope, matchEntry{ls: slices.Clone(ls), stamp: st})
	return ls, &st, nil
}

func (s *Store) matchQuery(ctx context.Context, scope string, ids []string) ([]moitessier.ListenerInfo, matchStamp, error) {
	var st matchStamp
	if ids == nil {
		ids = []string{}
	}
	rows, err := s.pool.Query(ctx, s.q.match, scope, ids)
	if err != nil {
		return nil, st, err
	}
	defer rows.Close()
	var ls []moitessier.ListenerInfo
	for rows.Next() {
		var (
			id, person, client *string
			typ                *int
			scopes             []string
			created, head      *int64
		)
		if err := rows.Scan(&st.patterns, &st.scope, &id, &typ, &person, &client, &scopes, &created, &head); err != nil {
			return nil, st, err
		}
		if id == nil {
			continue
		}
		ls = append(ls, moitessier.ListenerInfo{ID: *id, Type: moitessier.ListenerType(*typ), Person: *person, Client: *client, Scopes: scopes, Created: fromNS(*created), Head: moitessier.Cursor(*head)})
	}
	return ls, st, rows.Err()
}

// matchStamp is the state a Match answer was read at: the schema's pattern
// version and the scope's version.
type matchStamp struct{ patterns, scope int64 }

type matchEntry struct {
	ls    []moitessier.ListenerInfo
	stamp matchStamp
}

// matchCache keeps the newest Match answer of up to maxCachedScopes scopes.
type matchCache struct {
	mu sync.Mutex
	m  map[string]matchEntry
}

const maxCachedScopes = 10_000

func (c *matchCache) get(scope string) (matchEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[scope]
	return e, ok
}

func (c *matchCache) put(scope string, e matchEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]matchEntry)
	}
	if _, ok := c.m[scope]; !ok && len(c.m) >= maxCachedScopes {
		for k := range c.m { // drop an arbitrary entry
			delete(c.m, k)
			break
		}
	}
	c.m[scope] = e
}

func (c *matchCache) drop(scope string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, scope)
}

// reloadPatterns reloads the pattern cache unless it is at least at version
// atLeast already.
func (s *Store) reloadPatterns(ctx context.Context, atLeast int64) error {
	s.pat.mu.RLock()
	cur := s.pat.version
	s.pat.mu.RUnlock()
	if cur >= atLeast {
		return nil
	}
	rows, err := s.pool.Query(ctx, s.q.loadPatterns)
	if err != nil {
		return err
	}
	defer rows.Close()
	var (
		version int64
		byID    = map[string][]string{}
	)
	for rows.Next() {
		var id, pattern *string
		if err := rows.Scan(&version, &id, &pattern); err != nil {
			return err
		}
		if id != nil {
			byID[*id] = append(byID[*id], *pattern)
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	idx := scopeindex.New()
	for id, ps := range byID {
		idx.Add(id, ps)
	}
	s.pat.mu.Lock()
	defer s.pat.mu.Unlock()
	if version > s.pat.version {
		s.pat.idx, s.pat.version = idx, version
	}
	return nil
}
