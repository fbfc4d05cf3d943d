package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/likestripes/moitessier"
)

// An append sends its NOTIFY only when a hub other than its own may be
// waiting for it. A running Watch has a row in the schema's watchers table
// (migration 6). An append passes watchOther (queries.go), as self, the id
// of the Watch of the hub it comes from (moitessier.OriginOf its context:
// that hub publishes what its Dispatch appended to its own subscribers, so
// its Watch need not hear of it), when that hub has one Watch running on
// this store; selfNone otherwise (a direct Append, another hub's Dispatch
// whose hub has closed); and selfAlways from a transaction that spans
// round trips (AppendTx, and Append with an idempotency key): a Watch that
// registers while it holds the listeners table's lock would hear of what
// it wrote only once it ended (below), and not at its commit. With one
// hub on a schema, the common case, appends notify no one: no NOTIFY to
// queue and deliver, no LISTEN connection to wake.
//
// Looking costs the server a little (a lookup in the statement): when a
// look found someone to notify, the appends of the next second (seen)
// notify without looking, which is always safe, and then look again.
//
// A Watch registers before it reads the heads of the listeners: it writes
// its row, and then waits for every append that may have looked at the
// table before the row was there. An append statement takes the listeners
// table's ROW EXCLUSIVE lock before its snapshot (the server locks a
// statement's tables before it takes the snapshot it runs with, at READ
// COMMITTED, which watchOther checks), and holds it until its transaction
// ends. So the Watch, once its row is committed, lists the transactions
// that hold that lock (awaitWriters): one that took it later has a
// snapshot with the row in it, and notifies; one that holds it has
// committed, or rolled back, once the Watch has waited for it, and the
// heads the Watch then reads have what it wrote. The wait is bounded
// (writersWait), so that a transaction that holds the lock for long (a
// caller's DispatchTx, an append that waits for a row lock such a
// transaction holds, the sweep) does not hold up the Watch: the Watch
// then reads the heads at once, and again, from a goroutine of its own,
// once those transactions have ended.
//
// Migration 6's must_notify, which older versions of this package call
// from their appends, looks under the schema's gate, an advisory lock it
// takes shared; a Watch also takes the gate exclusively, which waits for
// those appends (see the migration for why nothing is missed). A Watch of
// an older version takes only the gate, and so does not wait for this
// version's appends: during a rolling upgrade, what it misses when it
// registers is left to its hub's catch-up read.

// Values of watchOther's self other than a Watch's id (hexadecimal).
const (
	// selfNone leaves no Watch out.
	selfNone = "-"
	// selfAlways notifies, without looking: from a transaction that
	// spans round trips (so that a Watch that registered while it ran
	// hears of its commit at once), and from a hub's appends for a while
	// after a look found someone to notify.
	selfAlways = ""
)

// watchers tracks a store's running Watch calls by the hub they come from.
type watchers struct {
	mu sync.Mutex
	// byOrigin maps a hub to the ids of its running Watch calls; it is
	// replaced, never changed, so appends read it without the lock.
	byOrigin atomic.Pointer[map[*moitessier.Origin][]string]

	seen atomic.Int64 // UnixNano until which appends notify without looking

	// writersWait, if not 0, replaces the constant writersWait (a test
	// shortens it); set before the first Watch.
	writersWait time.Duration
}

// seenFor is how long the appends notify without looking after a look
// found someone to notify.
const seenFor = time.Second

// saw records what an append that passed self found: whether it notified.
func (w *watchers) saw(self string, notified bool) {
	if notified && self != selfAlways {
		w.seen.Store(time.Now().Add(seenFor).UnixNano())
	}
}

// selfFor is the self of an append made under ctx.
func (w *watchers) selfFor(ctx context.Context) string {
	if time.Now().UnixNano() < w.seen.Load() {
		return selfAlways
	}
	o := moitessier.OriginOf(ctx)
	if o == nil {
		return selfNone
	}
	if m := w.byOrigin.Load(); m != nil {
		if ids := (*m)[o]; len(ids) == 1 {
			return ids[0]
		}
	}
	return selfNone
}

// start records a running Watch of origin o (nil: none) and returns its id.
func (w *watchers) start(o *moitessier.Origin) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	if o != nil {
		w.change(func(m map[*moitessier.Origin][]string) { m[o] = append(m[o], id) })
	}
	return id
}

// stop records the end of Watch id of origin o.
func (w *watchers) stop(o *moitessier.Origin, id string) {
	if o == nil {
		return
	}
	w.change(func(m map[*moitessier.Origin][]string) {
		ids := slices.DeleteFunc(slices.Clone(m[o]), func(x string) bool { return x == id })
		if len(ids) == 0 {
			delete(m, o)
		} else {
			m[o] = ids
		}
	})
}

// change replaces byOrigin with a copy that fn changed.
func (w *watchers) change(fn func(map[*moitessier.Origin][]string)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := map[*moitessier.Origin][]string{}
	if old := w.byOrigin.Load(); old != nil {
		maps.Copy(m, *old)
	}
	fn(m)
	w.byOrigin.Store(&m)
}

// writersWait bounds how long a Watch that registers waits for the
// transactions that hold the listeners table's ROW EXCLUSIVE lock.
const writersWait = time.Second

// register writes the row of Watch id for conn, its LISTEN connection
// (whose LISTEN is already active), deletes the rows of watchers whose
// connection is gone, takes the gate exclusively (for the appends of older
// versions) and waits for the transactions that hold the listeners
// table's lock, so that every append that did not see the row has ended
// when it returns (see above), but those it returns: the transactions
// still holding the lock when the wait ended.
func (s *Store) register(ctx context.Context, conn *pgx.Conn, id string) (left []string, err error) {
	if _, err := conn.Exec(ctx, s.q.registerWatcher, id); err != nil {
		return nil, fmt.Errorf("register the watch: %w", err)
	}
	if _, err := conn.Exec(ctx, s.q.deleteGoneWatchers); err != nil {
		return nil, fmt.Errorf("delete the rows of watches gone: %w", err)
	}
	if _, err := conn.Exec(ctx, s.q.gate); err != nil {
		return nil, fmt.Errorf("wait for the appends under way: %w", err)
	}
	var vxids []string
	if err := conn.QueryRow(ctx, s.q.listenerWriters, s.listenersTable()).Scan(&vxids); err != nil {
		return nil, fmt.Errorf("list the appends under way: %w", err)
	}
	wait := writersWait
	if s.watchers.writersWait != 0 {
		wait = s.watchers.writersWait
	}
	ended, err := s.awaitWriters(ctx, conn, vxids, time.Now().Add(wait))
	if err != nil {
		return nil, fmt.Errorf("wait for the appends under way: %w", err)
	}
	if !ended {
		return vxids, nil
	}
	return nil, nil
}

// listenersTable is the listeners table's name, as listenerWriters and
// writersLeft take it.
func (s *Store) listenersTable() string {
	return pgx.Identifier{s.cfg.Schema, "listeners"}.Sanitize()
}

// awaitWriters waits until none of transactions vxids holds the listeners
// table's ROW EXCLUSIVE lock, asking q every few milliseconds (the server
// has no call that waits for another transaction's end), and reports
// whether that came; it gives up, reporting false, once deadline (zero:
// none) has passed. It stops no query of q's at the deadline: on a LISTEN
// connection, that could close it.
func (s *Store) awaitWriters(ctx context.Context, q queryer, vxids []string, deadline time.Time) (bool, error) {
	longest := 50 * time.Millisecond
	if deadline.IsZero() {
		longest = time.Second // no one waits: ask the server less often
	}
	for pause := time.Millisecond; len(vxids) > 0; pause = min(2*pause, longest) {
		var left int64
		if _, err := scanOne(ctx, q, []any{&left}, s.q.writersLeft, s.listenersTable(), vxids); err != nil {
			return false, err
		}
		if left == 0 {
			return true, nil
		}
		if !deadline.IsZero() {
			if pause = min(pause, time.Until(deadline)); pause <= 0 {
				return false, nil
			}
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return false, ctx.Err()
		case <-t.C:
		}
	}
	return true, nil
}

// isWatch reports whether self names a Watch: an append with it may have
// left that Watch out of its notification.
func isWatch(self string) bool { return self != selfNone && self != selfAlways }

// notifyListeners notifies the current heads of listeners ids, for an
// append whose hub will not publish it (its caller stopped waiting, or its
// outcome is unknown) and whose own notification may have left that hub's
// Watch out. It waits for an append still writing one of them (reading
// with FOR SHARE), but gives up after cancelGrace, and a failure leaves
// them to the hub's catch-up read: no one is waiting for an answer.
func (s *Store) notifyListeners(ctx context.Context, ids []string) {
	ctx, cancel := context.WithTimeout(ctx, cancelGrace)
	defer cancel()
	_, _ = s.pool.Exec(ctx, s.q.notifyHeadsOf, s.channel, ids, s.cfg.NotifyBatch)
}

// notifyScopeLater notifies, on a goroutine of the store's, the current
// heads of the listeners of scope and of patternIDs (those whose patterns
// match it), for a matchAppend statement whose outcome is unknown: it
// may commit, its hub will not publish it, and its self may have left
// that hub's Watch out. Its caller knows neither whether it wrote nor to
// which listeners, so every listener it could have written to is
// notified; one it did not write to costs the Watch a head it already
// has. Its statement waits, as notifyListeners' does, for the abandoned
// statement to end, which the caller that gave up is not to wait for: it
// runs on a goroutine, which Close waits for (and ends). It waits only if
// that statement holds a listener's row lock, or waits in line for it,
// when it asks: one that waits for another transaction's lock can lose
// the row to it when that transaction ends, and what it then writes is
// heard at the hub's next catch-up, as it is when the wait outlasts
// cancelGrace.
func (s *Store) notifyScopeLater(scope string, patternIDs []string) {
	s.later(func(ctx context.Context) {
		_, _ = s.pool.Exec(ctx, s.q.notifyScopeHeads, s.channel, patternIDs, s.cfg.NotifyBatch, scope)
	})
}

// notifyListenersLater is notifyListeners on a goroutine of the store's,
// as notifyScopeLater's, for an append its caller sent itself
// (sendAlone).
func (s *Store) notifyListenersLater(ids []string) {
	s.later(func(ctx context.Context) { s.notifyListeners(ctx, ids) })
}

// later runs fn on a goroutine that Close waits for, under a context that
// Close ends and that ends after cancelGrace; not at all once the store is
// closed.
func (s *Store) later(fn func(ctx context.Context)) {
	c := &s.cmb
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.wg.Add(1) // under c.mu, before close can be waiting
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		ctx, cancel := context.WithTimeout(c.ctx, cancelGrace)
		defer cancel()
		fn(ctx)
	}()
}
