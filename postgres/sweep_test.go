package postgres_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/postgres"
)

// doomedMessages is how many messages trimmingSweep gives its listener:
// enough that deleting them one per statement is still under way when the
// test joins.
const doomedMessages = 3000

// doomedListener stores listener id of scope "room" whose one subscriber,
// "old", has a lease that ended an hour before now, and returns both.
func doomedListener(t *testing.T, s *postgres.Store, id string, now time.Time) (moitessier.ListenerInfo, moitessier.Subscriber) {
	t.Helper()
	l := moitessier.ListenerInfo{ID: id, Type: moitessier.Shared, Person: "p", Scopes: []string{"room"}, Created: now}
	old := moitessier.Subscriber{Person: "old", Joined: now.Add(-2 * time.Hour), LeaseExpires: now.Add(-time.Hour), Cursor: moitessier.Resume}
	if _, _, _, err := s.Join(ctxT(t), l, old, moitessier.Quota{}); err != nil {
		t.Fatal(err)
	}
	return l, old
}

// trimmingSweep stores listener "L" of scope "room", whose one subscriber
// ("old") has a lease that ended an hour ago, with doomedMessages messages,
// and starts a Sweep that deletes them one per statement. It returns once
// the sweep has deleted some of them; the function it returns waits for
// the sweep's end.
func trimmingSweep(t *testing.T, s *postgres.Store) (moitessier.ListenerInfo, func()) {
	t.Helper()
	ctx := ctxT(t)
	now := time.Now()
	l, _ := doomedListener(t, s, "L", now)
	b := &moitessier.Batch{Dispatch: "d0", Scope: "room", Sender: "x", Created: now}
	for i := range doomedMessages {
		b.Entries = append(b.Entries, moitessier.Entry{Listener: l.ID, Text: fmt.Sprint(i)})
	}
	if _, _, err := s.Append(ctx, b); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := s.Sweep(context.Background(), moitessier.SweepParams{Now: time.Now(), BatchSize: 1}); err != nil {
			t.Error(err)
		}
	}()
	for storedMessages(t, s, l.ID) == doomedMessages {
		select {
		case <-done:
			t.Fatal("the sweep ended before it deleted a message")
		case <-time.After(5 * time.Millisecond):
		}
	}
	return l, func() { <-done }
}

// storedMessages counts the messages stored for listener id.
func storedMessages(t *testing.T, s *postgres.Store, id string) int {
	t.Helper()
	var n int
	q := "SELECT count(*) FROM " + pgx.Identifier{s.Schema(), "messages"}.Sanitize() + " WHERE listener = $1"
	if err := s.Pool().QueryRow(ctxT(t), q, id).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSweepKeepsMessagesOfListenerJoinedDuringSweep: a subscriber that
// joins a listener while a sweep deletes its messages (its only other
// subscriber's lease having ended) keeps the listener, and what is
// dispatched to it after the join is not deleted.
func TestSweepKeepsMessagesOfListenerJoinedDuringSweep(t *testing.T) {
	s := mustStore(t)
	ctx := ctxT(t)
	l, wait := trimmingSweep(t, s)
	now := time.Now()
	_, sub, _, err := s.Join(ctx, l, moitessier.Subscriber{Person: "new", Joined: now, LeaseExpires: now.Add(time.Hour), Cursor: moitessier.Resume}, moitessier.Quota{})
	if err != nil {
		t.Fatal(err)
	}
	msgs, _, err := s.Append(ctx, &moitessier.Batch{Dispatch: "d1", Scope: "room", Sender: "x", Created: time.Now(),
		Entries: []moitessier.Entry{{Listener: l.ID, Text: "for new"}}})
	if err != nil || len(msgs) != 1 {
		t.Fatalf("Append: %v, %v", msgs, err)
	}
	wait()
	if _, err := s.Listener(ctx, l.ID); err != nil {
		t.Fatalf("the listener joined during the sweep: %v", err)
	}
	got, err := s.Read(ctx, l.ID, sub.Cursor, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Text != "for new" {
		t.Fatalf("after the new subscriber's cursor %d: %v, want message %d", sub.Cursor, got, msgs[0].Seq)
	}
}

// TestSweepKeepsUnreadMessagesOfRenewedSubscriber: a subscriber whose
// lease had ended and that renews it while a sweep deletes its listener's
// messages keeps its listener and the messages still there when it
// renewed (all but the one batch that may be under way then).
func TestSweepKeepsUnreadMessagesOfRenewedSubscriber(t *testing.T) {
	s := mustStore(t)
	ctx := ctxT(t)
	l, wait := trimmingSweep(t, s)
	now := time.Now()
	if _, _, _, err := s.Join(ctx, l, moitessier.Subscriber{Person: "old", Joined: now, LeaseExpires: now.Add(time.Hour), Cursor: moitessier.Resume}, moitessier.Quota{}); err != nil {
		t.Fatal(err)
	}
	left := storedMessages(t, s, l.ID)
	wait()
	if _, err := s.Listener(ctx, l.ID); err != nil {
		t.Fatalf("the listener of the renewed subscriber: %v", err)
	}
	if n := storedMessages(t, s, l.ID); n < left-1 {
		t.Fatalf("%d messages after the sweep, %d when the subscriber renewed its lease", n, left)
	}
}

// TestSweepKeepsMessagesAppendedDuringJoin: a subscriber whose lease had
// ended renews it; a message is appended after its join read the
// listener's head and before the join committed. A sweep that runs in
// between must not take the listener for doomed (its one subscriber's
// renewal not yet visible) and delete that message, which the renewed
// subscriber is to read.
//
// It runs on a store whose DSN asks for REPEATABLE READ too: the store's
// connections run at READ COMMITTED all the same, where the sweep's check,
// a statement of its own, sees what committed while it waited for the
// join.
func TestSweepKeepsMessagesAppendedDuringJoin(t *testing.T) {
	t.Run("default", func(t *testing.T) { sweepDuringJoin(t, mustStore(t)) })
	t.Run("repeatable read in the DSN", func(t *testing.T) {
		s, err := postgres.New(ctxT(t), postgres.Config{DSN: testDSNWith("default_transaction_isolation=repeatable%20read"), Schema: newSchema(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		sweepDuringJoin(t, s)
	})
}

func sweepDuringJoin(t *testing.T, s *postgres.Store) {
	ctx := ctxT(t)
	now := time.Now()
	l, old := doomedListener(t, s, "L", now)
	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	old.LeaseExpires = now.Add(time.Hour)
	// The join reads the head, 0: nothing was appended yet.
	if err := s.JoinTx(ctx, tx, l, old); err != nil {
		t.Fatal(err)
	}
	msgs, _, err := s.Append(ctx, &moitessier.Batch{Dispatch: "d1", Scope: "room", Sender: "x", Created: time.Now(),
		Entries: []moitessier.Entry{{Listener: l.ID, Text: "after the join read the head"}}})
	if err != nil || len(msgs) != 1 {
		t.Fatalf("Append: %v, %v", msgs, err)
	}
	swept := make(chan error, 1)
	go func() {
		_, err := s.Sweep(context.Background(), moitessier.SweepParams{Now: time.Now(), BatchSize: 10})
		swept <- err
	}()
	// Give the sweep time to take the listener for doomed, if it would.
	// (It may then wait for the join's row lock on the subscriber, to
	// expire it, or end.)
	var sweepErr error
	ended := false
	select {
	case sweepErr = <-swept:
		ended = true
	case <-time.After(300 * time.Millisecond):
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if !ended {
		sweepErr = <-swept
	}
	if sweepErr != nil {
		t.Fatal(sweepErr)
	}
	got, err := s.Read(ctx, l.ID, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Seq != msgs[0].Seq {
		t.Fatalf("after the head the join read (0): %v, want message %d", got, msgs[0].Seq)
	}
}

// TestSweepTrimsOthersDuringJoin: while a join of one doomed listener is
// under way (it holds that listener's trim lock), the sweep trims the
// messages of the other doomed listeners without waiting for it, and
// leaves the joined one's.
func TestSweepTrimsOthersDuringJoin(t *testing.T) {
	s := mustStore(t)
	ctx := ctxT(t)
	now := time.Now()
	l1, old := doomedListener(t, s, "L1", now)
	doomedListener(t, s, "L2", now)
	if _, _, err := s.Append(ctx, batch("room", map[string]string{"L1": "a", "L2": "a"})); err != nil {
		t.Fatal(err)
	}
	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	renewed := old
	renewed.LeaseExpires = now.Add(time.Hour)
	if err := s.JoinTx(ctx, tx, l1, renewed); err != nil {
		t.Fatal(err)
	}
	swept := make(chan error, 1)
	go func() {
		_, err := s.Sweep(context.Background(), moitessier.SweepParams{Now: time.Now(), BatchSize: 10})
		swept <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); storedMessages(t, s, "L2") > 0; {
		if time.Now().After(deadline) {
			t.Fatal("the sweep did not trim L2 while a join of L1 was under way")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-swept; err != nil {
		t.Fatal(err)
	}
	if n := storedMessages(t, s, "L1"); n != 1 {
		t.Fatalf("L1, renewed by the join, has %d messages, want 1", n)
	}
}
