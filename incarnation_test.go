package moitessier_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/memstore"
)

// slowHeads is a memory store that is a Watcher; once armed, Heads waits
// for release after it has read the heads.
type slowHeads struct {
	moitessier.Store
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (s *slowHeads) Watch(ctx context.Context, fn func([]moitessier.Head)) error {
	<-ctx.Done()
	return ctx.Err()
}

func (s *slowHeads) Heads(ctx context.Context, ids []string) ([]moitessier.Head, error) {
	var hs []moitessier.Head
	for _, id := range ids {
		info, err := s.Store.Listener(ctx, id)
		if errors.Is(err, moitessier.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		hs = append(hs, moitessier.Head{Listener: id, Seq: info.Head, Created: info.Created})
	}
	if s.armed.CompareAndSwap(true, false) {
		close(s.entered)
		<-s.release
	}
	return hs, nil
}

// TestStaleCatchUpKeepsCurrent: a catch-up whose Heads answer was read
// before the listener was deleted and made again (here, in this very hub)
// does not end the ListenUntil of the new incarnation, which then gets
// what is dispatched to it.
func TestStaleCatchUpKeepsCurrent(t *testing.T) {
	ctx := context.Background()
	st := &slowHeads{Store: memstore.New(), entered: make(chan struct{}), release: make(chan struct{})}
	hub, err := moitessier.New(st, moitessier.Options{GCInterval: -1, CatchUpInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
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
	st.armed.Store(true)
	<-st.entered // a catch-up read the old incarnation's head
	cancel1()
	<-done1
	if err := l1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond)
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
	close(st.release)
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
