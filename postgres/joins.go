package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/likestripes/moitessier"
)

// Joins from many callers at once share statements. A join goes out at
// once, on its caller's goroutine, while fewer than maxJoinStatements join
// statements are under way and none waits; otherwise it queues. A
// statement that ends hands its turn to the queue: up to maxJoinBatch of
// the joins waiting go out together, as one call of join_listeners
// (migration 9), in one transaction, so one commit. A server on few
// processors ran joins faster from a few clients than from many, and much
// faster with many joins to a commit (see the benchmarks history, Joins
// from many callers at once).
//
// Each join of a batch is a subtransaction: past a quota it fails alone,
// with the *moitessier.QuotaError it would have had alone; after any other
// error in it (a listener deleted under it, a deadlock with another
// transaction) it runs again alone, and returns what that returns. If the
// server refuses the statement, every join of it runs again alone. If the
// statement fails without the server's answer (the connection broke, or
// Close cancelled it), it may have committed, and every join of it
// returns the error: a join is idempotent, so the caller may join again,
// which then finds the listener and the subscriber stored.
//
// A caller that gives up while its join waits returns at once, and its
// join is not sent; one that gives up after its join was sent returns at
// once too, and the join runs on, as a statement of the caller's own would
// for the grace the store's pool gives it.

const (
	// maxJoinStatements is the most join statements the store runs at
	// once.
	maxJoinStatements = 4
	// maxJoinBatch is the most joins one statement carries. Each is a
	// subtransaction, and PostgreSQL keeps track of at most 64 of a
	// transaction's in shared memory before it looks them up on disk.
	maxJoinBatch = 32
)

// joins queues the joins that wait for a turn.
type joins struct {
	mu      sync.Mutex
	running int // join statements under way, alone or together
	queue   []*joinCall
	closed  bool
	wg      sync.WaitGroup // the goroutines that send batches

	// batched counts the joins sent in statements of two or more.
	batched atomic.Int64
}

// joinCall is one Join, and, once done is closed, what it returns.
type joinCall struct {
	l   moitessier.ListenerInfo
	sub moitessier.Subscriber
	q   moitessier.Quota

	out  joined
	err  error
	done chan struct{}
	// dropped, guarded by joins.mu: its caller stopped waiting before it
	// was sent.
	dropped bool
}

// join runs c: at once if a turn is free, else when one is.
func (j *joins) join(ctx context.Context, s *Store, c *joinCall) (moitessier.ListenerInfo, moitessier.Subscriber, bool, error) {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return moitessier.ListenerInfo{}, moitessier.Subscriber{}, false, fmt.Errorf("postgres: join: %w", moitessier.ErrClosed)
	}
	if j.running < maxJoinStatements && len(j.queue) == 0 {
		j.running++
		j.mu.Unlock()
		out, err := s.join(ctx, s.pool, c)
		j.next(s)
		return out.info, out.stored, out.created, err
	}
	c.done = make(chan struct{})
	j.queue = append(j.queue, c)
	j.mu.Unlock()
	select {
	case <-c.done:
	case <-ctx.Done():
		j.mu.Lock()
		c.dropped = true
		j.mu.Unlock()
		select {
		case <-c.done: // it was sent, and is done
		default:
			return moitessier.ListenerInfo{}, moitessier.Subscriber{}, false, s.joinError(c, ctx.Err())
		}
	}
	return c.out.info, c.out.stored, c.out.created, c.err
}

// next hands a turn that ended to the joins waiting, if any.
func (j *joins) next(s *Store) {
	j.mu.Lock()
	defer j.mu.Unlock()
	b := j.take()
	if len(b) == 0 {
		j.running--
		return
	}
	j.wg.Add(1)
	go func() {
		defer j.wg.Done()
		for len(b) > 0 {
			s.joinTogether(s.cmb.ctx, b)
			j.mu.Lock()
			if b = j.take(); len(b) == 0 {
				j.running--
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
			b = append(b, c)
		}
	}
	j.queue = slices.Delete(j.queue, 0, n)
	return b
}

// close fails the joins waiting with ErrClosed and waits for the batches
// under way, which the store's closing cancels.
func (j *joins) close() {
	j.mu.Lock()
	j.closed = true
	q := j.queue
	j.queue = nil
	j.mu.Unlock()
	for _, c := range q {
		c.err = fmt.Errorf("postgres: join: listener %s: store closed before the join was sent: %w", c.l.ID, moitessier.ErrClosed)
		close(c.done)
	}
	j.wg.Wait()
}

// joinTogether runs the joins of b, under ctx, in one statement if there
// are several, and settles each.
func (s *Store) joinTogether(ctx context.Context, b []*joinCall) {
	alone := func(c *joinCall) {
		c.out, c.err = s.join(ctx, s.pool, c)
		close(c.done)
	}
	if len(b) == 1 {
		alone(b[0])
		return
	}
	statuses, outs, err := s.joinBatch(ctx, b)
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe):
		// The server refused the statement: it wrote nothing.
		for _, c := range b {
			alone(c)
		}
		return
	case err != nil:
		for _, c := range b {
			c.err = s.joinError(c, err)
			close(c.done)
		}
		return
	}
	s.joins.batched.Add(int64(len(b)))
	for k, c := range b {
		switch st := statuses[k]; {
		case st == "ok":
			c.out = outs[k]
		case strings.HasPrefix(st, "quota "):
			c.err = s.joinError(c, &pgconn.PgError{Code: quotaCode, Message: strings.TrimPrefix(st, "quota ")})
		default:
			alone(c)
			continue
		}
		close(c.done)
	}
}

// joinBatch runs the joins of b in one call of join_listeners and returns
// each one's status and, where it is "ok", its result.
func (s *Store) joinBatch(ctx context.Context, b []*joinCall) ([]string, []joined, error) {
	n := len(b)
	var (
		ids, persons, clients, scopes, subPersons, subClients = make([]string, n), make([]string, n), make([]string, n), []string(nil), make([]string, n), make([]string, n)
		types, nscopes                                        = make([]int32, n), make([]int32, n)
		wild, async                                           = []bool(nil), make([]bool, n)
		created, sjoined, slease, scursor                     = make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		qListeners, qType, qSubs, lkeys, skeys                = make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
	)
	for k, c := range b {
		a := s.joinArgs(c)
		ids[k], types[k], persons[k], clients[k] = c.l.ID, int32(c.l.Type), c.l.Person, c.l.Client
		scopes, wild, nscopes[k] = append(scopes, c.l.Scopes...), append(wild, a.wild...), int32(len(c.l.Scopes))
		created[k], subPersons[k], subClients[k] = a.lcreated, c.sub.Person, c.sub.Client
		sjoined[k], slease[k], scursor[k] = a.sjoined, a.slease, a.scursor
		qListeners[k], qType[k], qSubs[k], lkeys[k], skeys[k], async[k] = a.qListeners, a.qType, a.qSubs, a.lkey, a.skey, a.async
	}
	rows, err := s.pool.Query(ctx, s.q.joinBatch, ids, types, persons, clients, scopes, wild, nscopes, created,
		subPersons, subClients, sjoined, slease, scursor, qListeners, qType, qSubs, lkeys, skeys, async)
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
	return statuses, outs, nil
}
