package postgres_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/postgres"
)

// lockListener holds listener id's row lock in an open transaction, as a
// DispatchTx does, until the returned function commits it.
func lockListener(t *testing.T, s *postgres.Store, id string) (unlock func()) {
	t.Helper()
	ctx := ctxT(t)
	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got string
	q := "SELECT id FROM " + pgx.Identifier{s.Schema(), "listeners"}.Sanitize() + " WHERE id = $1 FOR UPDATE"
	if err := tx.QueryRow(ctx, q, id).Scan(&got); err != nil {
		_ = tx.Rollback(ctx)
		t.Fatalf("lock listener %s: %v", id, err)
	}
	var once sync.Once
	unlock = func() {
		once.Do(func() {
			if err := tx.Commit(context.Background()); err != nil {
				t.Errorf("commit: %v", err)
			}
		})
	}
	t.Cleanup(unlock)
	return unlock
}

// storedTexts returns the texts stored for listener l.
func storedTexts(t *testing.T, l *moitessier.Listener) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	var c moitessier.Cursor
	for {
		msgs, err := l.Messages(ctxT(t), c, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) == 0 {
			return out
		}
		for _, m := range msgs {
			out[m.Text] = true
			c = m.Seq
		}
	}
}

// abandonDispatch dispatches "abandoned" to scope "room" as "a" through
// hub while listener id's row is locked, so that its statement waits, and
// stops waiting for it: the Dispatch must answer ErrOutcomeUnknown (its
// caller sent the statement itself: once its grace is over), which it
// returns; unlock releases the row.
func abandonDispatch(t *testing.T, s *postgres.Store, hub *moitessier.Hub, id string) (unlock func(), err error) {
	t.Helper()
	unlock = lockListener(t, s, id)
	dctx, cancel := context.WithCancel(ctxT(t))
	errc := make(chan error, 1)
	go func() {
		_, err := hub.Dispatch(dctx, "a", "room", "abandoned")
		errc <- err
	}()
	waitLocked(t, s, 1)
	cancel()
	if err = <-errc; !errors.Is(err, moitessier.ErrOutcomeUnknown) {
		t.Fatalf("Dispatch = %v, want ErrOutcomeUnknown", err)
	}
	return unlock, err
}

// waitLocked waits until a statement of the store waits on a row lock.
func waitLocked(t *testing.T, s *postgres.Store, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		waiting := lockWaiters(t, s)
		if waiting >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d statements wait on a lock, want %d", waiting, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// lockWaiters counts the statements of the store that wait on a lock.
func lockWaiters(t *testing.T, s *postgres.Store) int {
	t.Helper()
	var waiting int
	err := s.Pool().QueryRow(ctxT(t), `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%'||$1||'%'`, s.Schema()).Scan(&waiting)
	if err != nil {
		t.Fatal(err)
	}
	return waiting
}

// TestDispatchOutcome: a dispatch whose context ends while its batch is
// being committed, past its grace, does not report a plain error: it
// reports ErrOutcomeUnknown (and here, where the cancel request is lost,
// the statement ran on and stored it). One whose context ends while it
// waits to be sent reports the context's error and is not stored.
func TestDispatchOutcome(t *testing.T) {
	s := storeLosingCancels(t)
	hub := newHub(t, s, moitessier.Options{})
	ctx := ctxT(t)
	l, err := hub.NewListener(ctx, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "outcome"})
	if err != nil {
		t.Fatal(err)
	}
	unlock := lockListener(t, s, l.ID())

	dispatch := func(text string) (cancel func(), done <-chan error) {
		dctx, cancel := context.WithCancel(context.Background())
		ch := make(chan error, 1)
		go func() {
			_, err := hub.Dispatch(dctx, "alice", "outcome", text)
			ch <- err
		}()
		return cancel, ch
	}
	// The first is sent and waits on the lock; the second queues behind it.
	cancel1, done1 := dispatch("sent")
	waitLocked(t, s, 1)
	cancel2, done2 := dispatch("queued")
	waitQueued(t, s, 1)
	// The queued one first: the first, once its grace is over, hands its
	// turn to a writer, which would send the second if it still waited.
	cancel2()
	err2 := <-done2
	cancel1()
	err1 := <-done1
	unlock()
	if !errors.Is(err1, moitessier.ErrOutcomeUnknown) {
		t.Fatalf("dispatch cancelled while its batch was written: %v, want ErrOutcomeUnknown", err1)
	}
	if !errors.Is(err2, context.Canceled) || errors.Is(err2, moitessier.ErrOutcomeUnknown) {
		t.Fatalf("dispatch cancelled before it was sent: %v, want context.Canceled", err2)
	}
	// The statement under way commits once the lock is free.
	mustDispatchPG(t, hub, "alice", "outcome", "after")
	got := storedTexts(t, l)
	if got["queued"] {
		t.Fatal("a dispatch that failed with a plain error was stored")
	}
	if !got["sent"] || !got["after"] {
		t.Fatalf("stored %v, want sent and after", got)
	}
}

// waitQueued waits until n batches wait in the store's append queue.
func waitQueued(t *testing.T, s *postgres.Store, n int) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); s.Queued() < n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d batches queued, want %d", s.Queued(), n)
		}
	}
}

// TestOwnAppendGrace: a dispatch whose caller sent its statement itself
// (nothing else queued), and whose context ended while the statement
// waited, answers as if its context had not ended when the statement ends
// within its grace: stored, and no error.
func TestOwnAppendGrace(t *testing.T) {
	s := mustStore(t)
	hub := newHub(t, s, moitessier.Options{})
	ctx := ctxT(t)
	l, err := hub.NewListener(ctx, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "grace"})
	if err != nil {
		t.Fatal(err)
	}
	mustDispatchPG(t, hub, "alice", "grace", "first") // the next is an Append
	unlock := lockListener(t, s, l.ID())
	dctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := hub.Dispatch(dctx, "alice", "grace", "graced")
		done <- err
	}()
	waitLocked(t, s, 1)
	cancel()
	cancelled := time.Now()
	time.Sleep(50 * time.Millisecond)
	unlock()
	within := time.Since(cancelled) < postgres.CancelGrace
	err = <-done
	switch {
	case err == nil:
	case within:
		t.Fatalf("Dispatch = %v, want no error: its statement ended within its grace", err)
	case !errors.Is(err, moitessier.ErrOutcomeUnknown):
		t.Fatalf("Dispatch = %v, want ErrOutcomeUnknown past its grace", err)
	}
	if err == nil && !storedTexts(t, l)["graced"] {
		t.Fatal("a dispatch that answered no error was not stored")
	}
}

// TestDispatchOutcomeUnderCancel: dispatches with contexts that end at
// random moments, many during commits, half of them with an idempotency
// key (a transaction rather than a combined statement): each one that
// succeeded is stored, each one that failed with an error other than
// ErrOutcomeUnknown is not.
func TestDispatchOutcomeUnderCancel(t *testing.T) {
	s := mustStore(t)
	hub := newHub(t, s, moitessier.Options{})
	ctx := ctxT(t)
	l, err := hub.NewListener(ctx, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "cancel"})
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 6, 60
	// Deadlines range over 0 to 3 times the median time a dispatch takes
	// here and now, as many at once, so that many end while the write is under way
	// whatever the machine's load.
	var (
		mu   sync.Mutex
		took []time.Duration
		wg0  sync.WaitGroup
	)
	for w := range workers {
		wg0.Add(1)
		go func() {
			defer wg0.Done()
			for i := range 3 {
				start := time.Now()
				_, err := hub.Dispatch(ctx, "alice", "cancel", fmt.Sprint("warm ", w, i), moitessier.IdempotencyKey(fmt.Sprint("warm ", w, i)))
				if err != nil {
					t.Error(err)
				}
				mu.Lock()
				took = append(took, time.Since(start))
				mu.Unlock()
			}
		}()
	}
	wg0.Wait()
	slices.Sort(took)
	span := max(3*took[len(took)/2], time.Millisecond)
	type attempt struct {
		text string
		err  error
	}
	results := make([][]attempt, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				text := fmt.Sprint(w, "/", i)
				dctx, cancel := context.WithTimeout(context.Background(), time.Duration(rand.Int64N(int64(span))))
				var opts []moitessier.DispatchOption
				if i%2 == 0 { // a keyed dispatch is a transaction of its own
					opts = append(opts, moitessier.IdempotencyKey("k"+text))
				}
				_, err := hub.Dispatch(dctx, "alice", "cancel", text, opts...)
				cancel()
				results[w] = append(results[w], attempt{text, err})
			}
		}()
	}
	wg.Wait()
	got := storedTexts(t, l)
	var ok, plain, unknown int
	for _, rs := range results {
		for _, r := range rs {
			switch {
			case r.err == nil:
				ok++
				if !got[r.text] {
					t.Errorf("dispatch %s succeeded but is not stored", r.text)
				}
			case errors.Is(r.err, moitessier.ErrOutcomeUnknown):
				unknown++
			default:
				plain++
				if got[r.text] {
					t.Errorf("dispatch %s failed (%v) but is stored", r.text, r.err)
				}
			}
		}
	}
	t.Logf("deadlines up to %v: %d stored, %d failed and not stored, %d outcome unknown", span, ok, plain, unknown)
}

// TestDispatchTxDoesNotStallOthers: while a transaction holds one
// listener's row lock and a dispatch to it waits on that lock, dispatches
// to other listeners of the same process complete.
func TestDispatchTxDoesNotStallOthers(t *testing.T) {
	s := mustStore(t)
	hub := newHub(t, s, moitessier.Options{})
	ctx := ctxT(t)
	a, err := hub.NewListener(ctx, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "stall.a"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := hub.NewListener(ctx, moitessier.Conditions{Person: "bob", Type: moitessier.Shared, Scope: "stall.b"})
	if err != nil {
		t.Fatal(err)
	}
	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := postgres.DispatchTx(ctx, hub, s, tx, "alice", "stall.a", "in the transaction"); err != nil {
		t.Fatal(err)
	}
	waiting := make(chan error, 1)
	go func() {
		_, err := hub.Dispatch(ctx, "alice", "stall.a", "waits for the transaction")
		waiting <- err
	}()
	waitLocked(t, s, 1)
	for i := range 5 {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := hub.Dispatch(dctx, "bob", "stall.b", fmt.Sprint("unrelated ", i))
		cancel()
		if err != nil {
			t.Fatalf("dispatch to an unrelated listener while a transaction holds another's lock: %v", err)
		}
	}
	if msgs, err := b.Messages(ctx, 0, 0); err != nil || len(msgs) != 5 {
		t.Fatalf("unrelated listener holds %d messages, %v; want 5", len(msgs), err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-waiting; err != nil {
		t.Fatalf("the dispatch that waited: %v", err)
	}
	if msgs, err := a.Messages(ctx, 0, 0); err != nil || len(msgs) != 2 {
		t.Fatalf("locked listener holds %d messages, %v; want 2", len(msgs), err)
	}
}

func mustDispatchPG(t *testing.T, hub *moitessier.Hub, sender, scope, text string) {
	t.Helper()
	if _, err := hub.Dispatch(ctxT(t), sender, scope, text); err != nil {
		t.Fatal(err)
	}
}

// TestCloseStopsWriters: Close ends the append statements under way (one
// waits on a row lock held elsewhere) and returns; no writer outlives it.
func TestCloseStopsWriters(t *testing.T) {
	before := goleak.IgnoreCurrent()
	s := mustStore(t)
	hub := newHub(t, s, moitessier.Options{})
	ctx := ctxT(t)
	l, err := hub.NewListener(ctx, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "close"})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.ConnectConfig(ctx, s.Pool().Config().ConnConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(ctx, "SELECT 1 FROM "+pgx.Identifier{s.Schema(), "listeners"}.Sanitize()+" WHERE id = $1 FOR UPDATE", l.ID()); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 2)
	go func() { _, err := hub.Dispatch(ctx, "alice", "close", "sent"); errc <- err }()
	waitLocked(t, s, 1)
	go func() { _, err := hub.Dispatch(ctx, "alice", "close", "queued"); errc <- err }()
	time.Sleep(20 * time.Millisecond)
	closed := make(chan struct{})
	go func() { _ = hub.Close(); _ = s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("Store.Close still waiting 20s after it was called, with an append waiting on a lock")
	}
	for range 2 {
		if err := <-errc; !errors.Is(err, moitessier.ErrOutcomeUnknown) && !errors.Is(err, moitessier.ErrClosed) {
			t.Fatalf("append cut off by Close: %v, want ErrOutcomeUnknown or ErrClosed", err)
		}
	}
	_ = tx.Rollback(ctx)
	conn.Close(ctx)
	goleak.VerifyNone(t, before)
}

// TestCancelledTransactionKeepsConnection: a Leave (a transaction)
// whose caller gives up while it waits on the listener's lock fails,
// having changed nothing, and its connection stays in the pool: the
// rollback is not refused for the ended context, which would make pgx
// close the connection.
func TestCancelledTransactionKeepsConnection(t *testing.T) {
	s := mustStore(t)
	l := join(t, s, "leaving")
	unlock := lockListener(t, s, l.ID)
	lctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := s.Leave(lctx, l.ID, "p", "")
		done <- err
	}()
	waitLocked(t, s, 1)
	conns := s.Pool().Stat().TotalConns()
	cancel()
	time.Sleep(100 * time.Millisecond)
	unlock()
	if err := <-done; err == nil {
		t.Log("the Leave finished within the grace") // also fine
	} else if errors.Is(err, moitessier.ErrNotFound) {
		t.Fatalf("Leave: %v", err)
	}
	// The pool drops a dead connection in the background: give it time.
	for deadline := time.Now().Add(500 * time.Millisecond); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if n := s.Pool().Stat().TotalConns(); n != conns {
			t.Fatalf("the pool holds %d connections after a caller gave up during its transaction, %d before", n, conns)
		}
	}
}

// lostCancels dials the server as pgx does, but the connections it makes
// drop the cancel request pgx sends when it gives a connection up: the
// server then runs the statement on, as it does when the request comes
// too late or the network between them fails.
func lostCancels(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &cancelDropper{Conn: c}, nil
}

// cancelRequestCode opens a cancel request (the protocol's CancelRequest).
const cancelRequestCode = 80877102

// cancelDropper is a connection whose first write, if a cancel request,
// is dropped and closes it.
type cancelDropper struct {
	net.Conn
	wrote bool
}

func (c *cancelDropper) Write(b []byte) (int, error) {
	if !c.wrote && len(b) >= 8 && binary.BigEndian.Uint32(b[4:8]) == cancelRequestCode {
		_ = c.Conn.Close()
		return len(b), nil
	}
	c.wrote = true
	return c.Conn.Write(b)
}

// storeLosingCancels opens a store on a new schema, on a pool it opens (so
// with its grace) whose cancel requests are lost (see lostCancels), closed
// when the test ends.
func storeLosingCancels(t *testing.T) *postgres.Store {
	t.Helper()
	return openStoreWith(t, postgres.WithDial(postgres.Config{Schema: newSchema(t)}, lostCancels))
}

// TestAbandonedMatchAppendIsHeard is TestAbandonedAppendIsHeard for a
// dispatch to a scope the hub has no match cached for, which matches and
// appends in one statement (MatchAppend): its caller gave up while the
// statement waited (ErrOutcomeUnknown, not knowing which listeners it
// matched), the statement committed after, and the hub's subscribers
// receive its message at once (no catch-up poll), though the hub does not
// publish it and the statement left the hub's Watch out.
func TestAbandonedMatchAppendIsHeard(t *testing.T) {
	s := storeLosingCancels(t)
	ctx := ctxT(t)
	hub := newHub(t, s, slow)
	awaitWatchers(t, s, 1)
	l, err := hub.NewListener(ctx, moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scopes: []string{"warm", "room"}})
	if err != nil {
		t.Fatal(err)
	}
	got := stream(t, l)
	if _, err := hub.Dispatch(ctx, "a", "warm", "first"); err != nil {
		t.Fatal(err)
	}
	receive(t, got, "first")
	// The join cached room's answer (its listener alone): forget it, so
	// that the dispatch matches.
	s.ForgetMatches()
	unlock, err := abandonDispatch(t, s, hub, l.ID()) // the statement waits for the row
	if !strings.Contains(err.Error(), "match and append") {
		t.Fatalf("Dispatch = %v, not from MatchAppend", err)
	}
	unlockWhenNotifyWaits(t, s, unlock)
	receive(t, got, "abandoned")
}
