package moitessier_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/memstore"
)

// slowRead is a memory store whose Read, once armed, says that it began
// and waits for release.
type slowRead struct {
	moitessier.Store
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (s *slowRead) Read(ctx context.Context, id string, after moitessier.Cursor, limit int) ([]moitessier.Message, error) {
	if s.armed.CompareAndSwap(true, false) {
		close(s.entered)
		<-s.release
	}
	return s.Store.Read(ctx, id, after, limit)
}

// TestListenClosedDuringReadKeepsCursor: ListenUntil calls that are
// reading the store, or waiting for another subscriber's read, when the
// hub closes return ErrClosed with their cursor where it was: they
// delivered nothing, and a client that resumes from the cursor returned
// (as the long-poll handler's clients do) must miss nothing.
func TestListenClosedDuringReadKeepsCursor(t *testing.T) {
	ctx := context.Background()
	st := &slowRead{Store: memstore.New(), entered: make(chan struct{}), release: make(chan struct{})}
	hub, err := moitessier.New(st, moitessier.Options{GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	var ls [2]*moitessier.Listener
	for i, p := range []string{"x", "y"} { // two subscribers of one Shared listener
		if ls[i], err = hub.NewListener(ctx, moitessier.Conditions{Person: p, Type: moitessier.Shared, Scope: "room"}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 {
		if _, err := hub.Dispatch(ctx, "s", "room", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	type result struct {
		cur moitessier.Cursor
		n   int
		err error
	}
	results := make(chan result, 2)
	listen := func(l *moitessier.Listener) {
		n := 0
		cur, err := l.ListenUntil(ctx, nil, func(_ context.Context, msgs []moitessier.Message) error {
			n += len(msgs)
			return nil
		}, 0, 0, 0)
		results <- result{cur, n, err}
	}
	st.armed.Store(true)
	go listen(ls[0])
	<-st.entered // x reads the store, holding the cache's fill lock
	go listen(ls[1])
	for hub.Stats().Listening < 2 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // y waits for x's read
	if err := hub.Close(); err != nil {
		t.Fatal(err)
	}
	close(st.release)
	for range 2 {
		r := <-results
		if !errors.Is(r.err, moitessier.ErrClosed) {
			t.Errorf("ListenUntil = %d, %v; want ErrClosed", r.cur, r.err)
		}
		if r.cur != moitessier.Cursor(r.n) {
			t.Errorf("ListenUntil returned cursor %d having delivered %d messages from 0", r.cur, r.n)
		}
	}
}

// TestBehindSubscriberDoesNotStallOthers: a subscriber far behind reads
// its backlog from the store into the listener's cache, and its client
// stalls on the first batch; a message dispatched then still reaches at
// once the subscriber that waits at the head (the memory store has no
// notifications or catch-up to make up for a message held back).
func TestBehindSubscriberDoesNotStallOthers(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hub := memHub(t, moitessier.Options{})
	behind, err := hub.NewListener(ctx, moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "room"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		if _, err := hub.Dispatch(ctx, "s", "room", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	upToDate, err := hub.NewListener(ctx, moitessier.Conditions{Person: "b", Type: moitessier.Shared, Scope: "room"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}, 2)
	got := make(chan moitessier.Message, 16)
	go func() {
		defer func() { done <- struct{}{} }()
		_, _ = upToDate.ListenUntil(ctx, nil, func(_ context.Context, msgs []moitessier.Message) error {
			for _, m := range msgs {
				got <- m
			}
			return nil
		}, moitessier.Resume, 0, 0)
	}()
	for hub.Stats().Listening < 1 {
		time.Sleep(time.Millisecond)
	}
	first := make(chan struct{})
	go func() {
		defer func() { done <- struct{}{} }()
		_, _ = behind.ListenUntil(ctx, nil, func(ctx context.Context, msgs []moitessier.Message) error {
			close(first)
			<-ctx.Done() // a stalled client
			return ctx.Err()
		}, 0, 0, 0)
	}()
	<-first
	d, err := hub.Dispatch(ctx, "s", "room", "new")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m.Seq != d.Messages[0].Seq {
			t.Errorf("the subscriber at the head got seq %d, want %d", m.Seq, d.Messages[0].Seq)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("the subscriber waiting at the head was not woken for seq %d", d.Messages[0].Seq)
	}
	cancel()
	<-done
	<-done
}

// slowAppend is a memory store whose Append, once armed, commits and then
// says so and waits for release before it returns: a dispatcher
// descheduled between its commit and its publish.
type slowAppend struct {
	moitessier.Store
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (s *slowAppend) Append(ctx context.Context, b *moitessier.Batch) ([]moitessier.Message, bool, error) {
	msgs, replayed, err := s.Store.Append(ctx, b)
	if s.armed.CompareAndSwap(true, false) {
		close(s.entered)
		<-s.release
	}
	return msgs, replayed, err
}

// TestLatePublishOfDeletedIncarnation: a dispatch that commits a message
// to a listener and publishes it only after the listener was deleted and
// created again under its ID does not hand the old message, numbered as
// the old incarnation numbered it, to the new incarnation's subscribers
// in place of the new one's message of that number.
func TestLatePublishOfDeletedIncarnation(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := &slowAppend{Store: memstore.New(), entered: make(chan struct{}), release: make(chan struct{})}
	hub, err := moitessier.New(st, moitessier.Options{GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	cond := moitessier.Conditions{Person: "p", Type: moitessier.Shared, Scope: "room"}
	l, err := hub.NewListener(ctx, cond)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		if _, err := hub.Dispatch(ctx, "s", "room", fmt.Sprint("old ", i)); err != nil {
			t.Fatal(err)
		}
	}
	st.armed.Store(true)
	late := make(chan error, 1)
	go func() {
		_, err := hub.Dispatch(ctx, "s", "room", "old 3")
		late <- err
	}()
	<-st.entered // "old 3" is committed as message 3, not yet published
	if err := hub.Leave(ctx, l.ID(), "p", ""); err != nil {
		t.Fatal(err)
	}
	l2, err := hub.NewListener(ctx, cond)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan moitessier.Message, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = l2.ListenUntil(ctx, nil, func(_ context.Context, msgs []moitessier.Message) error {
			for _, m := range msgs {
				got <- m
			}
			return nil
		}, moitessier.Resume, 0, 0)
	}()
	for hub.Stats().Listening < 1 {
		time.Sleep(time.Millisecond)
	}
	close(st.release)
	if err := <-late; err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 4; i++ {
		if _, err := hub.Dispatch(ctx, "s", "room", fmt.Sprint("new ", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 4; i++ {
		select {
		case m := <-got:
			if want := fmt.Sprint("new ", i); m.Seq != moitessier.Cursor(i) || m.Text != want {
				t.Errorf("message %d: seq %d %q, want seq %d %q", i, m.Seq, m.Text, i, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("message %d not delivered", i)
		}
	}
	cancel()
	<-done
}

// TestListenSkipsRemovedMessages: a subscriber whose messages retention
// removed moves its cursor past them, delivering nothing, and is then
// handed the next message stored.
func TestListenSkipsRemovedMessages(t *testing.T) {
	ctx := context.Background()
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	hub := memHub(t, moitessier.Options{Retention: moitessier.Retention{MaxAge: time.Hour}, Now: now})
	l, err := hub.NewListener(ctx, moitessier.Conditions{Person: "p", Type: moitessier.Shared, Scope: "room"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := hub.Dispatch(ctx, "s", "room", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	clock.Add(int64(2 * time.Hour))
	if res, err := hub.GC(ctx); err != nil || res.Messages != 10 {
		t.Fatalf("GC = %+v, %v; want the 10 messages removed", res, err)
	}
	var got []moitessier.Message
	respond := func(_ context.Context, msgs []moitessier.Message) error {
		got = append(got, msgs...)
		return nil
	}
	cur, err := l.ListenUntil(ctx, nil, respond, 0, 0, 100*time.Millisecond)
	if err != nil || cur != 10 || len(got) > 0 {
		t.Fatalf("ListenUntil from 0 = %d, %v, delivering %d messages; want 10, nil, none", cur, err, len(got))
	}
	if _, err := hub.Dispatch(ctx, "s", "room", "after"); err != nil {
		t.Fatal(err)
	}
	if cur, err = l.ListenUntil(ctx, nil, respond, cur, 0, 100*time.Millisecond); err != nil || cur != 11 {
		t.Fatalf("ListenUntil from 10 = %d, %v; want 11", cur, err)
	}
	if len(got) != 1 || got[0].Text != "after" {
		t.Fatalf("delivered %v, want the message stored after the removed ones", got)
	}
}
