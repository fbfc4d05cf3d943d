package moitessier_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/memstore"
)

// TestStaleCatchUpKeepsCurrent: a catch-up whose Heads answer was read
// before the listener was deleted and made again in this very hub (naming
// the old incarnation), or between the deletion and the re-creation
// (missing it), does not end the ListenUntil of the new incarnation, whose
// cache was made after the answer was read, and which then gets what is
// dispatched to it.
func TestStaleCatchUpKeepsCurrent(t *testing.T) {
	for _, tc := range []struct {
		name        string
		readDeleted bool
	}{{"answer names the old incarnation", false}, {"answer misses the listener", true}} {
		t.Run(tc.name, func(t *testing.T) { staleCatchUp(t, tc.readDeleted) })
	}
}

func staleCatchUp(t *testing.T, readDeleted bool) {
	ctx := context.Background()
	st := &headsStore{Store: memstore.New()}
	hub := memHubOn(t, st, moitessier.Options{CatchUpInterval: 5 * time.Millisecond})
	c := moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "room"}
	l1, err := hub.NewListener(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	ctx1, cancel1 := context.WithCancel(ctx)
	done1 := make(chan error, 1)
	go func() {
		_, err := l1.ListenUntil(ctx1, nil, func(context.Context, []moitessier.Message) error { return nil }, 0, 0, 0)
		done1 <- err
	}()
	for hub.Stats().Listening < 1 {
		time.Sleep(time.Millisecond)
	}
	br, rg, ar, ag := make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{})
	st.mu.Lock()
	st.beforeRead, st.readGate, st.afterRead, st.applyGate = br, rg, ar, ag
	st.mu.Unlock()
	<-br // a catch-up took the caches (the listener's among them)
	read := func() { close(rg); <-ar }
	if !readDeleted {
		read()
	}
	cancel1()
	<-done1
	if err := l1.Close(ctx); err != nil { // deleted
		t.Fatal(err)
	}
	if readDeleted {
		read()
	}
	time.Sleep(2 * time.Millisecond) // a creation time of its own
	l2, err := hub.NewListener(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if l2.ID() != l1.ID() {
		t.Fatal("another ID")
	}
	done2 := make(chan error, 1)
	got := make(chan []moitessier.Message, 1)
	go func() {
		_, err := l2.ListenUntil(ctx, nil, func(_ context.Context, m []moitessier.Message) error { got <- m; return errors.New("got") }, 0, 0, 5*time.Second)
		done2 <- err
	}()
	for hub.Stats().Listening < 1 {
		time.Sleep(time.Millisecond)
	}
	close(ag) // the stale answer is applied
	time.Sleep(50 * time.Millisecond)
	select {
	case err := <-done2:
		t.Fatalf("the current incarnation's ListenUntil ended: %v", err)
	default:
	}
	if _, err := hub.Dispatch(ctx, "s", "room", "hello"); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if len(m) != 1 || m[0].Text != "hello" {
			t.Fatalf("delivered %+v, want hello", m)
		}
	case err := <-done2:
		t.Fatalf("ListenUntil ended: %v", err)
	}
}

// TestOldCacheIgnoresNewIncarnation: a ListenUntil on a listener deleted
// elsewhere and made again is not handed the new incarnation's messages
// that its own hub dispatches (its cache, bound to the old one, ignores
// them).
func TestOldCacheIgnoresNewIncarnation(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := memstore.New()
	hubA, err := moitessier.New(st, moitessier.Options{GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer hubA.Close()
	hubB, err := moitessier.New(st, moitessier.Options{GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer hubB.Close()
	a, err := hubA.NewListener(ctx, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "room"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hubA.Dispatch(ctx, "s", "room", "old"); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var texts []string
	go a.ListenUntil(ctx, nil, func(_ context.Context, m []moitessier.Message) error {
		mu.Lock()
		defer mu.Unlock()
		for _, x := range m {
			texts = append(texts, x.Text)
		}
		return nil
	}, 0, 0, 0)
	for {
		mu.Lock()
		n := len(texts)
		mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := hubB.Leave(ctx, a.ID(), "alice", ""); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond)
	if _, err := hubB.NewListener(ctx, moitessier.Conditions{Person: "bob", Type: moitessier.Shared, Scope: "room"}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := hubA.Dispatch(ctx, "s", "room", "new"+string(rune('0'+i))); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(texts) > 1 {
		t.Fatalf("the deleted incarnation's subscriber got the new one's messages: %q", texts)
	}
}
