package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/postgres"
)

// watcherRows counts the Watch registrations of s's schema.
func watcherRows(tb testing.TB, s *postgres.Store) int {
	tb.Helper()
	var n int
	if err := s.Pool().QueryRow(ctxT(tb), "SELECT count(*) FROM "+pgx.Identifier{s.Schema(), "watchers"}.Sanitize()).Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}

// awaitWatchers waits until s's schema has n Watch registrations.
func awaitWatchers(tb testing.TB, s *postgres.Store, n int) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for watcherRows(tb, s) != n {
		if time.Now().After(deadline) {
			tb.Fatalf("%d Watch registrations, want %d", watcherRows(tb, s), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rawListen LISTENs on s's channel on a connection of its own (not a
// registered Watch) and returns a function that reports whether a
// notification came within d.
func rawListen(t *testing.T, s *postgres.Store) func(d time.Duration) bool {
	t.Helper()
	conn, err := pgx.Connect(ctxT(t), testDSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	if _, err := conn.Exec(ctxT(t), "LISTEN "+pgx.Identifier{s.Channel()}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	return func(d time.Duration) bool {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		_, err := conn.WaitForNotification(ctx)
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatal(err)
		}
		return err == nil
	}
}

func receive(t *testing.T, ch <-chan moitessier.Message, text string) {
	t.Helper()
	select {
	case m := <-ch:
		if m.Text != text {
			t.Fatalf("received %q, want %q", m.Text, text)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%q not received", text)
	}
}

// slow is the options of the tests' hubs: no catch-up poll, so that only a
// notification wakes a hub for another's dispatch.
var slow = moitessier.Options{CatchUpInterval: time.Hour}

// firstHub starts a hub on a new schema, whose name it returns, and waits
// until its Watch registered.
func firstHub(t *testing.T) (string, *postgres.Store, *moitessier.Hub) {
	t.Helper()
	schema := newSchema(t)
	s := openStore(t, schema)
	hub := newHub(t, s, slow)
	awaitWatchers(t, s, 1)
	return schema, s, hub
}

// TestOneHubNotifiesNoOne: a hub alone on its schema sends no NOTIFY for
// what it dispatches (it publishes to its own subscribers itself); once a
// second hub watches, on another store, its dispatches notify, and that
// hub's subscribers receive them with no catch-up poll; once the second
// hub closes (and the appends look again), they notify no one again.
func TestOneHubNotifiesNoOne(t *testing.T) {
	schema, s1, hub1 := firstHub(t)
	ctx := ctxT(t)
	notified := rawListen(t, s1)
	cond := moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "room"}
	l1, err := hub1.NewListener(ctx, cond)
	if err != nil {
		t.Fatal(err)
	}
	got1 := stream(t, l1)
	if _, err := hub1.Dispatch(ctx, "a", "room", "alone"); err != nil {
		t.Fatal(err)
	}
	receive(t, got1, "alone")
	if notified(300 * time.Millisecond) {
		t.Fatal("a dispatch of a hub alone on its schema sent a NOTIFY")
	}

	hub2, err := moitessier.New(openStore(t, schema), moitessier.Options{CatchUpInterval: time.Hour, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	awaitWatchers(t, s1, 2)
	l2, err := hub2.NewListener(ctx, cond)
	if err != nil {
		t.Fatal(err)
	}
	got2 := stream(t, l2)
	receive(t, got2, "alone") // from the store: it starts at cursor 0
	if _, err := hub1.Dispatch(ctx, "a", "room", "together"); err != nil {
		t.Fatal(err)
	}
	receive(t, got1, "together")
	receive(t, got2, "together")
	if !notified(10 * time.Second) {
		t.Fatal("no NOTIFY with a second hub watching")
	}

	if err := hub2.Close(); err != nil {
		t.Fatal(err)
	}
	awaitWatchers(t, s1, 1)
	// After a look that found a Watch to notify, appends notify without
	// looking for a while.
	time.Sleep(postgres.SeenFor + 100*time.Millisecond)
	for notified(100 * time.Millisecond) { // drain
	}
	if _, err := hub1.Dispatch(ctx, "a", "room", "alone again"); err != nil {
		t.Fatal(err)
	}
	receive(t, got1, "alone again")
	if notified(300 * time.Millisecond) {
		t.Fatal("a NOTIFY after the second hub closed")
	}
}

// waitingStream streams l from hub, and returns once its ListenUntil waits
// (a first dispatch through hub has reached it).
func waitingStream(t *testing.T, hub *moitessier.Hub, l *moitessier.Listener) <-chan moitessier.Message {
	t.Helper()
	got := stream(t, l)
	if _, err := hub.Dispatch(ctxT(t), "a", l.Info().Scopes[0], "first"); err != nil {
		t.Fatal(err)
	}
	receive(t, got, "first")
	return got
}

// loneHub starts a hub alone on a new schema, with no catch-up poll, and a
// subscriber of its listener of scope "room" that waits for messages.
func loneHub(t *testing.T) (*postgres.Store, *moitessier.Hub, *moitessier.Listener, <-chan moitessier.Message) {
	t.Helper()
	return loneHubOn(t, mustStore(t))
}

// loneHubOn is loneHub on store s.
func loneHubOn(t *testing.T, s *postgres.Store) (*postgres.Store, *moitessier.Hub, *moitessier.Listener, <-chan moitessier.Message) {
	t.Helper()
	hub := newHub(t, s, slow)
	awaitWatchers(t, s, 1)
	l, err := hub.NewListener(ctxT(t), moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "room"})
	if err != nil {
		t.Fatal(err)
	}
	return s, hub, l, waitingStream(t, hub, l)
}

// TestDirectAppendIsHeard: an Append made straight through the store of a
// hub, not by its Dispatch, notifies that hub's Watch: the hub does not
// publish it, and its subscribers receive it at once (no catch-up poll).
func TestDirectAppendIsHeard(t *testing.T) {
	s, _, l, got := loneHub(t)
	ctx := ctxT(t)
	if _, _, err := s.Append(ctx, batch("room", map[string]string{l.ID(): "direct"})); err != nil {
		t.Fatal(err)
	}
	receive(t, got, "direct")
}

// TestClosedHubsDispatchIsHeard: a dispatch that a hub finishes after it
// closed (its handler was still running) notifies the other hub on the
// same store, whose Watch is then the store's only one.
func TestClosedHubsDispatchIsHeard(t *testing.T) {
	s := mustStore(t)
	ctx := ctxT(t)
	o := slow
	o.HandlerBudget = -1 // the handler waits past the default budget
	hubA, hubB := newHub(t, s, o), newHub(t, s, o)
	awaitWatchers(t, s, 2)
	if _, err := hubA.NewListener(ctx, moitessier.Conditions{Person: "h", Type: moitessier.Handler, Scope: "room"}); err != nil {
		t.Fatal(err)
	}
	l, err := hubB.NewListener(ctx, moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "room"})
	if err != nil {
		t.Fatal(err)
	}
	got := waitingStream(t, hubB, l)
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	block := moitessier.HandlerFunc(func(context.Context, string, moitessier.Message) (string, error) {
		once.Do(func() { close(entered) })
		<-release
		return "", nil
	})
	errc := make(chan error, 1)
	go func() {
		_, err := hubA.Dispatch(ctx, "a", "room", "late", block)
		errc <- err
	}()
	<-entered
	if err := hubA.Close(); err != nil {
		t.Fatal(err)
	}
	// Past the time the appends notify without looking, after the first
	// dispatch found hub A's Watch to notify.
	time.Sleep(postgres.SeenFor + 100*time.Millisecond)
	close(release)
	if err := <-errc; err != nil {
		t.Fatalf("the closed hub's dispatch: %v", err)
	}
	receive(t, got, "late")
}

// TestAbandonedAppendIsHeard: a dispatch whose caller stopped waiting while
// the statement it sent itself ran (ErrOutcomeUnknown, past its grace) and
// that then committed (its cancel request was lost) reaches its own hub's
// subscribers at once (no catch-up poll), though the hub does not publish
// it and its statement left the hub's Watch out.
func TestAbandonedAppendIsHeard(t *testing.T) {
	// Its first dispatch cached the match: the next is an Append, which
	// waits for the row.
	s, hub, l, got := loneHubOn(t, storeLosingCancels(t))
	unlock, err := abandonDispatch(t, s, hub, l.ID())
	if strings.Contains(err.Error(), "match and append") {
		t.Fatalf("Dispatch = %v, from MatchAppend", err)
	}
	unlockWhenNotifyWaits(t, s, unlock)
	receive(t, got, "abandoned")
}

// unlockWhenNotifyWaits calls unlock once a late notification waits for
// the row lock behind the abandoned statement (or after 3 s). Released
// before that, the lock could go to the notification first, and it would
// read the head the statement has yet to raise.
func unlockWhenNotifyWaits(t *testing.T, s *postgres.Store, unlock func()) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); lockWaiters(t, s) < 2 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	unlock()
}

// TestAbandonedQueuedAppendIsHeard: a dispatch that queued (here, behind
// the one statement Config.Writers allows) and went out on a writer is
// answered ErrOutcomeUnknown when its caller stops waiting, while its
// statement runs on: it commits once the row is free, though the cancel
// requests of this store's pool reach the server, and reaches its own
// hub's subscribers at once.
func TestAbandonedQueuedAppendIsHeard(t *testing.T) {
	s := openStoreWith(t, postgres.Config{Schema: newSchema(t), Writers: 1})
	hub := newHub(t, s, slow)
	awaitWatchers(t, s, 1)
	ctx := ctxT(t)
	l, err := hub.NewListener(ctx, moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "room"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := hub.NewListener(ctx, moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "other"})
	if err != nil {
		t.Fatal(err)
	}
	got := waitingStream(t, hub, l)
	_ = waitingStream(t, hub, other)
	unlockOther := lockListener(t, s, other.ID())
	unlock := lockListener(t, s, l.ID())
	ahead := make(chan error, 1)
	go func() {
		_, err := hub.Dispatch(ctx, "a", "other", "ahead")
		ahead <- err
	}()
	waitLocked(t, s, 1)
	dctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := hub.Dispatch(dctx, "a", "room", "abandoned")
		errc <- err
	}()
	waitQueued(t, s, 1)
	unlockOther() // "ahead" commits; a writer takes the turn and sends "abandoned"
	if err := <-ahead; err != nil {
		t.Fatal(err)
	}
	waitLocked(t, s, 1)
	cancel()
	cancelled := time.Now()
	if err := <-errc; !errors.Is(err, moitessier.ErrOutcomeUnknown) {
		t.Fatalf("Dispatch = %v, want ErrOutcomeUnknown", err)
	}
	// At once, not after a grace (which a statement its caller sent has).
	if took := time.Since(cancelled); took > postgres.CancelGrace/2 {
		t.Fatalf("Dispatch answered %v after its caller gave up", took)
	}
	unlock() // its writer notifies once the statement ends
	receive(t, got, "abandoned")
}

// TestWatchRegistersAgain: a Watch whose connection the server ended
// reconnects and registers again, under the same id, and hears another
// hub's dispatches.
func TestWatchRegistersAgain(t *testing.T) {
	schema, s1, hub1 := firstHub(t)
	ctx := ctxT(t)
	table := pgx.Identifier{schema, "watchers"}.Sanitize()
	var (
		id  string
		pid int
	)
	if err := s1.Pool().QueryRow(ctx, "SELECT id, pid FROM "+table).Scan(&id, &pid); err != nil {
		t.Fatal(err)
	}
	if _, err := s1.Pool().Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var newPID int
		err := s1.Pool().QueryRow(ctx, "SELECT pid FROM "+table+" WHERE id = $1", id).Scan(&newPID)
		if err == nil && newPID != pid {
			break
		}
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the Watch did not register again")
		}
		time.Sleep(10 * time.Millisecond)
	}
	awaitWatchers(t, s1, 1)
	l, err := hub1.NewListener(ctx, moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "room"})
	if err != nil {
		t.Fatal(err)
	}
	got := waitingStream(t, hub1, l)
	hub2 := newHub(t, openStore(t, schema), slow)
	awaitWatchers(t, s1, 2)
	if _, err := hub2.Dispatch(ctx, "a", "room", "from hub 2"); err != nil {
		t.Fatal(err)
	}
	receive(t, got, "from hub 2")
}

// TestTwoHubsOnOneStore: hubs that share a store hear each other's
// dispatches at once (no catch-up poll).
func TestTwoHubsOnOneStore(t *testing.T) {
	s := mustStore(t)
	ctx := ctxT(t)
	hub1, hub2 := newHub(t, s, slow), newHub(t, s, slow)
	awaitWatchers(t, s, 2)
	cond := moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "room"}
	l2, err := hub2.NewListener(ctx, cond)
	if err != nil {
		t.Fatal(err)
	}
	got := stream(t, l2)
	for _, text := range []string{"one", "two"} {
		if _, err := hub1.Dispatch(ctx, "a", "room", text); err != nil {
			t.Fatal(err)
		}
		receive(t, got, text)
	}
}

// TestWatchWaitsForUnnotifiedAppends: an append that found no Watch
// registered sends no NOTIFY; a Watch that registers while it is under
// way waits for it to end before it reads the heads, and so reports it.
// (Append's transaction is one statement, or a short one with a key;
// here a test's transaction holds it open.)
func TestWatchWaitsForUnnotifiedAppends(t *testing.T) {
	s := mustStore(t)
	// Longer than the test holds the transaction open, however slow
	// the machine.
	s.SetWritersWait(time.Minute)
	ctx := ctxT(t)
	l := join(t, s, "room")
	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := s.AppendLookingTx(ctx, tx, batch("room", map[string]string{l.ID: "before the watch"})); err != nil {
		t.Fatal(err)
	}
	head := watchHead(t, s, l.ID)
	awaitWatchers(t, s, 1)
	// Without the wait (and the second read of the heads that follows a
	// wait cut short), the Watch would read the heads now, before the
	// commit, and never hear of the message.
	time.Sleep(300 * time.Millisecond)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	awaitHead(t, head, 1)
}

// TestGoneWatchersDeleted: the registration of a Watch whose connection is
// gone (a hub that crashed) is deleted by Sweep and by a Watch that starts.
func TestGoneWatchersDeleted(t *testing.T) {
	s := mustStore(t)
	ctx := ctxT(t)
	ghost := func() {
		t.Helper()
		// No server process has this pid: it is above the largest a
		// Linux pid can be.
		if _, err := s.Pool().Exec(ctx, "INSERT INTO "+pgx.Identifier{s.Schema(), "watchers"}.Sanitize()+
			" (id, pid) VALUES ('ghost', 2147483647)"); err != nil {
			t.Fatal(err)
		}
	}
	ghost()
	if _, err := s.Sweep(ctx, moitessier.SweepParams{Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if n := watcherRows(t, s); n != 0 {
		t.Fatalf("after Sweep, %d registrations, want 0", n)
	}
	ghost()
	newHub(t, s, moitessier.Options{})
	deadline := time.Now().Add(10 * time.Second)
	for {
		var ghosts, hubs int
		if err := s.Pool().QueryRow(ctx, "SELECT count(*) FILTER (WHERE id = 'ghost'), count(*) FILTER (WHERE id <> 'ghost') FROM "+
			pgx.Identifier{s.Schema(), "watchers"}.Sanitize()).Scan(&ghosts, &hubs); err != nil {
			t.Fatal(err)
		}
		if ghosts == 0 && hubs == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d gone and %d live registrations, want 0 and 1", ghosts, hubs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAppendsTakeNoGate: an append looks for a Watch to notify without
// the schema's gate, which older versions' appends take shared, so a
// dispatch does not wait for a Watch that is registering (here a
// transaction holds the gate exclusively, as one does), whether it writes
// nothing (no listener has its scope) or writes.
func TestAppendsTakeNoGate(t *testing.T) {
	s := mustStore(t)
	ctx := ctxT(t)
	hub := newHub(t, s, moitessier.Options{})
	awaitWatchers(t, s, 1)
	// room has one listener; hall.1 one of its own and one whose pattern
	// matches it, which the general MatchAppend statement takes.
	for _, scope := range []string{"room", "hall.1", "hall.*"} {
		if _, err := hub.NewListener(ctx, moitessier.Conditions{Type: moitessier.Shared, Person: "a", Scope: scope}); err != nil {
			t.Fatal(err)
		}
	}
	s.ForgetMatches() // the joins cached room's answer: match it
	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(tableoid::integer, 0) FROM "+pgx.Identifier{s.Schema(), "meta"}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		scope string
		want  int
	}{{"nobody.listens", 0}, {"room", 1}, {"hall.1", 2}} {
		dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		d, err := hub.Dispatch(dctx, "a", c.scope, "at once")
		cancel()
		if err != nil || len(d.Reached) != c.want {
			t.Fatalf("Dispatch to %s = %+v, %v; want %d reached, at once", c.scope, d, err, c.want)
		}
	}
	// A direct Append: of one entry, and of several to several listeners.
	a, b := join(t, s, "a"), join(t, s, "b")
	for _, bt := range []*moitessier.Batch{
		batch("a", map[string]string{a.ID: "one"}),
		batch("ab", map[string]string{a.ID: "two", b.ID: "three"}),
	} {
		actx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, _, err := s.Append(actx, bt)
		cancel()
		if err != nil {
			t.Fatalf("Append of %d entries: %v; want it done at once", len(bt.Entries), err)
		}
	}
}

// TestWatchTakesTheGate: a Watch that registers still takes the schema's
// gate exclusively, so it waits for the appends of an older version, which
// look for a Watch under the gate (must_notify, here called in a
// transaction as such an append calls it), before it reads the heads.
func TestWatchTakesTheGate(t *testing.T) {
	s := mustStore(t)
	ctx := ctxT(t)
	id, tx := listenerAndTx(t, s, "SELECT "+pgx.Identifier{s.Schema(), "must_notify"}.Sanitize()+"('-', 1)")
	reported := watchHeads(t, s, id)
	awaitWatchers(t, s, 1)
	select {
	case <-reported:
		t.Fatal("the Watch read the heads while an older append held the gate")
	case <-time.After(300 * time.Millisecond):
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-reported:
	case <-time.After(10 * time.Second):
		t.Fatal("the Watch did not read the heads once the gate was free")
	}
}

// TestWatchWaitsForWritersAWhile: a Watch that registers waits for the
// transactions that hold the listeners table's lock only so long: one that
// holds it for longer (here a transaction that took it and stays open)
// does not keep the Watch from reading the heads.
func TestWatchWaitsForWritersAWhile(t *testing.T) {
	s := mustStore(t)
	s.SetWritersWait(200 * time.Millisecond)
	id, _ := listenerAndTx(t, s, "LOCK TABLE "+pgx.Identifier{s.Schema(), "listeners"}.Sanitize()+" IN ROW EXCLUSIVE MODE")
	start := time.Now()
	select {
	case <-watchHeads(t, s, id):
		if took := time.Since(start); took < 200*time.Millisecond {
			t.Fatalf("the Watch read the heads after %v, before its wait for the transaction ended", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the Watch did not read the heads while a transaction held the listeners table's lock")
	}
}

// TestWatchHearsAppendsItStoppedWaitingFor: an append that took its
// snapshot before a Watch registered, and then waited (here for a row lock
// another transaction holds) for longer than the Watch waits, commits
// without notifying; the Watch, which read the heads before that commit,
// reads them again once the append has ended, and so hears of it.
func TestWatchHearsAppendsItStoppedWaitingFor(t *testing.T) {
	s := mustStore(t)
	s.SetWritersWait(200 * time.Millisecond)
	ctx := ctxT(t)
	id, tx := listenerAndTx(t, s, "SELECT 1")
	if _, err := tx.Exec(ctx, "SELECT id FROM "+pgx.Identifier{s.Schema(), "listeners"}.Sanitize()+" WHERE id = $1 FOR UPDATE", id); err != nil {
		t.Fatal(err)
	}
	appended := make(chan error, 1)
	go func() {
		_, err := s.AppendOneStatement(ctx, id, "two", "", "none")
		appended <- err
	}()
	awaitAnyLockWait(t, s)
	head := watchHead(t, s, id)
	awaitHead(t, head, 1)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-appended; err != nil {
		t.Fatal(err)
	}
	awaitHead(t, head, 2)
}

// TestAppendSnapshotAfterItsLock checks what the Watch's wait rests on: an
// append statement takes the listeners table's lock before the snapshot it
// looks for a Watch in. Here its lock waits behind another transaction's,
// a Watch's row is committed meanwhile, and the append, once it runs,
// sees the row and notifies.
func TestAppendSnapshotAfterItsLock(t *testing.T) {
	s := mustStore(t)
	ctx := ctxT(t)
	l := join(t, s, "room")
	if _, err := s.AppendOneStatement(ctx, l.ID, "one", "", "none"); err != nil {
		t.Fatal(err)
	}
	heard := rawListen(t, s)
	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "LOCK TABLE "+pgx.Identifier{s.Schema(), "listeners"}.Sanitize()+" IN SHARE MODE"); err != nil {
		t.Fatal(err)
	}
	appended := make(chan error, 1)
	go func() {
		_, err := s.AppendOneStatement(ctx, l.ID, "two", "", "none")
		appended <- err
	}()
	awaitAnyLockWait(t, s)
	if _, err := s.Pool().Exec(ctx, "INSERT INTO "+pgx.Identifier{s.Schema(), "watchers"}.Sanitize()+" (id, pid) VALUES ('other', pg_backend_pid())"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-appended; err != nil {
		t.Fatal(err)
	}
	if !heard(10 * time.Second) {
		t.Fatal("the append did not notify the Watch registered while it waited for its lock")
	}
}

// awaitAnyLockWait waits until a statement of s's schema waits for a
// lock.
func awaitAnyLockWait(t *testing.T, s *postgres.Store) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := lockWaiters(t, s)
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no statement waits for a lock")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// watchHead runs s.Watch until the test ends and returns a function that
// reports the highest head of listener id it reported.
func watchHead(t *testing.T, s *postgres.Store, id string) func() moitessier.Cursor {
	t.Helper()
	var (
		mu   sync.Mutex
		head moitessier.Cursor
	)
	wctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Watch(wctx, func(hs []moitessier.Head) {
			mu.Lock()
			defer mu.Unlock()
			for _, h := range hs {
				if h.Listener == id {
					head = max(head, h.Seq)
				}
			}
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return func() moitessier.Cursor {
		mu.Lock()
		defer mu.Unlock()
		return head
	}
}

// awaitHead waits until head reports want.
func awaitHead(t *testing.T, head func() moitessier.Cursor, want moitessier.Cursor) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for head() != want {
		if time.Now().After(deadline) {
			t.Fatalf("the Watch reported head %d, want %d", head(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// listenerAndTx makes a listener with one message on s, and begins a
// transaction that runs stmt and stays open until the test ends.
func listenerAndTx(t *testing.T, s *postgres.Store, stmt string) (string, pgx.Tx) {
	t.Helper()
	ctx := ctxT(t)
	l := join(t, s, "room")
	if _, _, err := s.Append(ctx, batch("room", map[string]string{l.ID: "one"})); err != nil {
		t.Fatal(err)
	}
	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	if _, err := tx.Exec(ctx, stmt); err != nil {
		t.Fatal(err)
	}
	return l.ID, tx
}

// watchHeads runs s.Watch until the test ends and returns a channel that
// is closed once the Watch reported listener id's head.
func watchHeads(t *testing.T, s *postgres.Store, id string) <-chan struct{} {
	t.Helper()
	reported := make(chan struct{})
	var once sync.Once
	wctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Watch(wctx, func(hs []moitessier.Head) {
			for _, h := range hs {
				if h.Listener == id {
					once.Do(func() { close(reported) })
				}
			}
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return reported
}

// TestNotifyPayloadsInBatches: an append to more listeners than
// NotifyBatch sends their new heads in payloads of at most NotifyBatch,
// each listener's once and no payload more, from Append and from
// MatchAppend alike, whether NotifyBatch divides the number of listeners
// (4) or not (5). A raw LISTEN connection, registered as a Watch of the
// schema, hears them.
func TestNotifyPayloadsInBatches(t *testing.T) {
	for _, n := range []int{4, 5} {
		t.Run(fmt.Sprint(n, " listeners"), func(t *testing.T) { notifyInBatches(t, n) })
	}
}

func notifyInBatches(t *testing.T, n int) {
	s := openStoreWith(t, postgres.Config{Schema: newSchema(t), NotifyBatch: 2})
	ctx := ctxT(t)
	var ids []string
	created := make(map[string]int64) // each listener's creation time, which its heads carry
	for i := range n {
		l := joinScopes(t, s, []string{"room", fmt.Sprint("other.", i)})
		ids = append(ids, l.ID)
		created[l.ID] = l.Created.UnixNano()
	}
	conn := rawWatcher(t, s)
	// heard reads the notifications of one append: every listener's new
	// head once, in payloads of at most 2, (n+1)/2 payloads in all.
	heard := func(head int64) {
		t.Helper()
		want := make(map[string]bool)
		for _, id := range ids {
			want[fmt.Sprint(id, " ", head, " ", created[id])] = true
		}
		payloads := 0
		for len(want) > 0 {
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			m, err := conn.WaitForNotification(wctx)
			cancel()
			if err != nil {
				t.Fatalf("%d heads not heard: %v", len(want), err)
			}
			payloads++
			// "id head,~created", for each head.
			items := strings.Split(m.Payload, ",")
			if len(items)%2 != 0 || len(items) > 4 {
				t.Fatalf("payload %q: want at most 2 heads (NotifyBatch), each with its creation time", m.Payload)
			}
			var parts []string
			for i := 0; i < len(items); i += 2 {
				parts = append(parts, items[i]+" "+strings.TrimPrefix(items[i+1], "~"))
			}
			for _, p := range parts {
				if !want[p] {
					t.Fatalf("payload %q: %q not expected (or twice)", m.Payload, p)
				}
				delete(want, p)
			}
		}
		if payloads != (n+1)/2 {
			t.Fatalf("%d payloads, want %d", payloads, (n+1)/2)
		}
	}
	texts := make(map[string]string)
	for _, id := range ids {
		texts[id] = "a"
	}
	if _, _, err := s.Append(ctx, batch("room", texts)); err != nil {
		t.Fatal(err)
	}
	heard(1)
	// The first look at a scope loads the store's index of pattern
	// scopes; MatchAppend then matches and appends in one statement
	// (once the answers the joins cached are forgotten).
	if _, _, err := s.MatchCached(ctx, "elsewhere"); err != nil {
		t.Fatal(err)
	}
	s.ForgetMatches()
	_, _, msgs, ok, err := s.MatchAppend(ctx, batch("room", nil), "b", moitessier.Selection{})
	if err != nil || !ok || len(msgs) != len(ids) {
		t.Fatalf("MatchAppend: %d messages, ok %v, %v; want %d", len(msgs), ok, err, len(ids))
	}
	heard(2)
	// A first dispatch to a scope of one listener (the smaller statement)
	// notifies its head.
	if _, _, msgs, ok, err := s.MatchAppend(ctx, batch("other.0", nil), "c", moitessier.Selection{}); err != nil || !ok || len(msgs) != 1 || msgs[0].Listener != ids[0] {
		t.Fatalf("MatchAppend(other.0): %+v, ok %v, %v; want one message to %s", msgs, ok, err, ids[0])
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	m, err := conn.WaitForNotification(wctx)
	cancel()
	if want := fmt.Sprint(ids[0], " 3,~", created[ids[0]]); err != nil || m.Payload != want {
		t.Fatalf("after MatchAppend(other.0): %v, %v; want payload %q", m, err, want)
	}
	// No payload follows the last append's.
	wctx, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if m, err := conn.WaitForNotification(wctx); err == nil {
		t.Fatalf("payload %q after the last append's", m.Payload)
	}
}

// TestReregisteredWatcherNotDeleted: a Watch that registers again (its
// connection was gone, so its row names a dead process) while another
// connection deletes the rows of gone watchers keeps its row. The
// deletion reads the row with the dead pid and waits for the
// registration's lock; when the registration commits, the row version it
// then rechecks names a live process, one that started after the
// deletion's transaction first read the server's processes (which it
// keeps reading until it ends), as a Watch's new connection can.
func TestReregisteredWatcherNotDeleted(t *testing.T) {
	s := mustStore(t)
	ctx := ctxT(t)
	table := pgx.Identifier{s.Schema(), "watchers"}.Sanitize()
	// No server process has this pid: it is above the largest a Linux
	// pid can be.
	if _, err := s.Pool().Exec(ctx, "INSERT INTO "+table+" (id, pid) VALUES ('w', 2147483647)"); err != nil {
		t.Fatal(err)
	}
	// The deleting transaction reads the server's processes first: it
	// keeps that view until it ends.
	del, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer del.Rollback(ctx)
	var delPID int
	if err := del.QueryRow(ctx, "SELECT pg_backend_pid() FROM pg_stat_activity LIMIT 1").Scan(&delPID); err != nil {
		t.Fatal(err)
	}
	// The Watch's new connection registers, and holds the row's lock.
	conn, err := pgx.Connect(ctx, testDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	reg, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Rollback(ctx)
	var livePID int
	if err := reg.QueryRow(ctx, "UPDATE "+table+" SET pid = pg_backend_pid() WHERE id = 'w' RETURNING pid").Scan(&livePID); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.DeleteGoneWatchers(ctx, del) }()
	awaitLockWait(t, s, delPID)
	if err := reg.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if err := del.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	var pid int
	if err := s.Pool().QueryRow(ctx, "SELECT pid FROM "+table+" WHERE id = 'w'").Scan(&pid); err != nil {
		t.Fatalf("the row of the Watch registered again: %v", err)
	}
	if pid != livePID {
		t.Fatalf("the row names pid %d, want %d", pid, livePID)
	}
}

// awaitLockWait waits until server process pid waits for a lock.
func awaitLockWait(t *testing.T, s *postgres.Store, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var waiting bool
		if err := s.Pool().QueryRow(ctxT(t), "SELECT coalesce(bool_or(wait_event_type = 'Lock'), false) FROM pg_stat_activity WHERE pid = $1", pid).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d is not waiting for a lock", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLongListenerIDs: Join takes listener IDs of up to MaxListenerID
// bytes and refuses longer ones, and ones that a notification could not
// carry (a comma, a space, a control character, invalid UTF-8), with
// ErrInvalidArgument, writing nothing. An append to 100 listeners of the
// longest IDs, with a Watch to notify, sends payloads under PostgreSQL's
// 8 000 bytes, whatever NotifyBatch asks (a larger one is taken as the
// most that fits).
func TestLongListenerIDs(t *testing.T) {
	s := openStoreWith(t, postgres.Config{Schema: newSchema(t), NotifyBatch: 1000})
	ctx := ctxT(t)
	now := time.Now()
	sub := moitessier.Subscriber{Person: "p", Joined: now, LeaseExpires: now.Add(time.Hour)}
	for _, id := range []string{"", strings.Repeat("x", postgres.MaxListenerID+1), "a,b", "a b", "a\nb", "a\x00b", "a\xffb"} {
		l := moitessier.ListenerInfo{ID: id, Type: moitessier.Shared, Person: "p", Scopes: []string{"room"}, Created: now}
		if _, _, _, err := s.Join(ctx, l, sub, moitessier.Quota{}); !errors.Is(err, moitessier.ErrInvalidArgument) {
			t.Fatalf("Join(ID %q) = %v, want ErrInvalidArgument", id, err)
		}
	}
	if ls, err := s.Match(ctx, "room"); err != nil || len(ls) != 0 {
		t.Fatalf("Match(room) = %v, %v; want nothing stored", ls, err)
	}
	conn := rawWatcher(t, s)
	texts := make(map[string]string)
	for i := range 100 {
		id := fmt.Sprintf("%0*d", postgres.MaxListenerID, i)
		l := moitessier.ListenerInfo{ID: id, Type: moitessier.Shared, Person: "p", Scopes: []string{"room"}, Created: now}
		if _, _, _, err := s.Join(ctx, l, sub, moitessier.Quota{}); err != nil {
			t.Fatalf("Join(ID of %d bytes): %v", len(id), err)
		}
		texts[id] = "a"
	}
	if _, _, err := s.Append(ctx, batch("room", texts)); err != nil {
		t.Fatalf("Append to 100 listeners of %d-byte IDs: %v", postgres.MaxListenerID, err)
	}
	heard := 0
	for heard < 100 {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		m, err := conn.WaitForNotification(wctx)
		cancel()
		if err != nil {
			t.Fatalf("%d of 100 heads heard: %v", heard, err)
		}
		if len(m.Payload) >= 8000 {
			t.Fatalf("payload of %d bytes", len(m.Payload))
		}
		heard += strings.Count(m.Payload, ",~") // one per head
	}
}

// rawWatcher returns a connection that LISTENs on s's channel, registered
// as a Watch of its schema, so that appends notify it; it is closed when
// the test ends.
func rawWatcher(t *testing.T, s *postgres.Store) *pgx.Conn {
	t.Helper()
	ctx := ctxT(t)
	conn, err := pgx.Connect(ctx, testDSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.Channel()}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO "+pgx.Identifier{s.Schema(), "watchers"}.Sanitize()+" (id, pid) VALUES ('raw', pg_backend_pid())"); err != nil {
		t.Fatal(err)
	}
	return conn
}
