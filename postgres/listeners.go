package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/likestripes/moitessier"
)

// Join stores l unless it exists and adds sub as its subscriber unless it
// exists; see moitessier.Store. It is one statement, one round trip: a
// call of the function join_listener (migration 5), which writes the
// listener, its scopes and the subscriber and reads them back. A join that
// creates the listener or the subscriber checks the quota in its
// transaction, under a transaction-level advisory lock of the person taken
// after the insert: every process's joins for one person count in turn,
// each seeing the ones committed before, and a join that creates nothing
// (a lease renewal) takes no lock and counts nothing. A join that creates
// a listener with concrete scopes commits asynchronously unless
// Config.DurableJoins is set. The store runs one join statement at a
// time; the joins that come meanwhile wait, and go together, in one
// statement and one transaction (see joins.go). A join that creates a
// listener leaves this process its scopes' Match answers, so that the
// first dispatch after it need not match (see the package doc, Matching
// across processes).
func (s *Store) Join(ctx context.Context, l moitessier.ListenerInfo, sub moitessier.Subscriber, q moitessier.Quota) (moitessier.ListenerInfo, moitessier.Subscriber, bool, error) {
	if err := s.check("join"); err != nil {
		return moitessier.ListenerInfo{}, moitessier.Subscriber{}, false, err
	}
	if err := checkListenerID(l.ID); err != nil {
		return moitessier.ListenerInfo{}, moitessier.Subscriber{}, false, fmt.Errorf("postgres: join: %w", err)
	}
	if l.Scopes == nil {
		// As an empty array, alone as in a batch (where it is a slice
		// of all the batch's scopes), not as NULL.
		l.Scopes = []string{}
	}
	return s.joins.join(ctx, s, &joinCall{l: l, sub: sub, q: q})
}

// rowQueryer runs a statement that returns one row: the store's pool, or a
// transaction.
type rowQueryer interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// joinArgs are join_listener's arguments for one join, and whether the
// join may commit asynchronously should it create its listener.
type joinArgs struct {
	wild                               []bool
	lcreated, sjoined, slease, scursor int64
	qListeners, qType, qSubs           int64
	lkey, skey                         int64
	async                              bool
	// tag is the tag of the listener's scopes, should the join create it
	// (see migration 10 and seed): random, never 0.
	tag int64
}

// joinArgs returns c's joinArgs.
func (s *Store) joinArgs(c *joinCall) joinArgs {
	a := joinArgs{wild: make([]bool, len(c.l.Scopes))}
	for i, p := range c.l.Scopes {
		a.wild[i] = moitessier.IsPattern(p)
	}
	// A join that creates a listener may commit asynchronously (see
	// Config.DurableJoins), unless the listener has a pattern: that raises
	// the pattern version, which hubs compare by order (see
	// reloadPatterns), and which must not come back after a crash.
	a.async = !s.cfg.DurableJoins && !slices.Contains(a.wild, true)
	_, typeLimit := c.q.OfType(c.l.Type)
	a.lcreated, a.sjoined, a.slease, a.scursor = toNS(c.l.Created), toNS(c.sub.Joined), toNS(c.sub.LeaseExpires), toSeq(c.sub.Cursor)
	a.qListeners, a.qType, a.qSubs = quotaLimit(c.q.Listeners), quotaLimit(typeLimit), quotaLimit(c.q.Subscriptions)
	a.lkey, a.skey = advisoryKey("quota\x00"+c.l.Person, s.cfg.Schema), advisoryKey("quota\x00"+c.sub.Person, s.cfg.Schema)
	for a.tag == 0 {
		a.tag = int64(rand.Uint64())
	}
	return a
}

// joined is what a join returns: the listener and the subscriber as
// stored, and whether the join created the listener.
type joined struct {
	info    moitessier.ListenerInfo
	stored  moitessier.Subscriber
	created bool
}

// joinedRow holds a joined's columns as join_listener returns them.
type joinedRow struct {
	created                            bool
	typ                                int
	person, client                     string
	scopes                             []string
	lcreated, head, cur, joined, lease int64
}

// result is r as what c returns.
func (r *joinedRow) result(c *joinCall) joined {
	return joined{
		info: moitessier.ListenerInfo{ID: c.l.ID, Type: moitessier.ListenerType(r.typ), Person: r.person, Client: r.client,
			Scopes: r.scopes, Created: fromNS(r.lcreated), Head: moitessier.Cursor(r.head)},
		stored: moitessier.Subscriber{Person: c.sub.Person, Client: c.sub.Client, Cursor: moitessier.Cursor(r.cur),
			Joined: fromNS(r.joined), LeaseExpires: fromNS(r.lease)},
		created: r.created,
	}
}

// join runs one join on db, alone, retrying it while the listener it
// found is deleted under it.
func (s *Store) join(ctx context.Context, db rowQueryer, c *joinCall) (joined, error) {
	a := s.joinArgs(c)
	var out joined
	err := retry(ctx, func() error {
		var r joinedRow
		err := db.QueryRow(ctx, s.q.join,
			c.l.ID, int(c.l.Type), c.l.Person, c.l.Client, c.l.Scopes, a.wild, a.lcreated,
			c.sub.Person, c.sub.Client, a.sjoined, a.slease, a.scursor,
			a.qListeners, a.qType, a.qSubs, a.lkey, a.skey, a.async, a.tag,
		).Scan(&r.created, &r.typ, &r.person, &r.client, &r.scopes, &r.lcreated, &r.head, &r.cur, &r.joined, &r.lease, nil)
		if errors.Is(err, pgx.ErrNoRows) {
			// The listener was deleted after the insert found it:
			// run again, creating it anew.
			return &retryError{}
		}
		if err != nil {
			return err
		}
		out = r.result(c)
		if out.created {
			s.seed(ctx, out.info, a.tag)
		}
		return nil
	})
	if err != nil {
		return joined{}, s.joinError(c, err)
	}
	return out, nil
}

// joinError is the error a join returns for err: a *moitessier.QuotaError
// for join_listener's MQ001.
func (s *Store) joinError(c *joinCall, err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == quotaCode {
		kind, typeLimit := c.q.OfType(c.l.Type)
		switch pe.Message {
		case "listeners":
			err = &moitessier.QuotaError{Person: c.l.Person, Kind: moitessier.QuotaListeners, Limit: c.q.Listeners}
		case "type":
			err = &moitessier.QuotaError{Person: c.l.Person, Kind: kind, Limit: typeLimit}
		case "subscriptions":
			err = &moitessier.QuotaError{Person: c.sub.Person, Kind: moitessier.QuotaSubscriptions, Limit: c.q.Subscriptions}
		}
	}
	return s.wrap("join", fmt.Errorf("listener %s: %w", c.l.ID, err))
}

// quotaCode is the SQLSTATE join_listener raises past a quota, with the
// message naming the limit: "listeners", "type" (the limit of the
// listener's type) or "subscriptions".
const quotaCode = "MQ001"

// quotaLimit is a limit as join_listener takes it: 0 for none, and at
// most one less than the largest bigint, which it counts up to plus one.
func quotaLimit(limit int) int64 {
	return min(int64(max(limit, 0)), math.MaxInt64-1)
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
// messages in the same transaction: one statement, a call of the function
// of migration 11 (leave_listener), one round trip. It returns ErrNotFound
// if there is no such subscriber. A deletion takes the listener out of this
// process's cached Match answers of its scopes, as a join adds it (see the
// package documentation).
func (s *Store) Leave(ctx context.Context, listenerID, person, client string) (bool, error) {
	return s.leaveOf(ctx, listenerID, nil, person, client)
}

var _ moitessier.IncarnationLeaver = (*Store)(nil)

// LeaveOf implements moitessier.IncarnationLeaver: Leave, in a statement
// that leaves only while the listener is the incarnation created.
func (s *Store) LeaveOf(ctx context.Context, listenerID string, created time.Time, person, client string) (bool, error) {
	return s.leaveOf(ctx, listenerID, &created, person, client)
}

// leaveOf is Leave, or LeaveOf if created is not nil.
func (s *Store) leaveOf(ctx context.Context, listenerID string, created *time.Time, person, client string) (bool, error) {
	d, err := s.leave(ctx, listenerID, created, person, client)
	if err != nil {
		return false, err
	}
	if d.deleted {
		s.unseed(d.info, d.tag, d.wild)
	}
	return d.deleted, nil
}

// departure is what leave_listener answered: whether it deleted the
// listener and, if so, the listener's ID, scopes and creation, whether a
// scope is a pattern, and the tag of its concrete scopes' rows.
type departure struct {
	deleted, wild bool
	info          moitessier.ListenerInfo
	tag           int64
}

// leave is leaveOf but for the update of the cached answers.
func (s *Store) leave(ctx context.Context, listenerID string, of *time.Time, person, client string) (departure, error) {
	const op = "leave"
	if err := s.check(op); err != nil {
		return departure{}, err
	}
	var (
		d       = departure{info: moitessier.ListenerInfo{ID: listenerID}}
		found   bool
		created int64
		ofNS    *int64
	)
	if of != nil {
		ns := toNS(*of)
		ofNS = &ns
	}
	err := retry(ctx, func() error {
		return s.pool.QueryRow(ctx, s.q.leave, listenerID, person, client, ofNS).Scan(&found, &d.deleted, &d.info.Scopes, &created, &d.wild, &d.tag)
	})
	if err != nil {
		return departure{}, s.wrap(op, err)
	}
	if !found {
		what := ""
		if of != nil {
			what = " (of that incarnation)"
		}
		return departure{}, fmt.Errorf("postgres: leave: subscriber %q/%q of %s%s: %w", person, client, listenerID, what, moitessier.ErrNotFound)
	}
	d.info.Created = fromNS(created)
	return d, nil
}
