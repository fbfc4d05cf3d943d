package clouddatastore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/clouddatastore"
)

// TestIdleCostsNoRead: listeners waiting in a hub whose catch-up runs
// every 50 ms cost no entity read once the catch-up margin has passed:
// only the two keys-only queries per catch-up, whatever the number of
// listeners.
func TestIdleCostsNoRead(t *testing.T) {
	s := mustStore(t, func(c *clouddatastore.Config) { c.CatchUpMargin = 500 * time.Millisecond; c.NoPubSub = true })
	hub := newHub(t, s, moitessier.Options{CatchUpInterval: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const n = 5
	done := make(chan struct{}, n)
	for i := range n {
		l, err := hub.NewListener(ctxT(t), moitessier.Conditions{Person: "p", Type: moitessier.Private, Scope: "idle", Client: string(rune('a' + i))})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			_, _ = l.ListenUntil(ctx, nil, func(context.Context, []moitessier.Message) error { return nil }, 0, 0, 0)
			done <- struct{}{}
		}()
	}
	for hub.Stats().Listening < n {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(2 * time.Second) // the first catch-up reads each listener; then the margin passes
	before := s.Stats()
	time.Sleep(time.Second)
	d := s.Stats().Sub(before)
	if d.Found+d.Missing+d.Entities != 0 || d.Writes != 0 || d.Queries < 4 {
		t.Fatalf("idle for 1 s: %+v; want keys-only queries only", d)
	}
	if got, want := d.Reads(), d.Queries; got != want {
		t.Fatalf("idle reads %d, want one per keys-only query, %d", got, want)
	}
	cancel()
	for range n {
		<-done
	}
}

// TestDeletedElsewhere: a listener deleted through another store (another
// process) ends the ListenUntil calls on it in this one with ErrClosed,
// found by the catch-up's tombstone query, with no wake-up.
func TestDeletedElsewhere(t *testing.T) {
	ns := newNamespace(t)
	noPubSub := func(c *clouddatastore.Config) { c.NoPubSub = true; c.CatchUpMargin = time.Second }
	hubA := newHub(t, openStore(t, ns, noPubSub), moitessier.Options{CatchUpInterval: 50 * time.Millisecond})
	hubB := newHub(t, openStore(t, ns, noPubSub), moitessier.Options{})
	l, err := hubA.NewListener(ctxT(t), moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "gone"})
	if err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() {
		_, err := l.ListenUntil(ctxT(t), nil, func(context.Context, []moitessier.Message) error { return nil }, 0, 0, time.Minute)
		res <- err
	}()
	for hubA.Stats().Listening < 1 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // the catch-up knows the listener
	other, err := hubB.Open(ctxT(t), l.ID(), "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-res:
		if !errors.Is(err, moitessier.ErrClosed) {
			t.Fatalf("ListenUntil on a listener deleted elsewhere: %v, want ErrClosed", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("ListenUntil still running 20 s after its listener was deleted elsewhere")
	}
}
