package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/postgres"
)

func newHub(tb testing.TB, s moitessier.Store, o moitessier.Options) *moitessier.Hub {
	tb.Helper()
	if o.GCInterval == 0 {
		o.GCInterval = -1
	}
	h, err := moitessier.New(s, o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = h.Close() })
	return h
}

// stream runs ListenUntil on l from cursor 0 and sends what it receives.
func stream(tb testing.TB, l *moitessier.Listener) <-chan moitessier.Message {
	tb.Helper()
	ch := make(chan moitessier.Message, 1024)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = l.ListenUntil(ctx, nil, func(_ context.Context, msgs []moitessier.Message) error {
			for _, m := range msgs {
				ch <- m
			}
			return nil
		}, 0, 0, 0)
	}()
	tb.Cleanup(func() { cancel(); <-done })
	return ch
}

func TestDispatchTx(t *testing.T) {
	s := mustStore(t)
	ctx := ctxT(t)
	hub := newHub(t, s, moitessier.Options{})
	l, err := hub.NewListener(ctx, moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	got := stream(t, l)

	t.Run("Commit", func(t *testing.T) {
		tx, err := s.Pool().Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		msgs, err := postgres.DispatchTx(ctx, hub, s, tx, "a", "orders", "order 1 paid")
		if err != nil || len(msgs) != 1 || msgs[0].Seq != 1 {
			t.Fatalf("DispatchTx = %+v, %v", msgs, err)
		}
		if rd, err := l.Messages(ctx, 0, 10); err != nil || len(rd) != 0 {
			t.Fatalf("before commit, Messages = %+v, %v", rd, err)
		}
		select {
		case m := <-got:
			t.Fatalf("delivered before commit: %+v", m)
		case <-time.After(200 * time.Millisecond):
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-got:
			if m.Text != "order 1 paid" || m.Seq != 1 {
				t.Fatalf("delivered %+v", m)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("not delivered 5s after commit")
		}
	})
	t.Run("Rollback", func(t *testing.T) {
		tx, err := s.Pool().Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := postgres.DispatchTx(ctx, hub, s, tx, "a", "orders", "order 2 paid"); err != nil {
			t.Fatal(err)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		d, err := hub.Dispatch(ctx, "a", "orders", "order 3 paid")
		if err != nil || len(d.Messages) != 1 || d.Messages[0].Seq != 2 {
			t.Fatalf("Dispatch after rollback = %+v, %v; want seq 2", d, err)
		}
		select {
		case m := <-got:
			if m.Text != "order 3 paid" || m.Seq != 2 {
				t.Fatalf("delivered %+v, want order 3 at seq 2", m)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("not delivered")
		}
	})
	t.Run("Idempotent", func(t *testing.T) {
		var seqs []moitessier.Cursor
		for range 2 {
			tx, err := s.Pool().Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			msgs, err := postgres.DispatchTx(ctx, hub, s, tx, "a", "orders", "order 4 paid", moitessier.IdempotencyKey("order-4"))
			if err != nil || len(msgs) != 1 {
				t.Fatalf("DispatchTx = %+v, %v", msgs, err)
			}
			seqs = append(seqs, msgs[0].Seq)
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if seqs[0] != 3 || seqs[1] != 3 {
			t.Fatalf("keyed DispatchTx twice gave seqs %v, want [3 3]", seqs)
		}
	})
	t.Run("Invalid", func(t *testing.T) {
		tx, err := s.Pool().Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if _, err := postgres.DispatchTx(ctx, hub, s, tx, "a", "orders.*", "x"); !errors.Is(err, moitessier.ErrInvalidScope) {
			t.Fatalf("DispatchTx to a pattern: %v", err)
		}
	})
}

// TestTwoHubs: two hubs, each with its own store and pool on one schema, as
// two processes would be. A listener of one receives what the other
// dispatches, woken by NOTIFY (the catch-up poll is set to an hour), in
// order; the latency is logged.
func TestTwoHubs(t *testing.T) {
	schema := newSchema(t)
	sa, sb := openStore(t, schema), openStore(t, schema)
	ctx := ctxT(t)
	ha := newHub(t, sa, moitessier.Options{CatchUpInterval: time.Hour})
	hb := newHub(t, sb, moitessier.Options{CatchUpInterval: time.Hour})
	la, err := ha.NewListener(ctx, moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "chat.*"})
	if err != nil {
		t.Fatal(err)
	}
	got := stream(t, la)
	time.Sleep(200 * time.Millisecond) // both hubs' Watch connections LISTEN
	const n = 200
	lat := make([]time.Duration, 0, n)
	for i := range n {
		start := time.Now()
		if _, err := hb.Dispatch(ctx, "b", "chat.1", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-got:
			lat = append(lat, time.Since(start))
			if m.Seq != moitessier.Cursor(i+1) || m.Text != fmt.Sprint(i) {
				t.Fatalf("received %+v, want seq %d", m, i+1)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("message %d not received in 5s", i)
		}
	}
	slices.Sort(lat)
	t.Logf("dispatch in hub B to respond in hub A: p50 %v, p99 %v, max %v", lat[n/2], lat[n*99/100], lat[n-1])

	// Concurrent dispatchers in both hubs: every message once, in order.
	var wg sync.WaitGroup
	for _, h := range []*moitessier.Hub{ha, hb} {
		for w := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 50 {
					if _, err := h.Dispatch(ctx, "x", "chat.2", fmt.Sprint(w, ":", i)); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	for i := range 200 {
		select {
		case m := <-got:
			if m.Seq != moitessier.Cursor(n+i+1) {
				t.Fatalf("received seq %d, want %d", m.Seq, n+i+1)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("message %d of the concurrent phase not received", i)
		}
	}
}

// TestCachedMatchSeesOtherWriters: a listener written straight into the
// tables, as a process running an earlier version of this package would
// write it (no knowledge of scope_versions), is reached by the next
// dispatch of a hub whose match for the scope is cached: the trigger on
// listener_scopes keeps the scope's version whoever writes.
func TestCachedMatchSeesOtherWriters(t *testing.T) {
	s := mustStore(t)
	ctx := ctxT(t)
	hub := newHub(t, s, moitessier.Options{})
	first, err := hub.NewListener(ctx, moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "legacy"})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second is answered from the cache
		if d, err := hub.Dispatch(ctx, "a", "legacy", "x"); err != nil || len(d.Reached) != 1 {
			t.Fatalf("dispatch: %v %v", d.Reached, err)
		}
	}
	q := pgx.Identifier{s.Schema()}.Sanitize()
	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	for _, stmt := range []string{
		`INSERT INTO ` + q + `.listeners (id, type, person, client, scopes, created_ns) VALUES ('hlegacy', 1002, 'b', '', '{legacy}', 1)`,
		`INSERT INTO ` + q + `.listener_scopes (listener, scope, wild) VALUES ('hlegacy', 'legacy', false)`,
		`INSERT INTO ` + q + `.subscribers (listener, person, client, cursor, joined_ns, lease_ns) VALUES ('hlegacy', 'b', '', 0, 1, 9000000000000000000)`,
	} {
		if _, err := tx.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	d, err := hub.Dispatch(ctx, "a", "legacy", "y")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(d.Reached)
	if !slices.Equal(d.Reached, []string{"hlegacy", first.ID()}) {
		t.Fatalf("reached %v, want the listener written by another writer too", d.Reached)
	}
}
