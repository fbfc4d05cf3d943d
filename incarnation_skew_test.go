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

// headsStore: a shared memory store that is a Watcher (catch-up only).
type headsStore struct {
	moitessier.Store
	mu         sync.Mutex
	beforeRead chan struct{} // if set, Heads signals then waits on readGate before reading
	readGate   chan struct{}
	afterRead  chan struct{} // if set, Heads signals then waits on applyGate after reading
	applyGate  chan struct{}
}

func (s *headsStore) Watch(ctx context.Context, fn func([]moitessier.Head)) error {
	<-ctx.Done()
	return ctx.Err()
}

func (s *headsStore) Heads(ctx context.Context, ids []string) ([]moitessier.Head, error) {
	s.mu.Lock()
	br, rg, ar, ag := s.beforeRead, s.readGate, s.afterRead, s.applyGate
	s.beforeRead, s.afterRead = nil, nil
	s.mu.Unlock()
	if br != nil {
		close(br)
		<-rg
	}
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
	if ar != nil {
		close(ar)
		<-ag
	}
	return hs, nil
}

// TestRecreateElsewhereSkewedClocks: hub B's clock is 1 s behind hub
// A's (two machines). B deletes and makes again a listener on which a
// ListenUntil of A runs: A's catch-up ends it with ErrClosed, as it does
// with synchronised clocks (storetest RecreateElsewhere), rather than read
// on in the new incarnation's messages: incarnations are told apart, not
// ordered by their creators' clocks.
func TestRecreateElsewhereSkewedClocks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st := &headsStore{Store: memstore.New()}
	hubA := memHubOn(t, st, moitessier.Options{CatchUpInterval: 10 * time.Millisecond})
	hubB := memHubOn(t, st, moitessier.Options{CatchUpInterval: time.Hour,
		Now: func() time.Time { return time.Now().Add(-time.Second) }})
	a, err := hubA.NewListener(ctx, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "room"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hubA.Dispatch(ctx, "s", "room", "old"); err != nil {
		t.Fatal(err)
	}
	texts, done := listenTexts(ctx, a)
	waitTexts(t, texts, 1)
	if err := hubB.Leave(ctx, a.ID(), "alice", ""); err != nil {
		t.Fatal(err)
	}
	b, err := hubB.NewListener(ctx, moitessier.Conditions{Person: "bob", Type: moitessier.Shared, Scope: "room"})
	if err != nil {
		t.Fatal(err)
	}
	if b.ID() != a.ID() {
		t.Fatal("another ID")
	}
	for _, s := range []string{"new1", "new2", "new3"} {
		if _, err := hubB.Dispatch(ctx, "s", "room", s); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-done:
		if !errors.Is(err, moitessier.ErrClosed) {
			t.Fatalf("ListenUntil = %v, want ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatalf("the deleted incarnation's ListenUntil still runs, and delivered %q", texts())
	}
}
