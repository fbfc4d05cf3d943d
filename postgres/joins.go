package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/likestripes/moitessier"
)

// Joins from many callers at once share statements. A join goes out at
// once, on its caller's goroutine, when the turn is free (no other join
// statement holds it) and none waits; otherwise it queues. A statement
// that ends hands its turn to the queue: a sender sends up to
// maxJoinBatch of the joins waiting together, sorted by listener, as one
// call of join_listeners (migration 9), in one transaction, so one
// commit, and then the next that wait, a batch at a time, until none
// waits. A join sent alone that takes longer than slowJoin (it waits for
// a lock) hands its turn on then, and runs on outside the turn. On a server of two processors,
// joins ran faster from a few clients than from many, much faster with
// many joins to a commit, and fastest of all a batch at a time: two
// batches at once that create listeners on one scope take turns on its
// version's row, each for its whole transaction (see the benchmarks
// history, Joins from many callers at once go together).
//
// Each join of a batch is a subtransaction: past a quota it fails alone,
// with the *moitessier.QuotaError it would have had alone; after any other
// error in it (a listener deleted under it, a deadlock with another
// transaction) it runs again alone, under its caller's context, on a
// goroutine of its own, outside the turn, and returns what that returns;
// the others return as soon as the statement does. A batch waits at most
// joinLockTimeout for a lock: if a join would wait longer, it and the
// joins after it in the batch run again alone, rather than hold up the
// batch. If the statement fails with nothing written (the server refused
// it, or it was never sent), every join of it runs again alone (or, once
// the store is closing, fails with moitessier.ErrClosed). If it
// fails otherwise (the connection broke, or Close cancelled it), it may
// have committed, and every join of it returns the error: a join is
// idempotent, so the caller may join again, which then finds the listener
// and the subscriber stored. Joins that go together are counted against a
// quota in the order of their listeners' IDs, not of their arrival.
//
// A caller that gives up while its join waits returns at once, and its
// join is not sent. One that gives up after it was sent waits for its
// answer as long as a statement of its own would run on (cancelGrace),
// and returns it if it comes, as if it had not given up; a join its batch
// did not settle is not run again alone for it.

const (
	// maxJoinBatch is the most joins one statement carries. Each is a
	// subtransaction, and PostgreSQL keeps track of at most 64 of a
	// transaction's in shared memory before it looks them up on disk.
	maxJoinBatch = 32
	// joinLockTimeout is the longest a batch waits for a lock (its
	// lock_timeout); it is below PostgreSQL's default deadlock_timeout,
	// so a deadlock with another transaction costs the batch no more.
	joinLockTimeout = "100ms"
	// slowJoin is how long a join sent alone keeps its turn.
	slowJoin = 100 * time.Millisecond
)

// slowJoin is how long a join sent alone keeps its turn: slowJoin, or a
// test's.
func (s *Store) slowJoin() time.Duration {
	if s.cfg.slowJoin > 0 {
		return s.cfg.slowJoin
	}
	return slowJoin
}

// joins queues the joins that wait for a turn.
type joins struct {
	mu     sync.Mutex
	busy   bool // the turn is taken: by a join sent alone, or by the sender
	queue  []*joinCall
	closed bool
	wg     sync.WaitGroup // the sender, and the joins run again alone

	// batched counts the joins sent in statements of two or more.
	batched atomic.Int64
}

// joinCall is one Join, and, once done is closed, what it returns.
type joinCall struct {
	ctx context.Context // its caller's
	l   moitessier.ListenerInfo
	sub moitessier.Subscriber
	q   moitessier.Quota

	out  joined
	err  error
	done chan struct{}
	// Guarded by joins.mu: sent, a batch took it; dropped, its caller
	// stopped waiting before that.
	sent, dropped bool
}

// join runs c: at once if the turn is free, else when it is.
func (j *joins) join(ctx context.Context, s *Store, c *joinCall) (moitessier.ListenerInfo, moitessier.Subscriber, bool, error) {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return moitessier.ListenerInfo{}, moitessier.Subscriber{}, false, fmt.Errorf("postgres: join: %w", moitessier.ErrClosed)
	}
	if !j.busy && len(j.queue) == 0 {
		j.busy = true
		j.mu.Unlock()
		// One that takes longer than slowJoin (it waits for a lock)
		// hands its turn on then, and runs on outside the turn.
		var once sync.Once
		done := func() { once.Do(func() { j.next(s) }) }
		slow := time.AfterFunc(s.slowJoin(), done)
		out, err := s.join(ctx, s.pool, c)
		slow.Stop()
		done()
		return out.info, out.stored, out.created, err
	}
	c.ctx, c.done = ctx, make(chan struct{})
	j.queue = append(j.queue, c)
	j.mu.Unlock()
	select {
	case <-c.done:
	case <-ctx.Done():
		j.mu.Lock()
		sent := c.sent
		c.dropped = !sent
		j.mu.Unlock()
		if !sent {
			return moitessier.ListenerInfo{}, moitessier.Subscriber{}, false, s.joinError(c, ctx.Err())
		}
		grace := time.NewTimer(cancelGrace)
		defer grace.Stop()
		select {
		case <-c.done:
		case <-grace.C:
			return moitessier.ListenerInfo{}, moitessier.Subscriber{}, false, s.joinError(c, ctx.Err())
		}
	}
	return c.out.info, c.out.stored, c.out.created, c.err
}

// next hands the turn, which a join sent alone held, to a sender of the
// joins waiting, if any.
func (j *joins) next(s *Store) {
	j.mu.Lock()
	defer j.mu.Unlock()
	b := j.take()
	if len(b) == 0 {
		j.busy = false
		return
	}
	j.wg.Add(1)
	go func() {
		defer j.wg.Done()
		for len(b) > 0 {
			s.joinTogether(s.cmb.ctx, b)
			j.mu.Lock()
			if b = j.take(); len(b) == 0 {
				j.busy = false
			}
			j.mu.Unlock()
		}
	}()
}

// take removes from the queue, and returns, up to maxJoinBatch joins whose
// callers still wait. j.mu is held.
func (j *joins) take() []*joinCall {
	if j.closed {
		return nil
	}
	var b []*joinCall
	n := 0
	for ; n < len(j.queue) && len(b) < maxJoinBatch; n++ {
		if c := j.queue[n]; !c.dropped {
			c.sent = true
			b = append(b, c)
		}
	}
	j.queue = slices.Delete(j.queue, 0, n)
	// In one order, that of the sweep's locks, so that two batches lock
	// the listeners (and subscribers) they share in the same order.
	slices.SortStableFunc(b, func(x, y *joinCall) int {
		return cmp.Or(strings.Compare(x.l.ID, y.l.ID), strings.Compare(x.sub.Person, y.sub.Person), strings.Compare(x.sub.Client, y.sub.Client))
	})
	return b
}

// close takes no more joins and fails those waiting with ErrClosed; the
// store then cancels the batches under way, and waits for them (wait).
func (j *joins) close(s *Store) {
	j.mu.Lock()
	j.closed = true
	var fail []*joinCall
	for _, c := range j.queue {
		if !c.dropped { // read under j.mu: a caller that gives up sets it
			fail = append(fail, c)
		}
	}
	j.queue = nil
	j.mu.Unlock()
	for _, c := range fail {
		s.joinClosed(c)
	}
}

// wait waits for the sender and the joins run again alone to return.
func (j *joins) wait() { j.wg.Wait() }

// joinTogether runs the joins of b, under ctx, in one statement, and
// settles each: at once, those the statement settled;
// the others run again alone, each on a goroutine of its own, so that one
// that waits for a lock holds up no other.
func (s *Store) joinTogether(ctx context.Context, b []*joinCall) {
	if s.cmb.ctx.Err() != nil {
		for _, c := range b {
			s.joinClosed(c)
		}
		return
	}
	statuses, outs, err := s.joinBatch(ctx, b)
	var (
		again []*joinCall
		pe    *pgconn.PgError
	)
	switch {
	case errors.As(err, &pe) || pgconn.SafeToRetry(err):
		// The server refused the statement (or the connection), or
		// it was never sent: nothing was written.
		again = b
	case err != nil:
		for _, c := range b {
			c.err = s.joinError(c, err)
			close(c.done)
		}
		return
	default:
		if len(b) > 1 {
			s.joins.batched.Add(int64(len(b)))
		}
		for k, c := range b {
			switch st := statuses[k]; {
			case st == "ok":
				c.out = outs[k]
			case strings.HasPrefix(st, "quota "):
				c.err = s.joinError(c, &pgconn.PgError{Code: quotaCode, Message: strings.TrimPrefix(st, "quota ")})
			default:
				again = append(again, c)
				continue
			}
			close(c.done)
		}
	}
	for _, c := range again {
		s.joins.wg.Add(1) // this goroutine is counted, so Close's wait has not returned
		go func() {
			defer s.joins.wg.Done()
			s.joinAlone(c)
		}()
	}
}

// joinAlone runs c alone, under its caller's context, also cancelled when
// the store closes, and settles it.
func (s *Store) joinAlone(c *joinCall) {
	if s.cmb.ctx.Err() != nil {
		s.joinClosed(c)
		return
	}
	ctx, cancel := s.cmb.bound(c.ctx)
	c.out, c.err = s.join(ctx, s.pool, c)
	cancel()
	close(c.done)
}

// joinClosed settles c, unsent, with ErrClosed.
func (s *Store) joinClosed(c *joinCall) {
	c.err = fmt.Errorf("postgres: join: listener %s: store closed before the join was sent: %w", c.l.ID, moitessier.ErrClosed)
	close(c.done)
}

// joinBatch runs the joins of b in one call of join_listeners and returns
// each one's status and, where it is "ok", its result.
func (s *Store) joinBatch(ctx context.Context, b []*joinCall) ([]string, []joined, error) {
	n := len(b)
	var (
		ids, persons, clients, scopes, subPersons, subClients = make([]string, n), make([]string, n), make([]string, n), make([]string, 0, n), make([]string, n), make([]string, n)
		types, nscopes                                        = make([]int32, n), make([]int32, n)
		wild, async                                           = make([]bool, 0, n), make([]bool, n)
		created, sjoined, slease, scursor                     = make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		qListeners, qType, qSubs, lkeys, skeys, tags          = make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
	)
	for k, c := range b {
		a := s.joinArgs(c)
		ids[k], types[k], persons[k], clients[k] = c.l.ID, int32(c.l.Type), c.l.Person, c.l.Client
		scopes, wild, nscopes[k] = append(scopes, c.l.Scopes...), append(wild, a.wild...), int32(len(c.l.Scopes))
		created[k], subPersons[k], subClients[k] = a.lcreated, c.sub.Person, c.sub.Client
		sjoined[k], slease[k], scursor[k] = a.sjoined, a.slease, a.scursor
		qListeners[k], qType[k], qSubs[k], lkeys[k], skeys[k], async[k] = a.qListeners, a.qType, a.qSubs, a.lkey, a.skey, a.async
		tags[k] = a.tag
	}
	rows, err := s.pool.Query(ctx, s.q.joinBatch, ids, types, persons, clients, scopes, wild, nscopes, created,
		subPersons, subClients, sjoined, slease, scursor, qListeners, qType, qSubs, lkeys, skeys, async, joinLockTimeout, tags)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	statuses, outs := make([]string, n), make([]joined, n)
	seen := 0
	for rows.Next() {
		var (
			i      int
			status string
			r      joinedRow
		)
		if err := rows.Scan(&i, &status, &r.created, &r.typ, &r.person, &r.client, &r.scopes, &r.lcreated, &r.head, &r.cur, &r.joined, &r.lease); err != nil {
			return nil, nil, err
		}
		if i < 1 || i > n || statuses[i-1] != "" {
			return nil, nil, fmt.Errorf("join_listeners returned row %d of %d twice or out of range", i, n)
		}
		statuses[i-1], outs[i-1] = status, r.result(b[i-1])
		seen++
	}
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	if seen != n {
		return nil, nil, fmt.Errorf("join_listeners returned %d rows for %d joins", seen, n)
	}
	for k, o := range outs {
		if statuses[k] == "ok" && o.created {
			// In the joins' order, the statement's: two that create
			// listeners on one scope change its version in turn.
			s.seed(ctx, o.info, tags[k])
		}
	}
	return statuses, outs, nil
}
