package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/likestripes/moitessier"
)

// Appends are combined, and appends to different listeners run in
// parallel. A batch goes out at once unless a statement already under way
// writes to one of its listeners (it would only wait on that statement's
// row lock) or Config.Writers statements are under way; it then queues.
// One that goes out at once while nothing queues is sent by its caller, on
// its own goroutine (sendOwn), if the store opened its pool: handing it to
// a writer and being woken with the answer cost a single dispatcher two
// wake-ups a statement. Its caller then has the grace every statement of
// its own has on such a pool (see graceHandler), where one sent by a
// writer is answered ErrOutcomeUnknown as soon as its caller gives up, and
// runs on. (On a pool of the caller's, Config.Pool, writers send every
// batch, as before: its connections have no grace, and a caller giving up
// during its own statement would cost the pool a connection.) A statement
// that ends hands its turn on: its writer (a writer, for a caller that
// sent its own) sends, in its next one, every queued batch (up to
// Config.MaxCombine) whose listeners no other running statement writes
// to, committed once. So one
// listener takes many appends per commit flush, and one transaction that
// holds a listener's row lock (DispatchTx) stalls only the appends to that
// listener, not the rest of the process's.
//
// Combined batches commit together. If the statement fails with an answer
// from the server (so it wrote nothing), each batch is tried again alone,
// so one batch's failure is not another's; if it wrote nothing because
// some batches' match stamps were stale, those fail with
// moitessier.ErrStale and the others are sent again together. If it failed
// without such an answer (the connection broke, or Close cancelled it), it
// may have committed: every batch of it fails with
// moitessier.ErrOutcomeUnknown and none is sent again.

type combiner struct {
	mu      sync.Mutex
	queue   []*pending
	running int
	busy    map[string]int // listeners of statements under way, with their count
	closed  bool

	// idle counts the writers parked for work; kick hands a parked writer
	// a turn (running already counts it). A writer, once started, parks
	// rather than ends when the queue is empty, so that its goroutine (and
	// the stack that the driver's calls grew) serves the next statements:
	// a goroutine per statement paid for growing its stack every time.
	idle int
	kick chan struct{}

	ctx  context.Context // ends when the store closes; writers run under it
	stop context.CancelFunc
	wg   sync.WaitGroup
}

// pending is one batch waiting for, or in, a statement.
type pending struct {
	b    *moitessier.Batch
	ids  []string // the batch's listeners, each once
	self string   // watchOther's self for it (see watchers.go)
	msgs []moitessier.Message
	err  error
	done chan struct{}
	// Guarded by combiner.mu: sent, a writer (or its caller) took the
	// batch; dropped, the caller stopped waiting before that; abandoned,
	// after that, before the writer settled it; settled, msgs and err are
	// set (done is about to be closed).
	sent, dropped, abandoned, settled bool
	// notifyLate: its listeners' heads are to be notified after its
	// statement (see settle); only its writer uses it.
	notifyLate bool
}

func (c *combiner) init(writers int) {
	c.busy = map[string]int{}
	c.kick = make(chan struct{}, writers)
	c.ctx, c.stop = context.WithCancel(context.Background())
}

// bound returns ctx, also cancelled when the store closes, so that Close
// ends the appends under way (a keyed append's transaction, say) rather
// than wait for them.
func (c *combiner) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(c.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

// close fails the queued batches with ErrClosed (they were never sent),
// cancels the statements under way and waits for their writers to return.
func (c *combiner) close() {
	c.mu.Lock()
	c.closed = true
	var fail []*pending
	for _, p := range c.queue {
		if !p.dropped { // read under c.mu: a caller that stops waiting sets it
			fail = append(fail, p)
		}
	}
	c.queue = nil
	c.mu.Unlock()
	for _, p := range fail {
		p.err = fmt.Errorf("store closed before the batch was sent: %w", moitessier.ErrClosed)
		close(p.done)
	}
	c.stop()
	c.wg.Wait()
}

// combine appends one batch without an idempotency key, possibly together
// with batches of concurrent calls.
func (s *Store) combine(ctx context.Context, b *moitessier.Batch) ([]moitessier.Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.cfg.MaxCombine <= 1 {
		return s.sendAlone(ctx, b, s.watchers.selfFor(ctx), nil)
	}
	p := &pending{b: b, ids: batchListeners(b), self: s.watchers.selfFor(ctx)}
	c := &s.cmb
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, moitessier.ErrClosed
	}
	// A batch whose listeners a running statement writes to waits for that
	// statement's end, after which a writer takes it.
	start := c.running < s.cfg.Writers && !c.overlapsBusy(p.ids)
	if start && len(c.queue) == 0 && s.ownPool {
		// Nothing else waits: the caller sends its batch itself, alone,
		// rather than hand it to a writer and wait to be woken.
		c.running++
		p.sent = true
		for _, id := range p.ids {
			c.busy[id]++
		}
		c.mu.Unlock()
		return s.sendOwn(ctx, p)
	}
	p.done = make(chan struct{})
	c.queue = append(c.queue, p)
	spawn := false
	if start {
		c.running++
		spawn = c.handOff()
	}
	c.mu.Unlock()
	if start {
		s.startWriter(spawn)
	}
	select {
	case <-p.done:
		return p.msgs, p.err
	case <-ctx.Done():
		c.mu.Lock()
		sent, settled := p.sent, p.settled
		switch {
		case !sent:
			p.dropped = true
		case !settled:
			// The writer notifies this hub's Watch of it if it commits
			// (settle): the hub will not publish it.
			p.abandoned = true
		}
		c.mu.Unlock()
		if !sent {
			return nil, ctx.Err() // never sent: nothing is stored
		}
		if settled {
			<-p.done
			return p.msgs, p.err
		}
		// A writer is sending it: it may commit whatever becomes of ctx.
		return nil, fmt.Errorf("%w: %v while the batch was being written", moitessier.ErrOutcomeUnknown, ctx.Err())
	}
}

// sendOwn sends p, which the caller took a turn for and marked busy,
// alone (sendAlone), and then gives the turn to a writer if batches queued
// meanwhile, or gives it up.
func (s *Store) sendOwn(ctx context.Context, p *pending) ([]moitessier.Message, error) {
	msgs, err := s.sendAlone(ctx, p.b, p.self, p.ids)
	c := &s.cmb
	c.mu.Lock()
	c.release([]*pending{p})
	pass := len(c.queue) > 0 && !c.closed
	spawn := false
	if pass {
		spawn = c.handOff() // the turn goes on: running still counts it
	} else {
		c.running--
	}
	c.mu.Unlock()
	if pass {
		s.startWriter(spawn)
	}
	return msgs, err
}

// handOff gives a turn that running already counts to a writer: a parked
// one, or, if none is parked, a new one, which it reports (spawn) and
// counts in wg. c.mu is held; startWriter, called after it is released,
// starts the writer.
func (c *combiner) handOff() (spawn bool) {
	if c.idle > 0 {
		c.idle--
		return false
	}
	c.wg.Add(1)
	return true
}

// startWriter starts the writer handOff chose: a new goroutine (spawn),
// or a parked writer's kick, which never blocks: kick has room for every
// writer.
func (s *Store) startWriter(spawn bool) {
	if spawn {
		go s.writer()
		return
	}
	s.cmb.kick <- struct{}{}
}

// sendAlone appends b in a statement of its own on the caller's goroutine,
// under ctx (bound to the store's): a caller that gives up while it runs
// gets its answer if it comes within cancelGrace, and otherwise
// ErrOutcomeUnknown (see graceHandler). ids are b's listeners, or nil.
func (s *Store) sendAlone(ctx context.Context, b *moitessier.Batch, self string, ids []string) ([]moitessier.Message, error) {
	ctx, cancel := s.cmb.bound(ctx)
	defer cancel()
	var msgs []moitessier.Message
	err := outcome(retry(ctx, func() error {
		return s.onConn(ctx, func(q queryer) error {
			var err error
			msgs, err = s.appendEntries(ctx, q, b, self)
			return err
		})
	}))
	if isWatch(self) && errors.Is(err, moitessier.ErrOutcomeUnknown) {
		// It may commit yet, and the hub will not publish it.
		if ids == nil {
			ids = batchListeners(b)
		}
		s.notifyListenersLater(ids)
	}
	return msgs, err
}

// batchListeners returns the listeners of a batch's entries, each once, in
// the order of their first entries.
func batchListeners(b *moitessier.Batch) []string {
	ids := make([]string, 0, len(b.Entries))
	if len(b.Entries) <= 16 {
		for _, e := range b.Entries {
			if !slices.Contains(ids, e.Listener) {
				ids = append(ids, e.Listener)
			}
		}
		return ids
	}
	seen := make(map[string]struct{}, len(b.Entries))
	for _, e := range b.Entries {
		if _, ok := seen[e.Listener]; !ok {
			seen[e.Listener] = struct{}{}
			ids = append(ids, e.Listener)
		}
	}
	return ids
}

func (c *combiner) overlapsBusy(ids []string) bool {
	for _, id := range ids {
		if c.busy[id] > 0 {
			return true
		}
	}
	return false
}

// take removes from the queue, and returns, the next group to send: queued
// batches in order, skipping those that share a listener with a statement
// under way or with a batch skipped before them (so the batches of one
// listener keep their order). It marks the group's listeners busy.
func (s *Store) take() []*pending {
	c := &s.cmb
	var (
		group    []*pending
		entries  int
		mine     = map[string]bool{}
		reserved map[string]bool
	)
	kept := c.queue[:0]
	for i, p := range c.queue {
		if p.dropped {
			continue
		}
		full := len(group) >= s.cfg.MaxCombine || len(group) > 0 && entries+len(p.b.Entries) > maxCombinedEntries
		blocked := full
		for _, id := range p.ids {
			if !blocked && (reserved[id] || c.busy[id] > 0 && !mine[id]) {
				blocked = true
			}
		}
		if blocked {
			if full {
				kept = append(kept, c.queue[i:]...)
				break
			}
			if reserved == nil {
				reserved = map[string]bool{}
			}
			for _, id := range p.ids {
				reserved[id] = true
			}
			kept = append(kept, p)
			continue
		}
		p.sent = true
		group = append(group, p)
		entries += len(p.b.Entries)
		for _, id := range p.ids {
			if !mine[id] {
				mine[id] = true
				c.busy[id]++
			}
		}
	}
	clear(c.queue[len(kept):])
	c.queue = kept
	return group
}

// release marks a sent group's listeners free again.
func (c *combiner) release(group []*pending) {
	seen := map[string]bool{}
	for _, p := range group {
		for _, id := range p.ids {
			if !seen[id] {
				seen[id] = true
				if c.busy[id]--; c.busy[id] <= 0 {
					delete(c.busy, id)
				}
			}
		}
	}
}

// writer runs a writer's turns (writeGroups) until the store closes,
// parked between them.
func (s *Store) writer() {
	c := &s.cmb
	defer c.wg.Done()
	for s.writeGroups() {
		select {
		case <-c.kick:
		case <-c.ctx.Done():
			// Close fails whatever is queued; a kick sent meanwhile
			// has nothing left to send.
			return
		}
	}
}

// writeGroups sends queued batches, a group per statement, until none is
// left that it may send; it then gives up its turn (running) and, unless
// the store is closed, counts its writer parked (idle) in the same step,
// so that no append in between finds neither a turn nor a parked writer
// and starts one more. parked reports whether it did.
func (s *Store) writeGroups() (parked bool) {
	c := &s.cmb
	var last []*pending
	for {
		c.mu.Lock()
		if last != nil {
			c.release(last)
		}
		var group []*pending
		if !c.closed {
			group = s.take()
		}
		if len(group) == 0 {
			c.running--
			if !c.closed {
				c.idle++
				parked = true
			}
			c.mu.Unlock()
			return parked
		}
		c.mu.Unlock()
		s.writeGroup(c.ctx, group)
		// After the whole group, not in writeGroup, which calls itself for
		// the batches it sends again: each is notified once.
		s.notifyLate(c.ctx, group)
		last = group
	}
}

// maxCombinedEntries bounds the entries of one combined statement (a batch
// larger than that is sent alone).
const maxCombinedEntries = 10000

// notifyLate sends one notification for the batches of a group written by
// writeGroup that settle said need one, on a goroutine of the writers' (so
// that the listeners the group holds are freed at once); the writer's own
// count keeps the WaitGroup above zero, so close cannot be waiting yet.
func (s *Store) notifyLate(ctx context.Context, group []*pending) {
	var ids []string
	for _, p := range group {
		if p.notifyLate {
			ids = append(ids, p.ids...)
		}
	}
	if len(ids) > 0 {
		c := &s.cmb
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			s.notifyListeners(ctx, ids)
		}()
	}
}

func (s *Store) writeGroup(ctx context.Context, group []*pending) {
	bs := make([]*moitessier.Batch, len(group))
	self := group[0].self
	for i, p := range group {
		bs[i] = p.b
		if p.self != self {
			self = selfNone
		}
	}
	var out [][]moitessier.Message
	err := retry(ctx, func() error {
		return s.onConn(ctx, func(q queryer) error {
			var err error
			out, err = s.appendBatches(ctx, q, bs, self)
			return err
		})
	})
	var se *staleError
	if errors.As(err, &se) && len(group) > 1 {
		// Nothing was written: fail the stale batches, send the rest again.
		rest := make([]*pending, 0, len(group))
		for i, p := range group {
			if slices.Contains(se.batches, i) {
				s.settle(p, nil, &staleError{batches: []int{0}}, self)
			} else {
				rest = append(rest, p)
			}
		}
		if len(rest) > 0 {
			s.writeGroup(ctx, rest)
		}
		return
	}
	if err != nil && len(group) > 1 && definite(err) {
		// The server refused the statement, so it wrote nothing: find the
		// batch at fault by sending each alone.
		for _, p := range group {
			var msgs []moitessier.Message
			err := outcome(retry(ctx, func() error {
				return s.onConn(ctx, func(q queryer) error {
					var err error
					msgs, err = s.appendEntries(ctx, q, p.b, p.self)
					return err
				})
			}))
			s.settle(p, msgs, err, p.self)
		}
		return
	}
	err = outcome(err)
	for i, p := range group {
		if err != nil {
			s.settle(p, nil, err, self)
		} else {
			s.settle(p, out[i], nil, self)
		}
	}
}

// settle hands a sent batch its outcome, written with self. If its caller
// stopped waiting (abandoned) and it committed, or if its outcome is
// unknown, its hub will not publish it, and self may have left that hub's
// Watch out of the notification: settle marks it notifyLate, and
// writeGroups has its listeners' heads notified (notifyLate).
func (s *Store) settle(p *pending, msgs []moitessier.Message, err error, self string) {
	c := &s.cmb
	p.msgs, p.err = msgs, err
	c.mu.Lock()
	p.settled = true
	abandoned := p.abandoned
	c.mu.Unlock()
	p.notifyLate = isWatch(self) && (abandoned && err == nil && len(msgs) > 0 || errors.Is(err, moitessier.ErrOutcomeUnknown))
	close(p.done)
}

// definite reports whether a failed append statement or transaction
// certainly wrote nothing: the server answered with an error (it then
// rolls the statement's transaction back), the request was never sent, or
// the batch was refused before it was sent.
func definite(err error) bool {
	var (
		pe *pgconn.PgError
		se *staleError
	)
	var ns *notSentError
	return errors.As(err, &pe) || errors.As(err, &se) || errors.As(err, &ns) ||
		pgconn.SafeToRetry(err) || errors.Is(err, moitessier.ErrClosed)
}

// notSentError reports a failure before anything was sent: no connection
// could be had.
type notSentError struct{ err error }

func (e *notSentError) Error() string { return e.err.Error() }
func (e *notSentError) Unwrap() error { return e.err }

// onConn runs fn on a connection of the pool; failing to get one is a
// notSentError.
func (s *Store) onConn(ctx context.Context, fn func(q queryer) error) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return &notSentError{fmt.Errorf("acquire a connection: %w", err)}
	}
	defer conn.Release()
	return fn(conn)
}

// outcome returns err, or, when err leaves open whether the append
// committed (the connection broke or the statement was cancelled after it
// was sent), an error wrapping moitessier.ErrOutcomeUnknown.
func outcome(err error) error {
	if err == nil || definite(err) || errors.Is(err, moitessier.ErrOutcomeUnknown) {
		return err
	}
	return fmt.Errorf("%w: %v", moitessier.ErrOutcomeUnknown, err)
}
