package moitessier_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/memstore"
)

// fixedHeads is a Watcher whose Heads answers from a map.
type fixedHeads map[string]moitessier.Head

func (f fixedHeads) Watch(ctx context.Context, fn func([]moitessier.Head)) error {
	<-ctx.Done()
	return ctx.Err()
}

func (f fixedHeads) Heads(ctx context.Context, ids []string) ([]moitessier.Head, error) {
	var out []moitessier.Head
	for _, id := range ids {
		if h, ok := f[id]; ok {
			out = append(out, h)
		}
	}
	return out, nil
}

// TestCompareHeads checks the answer CompareHeads works out from Heads for
// a store without a HeadComparer: what is gone, and what differs from
// the heads known, and nothing else.
func TestCompareHeads(t *testing.T) {
	t1, t2 := time.Unix(1, 0).UTC(), time.Unix(2, 0).UTC()
	store := fixedHeads{
		"same":      {Listener: "same", Seq: 5, Created: t1},
		"ahead":     {Listener: "ahead", Seq: 7, Created: t1},
		"behind":    {Listener: "behind", Seq: 3, Created: t1},
		"remade":    {Listener: "remade", Seq: 1, Created: t2},
		"unbound":   {Listener: "unbound", Seq: 5, Created: t1},
		"undated":   {Listener: "undated", Seq: 5},
		"undated-2": {Listener: "undated-2", Seq: 6},
	}
	known := []moitessier.Head{
		{Listener: "same", Seq: 5, Created: t1},
		{Listener: "ahead", Seq: 5, Created: t1},
		{Listener: "behind", Seq: 5, Created: t1},
		{Listener: "remade", Seq: 5, Created: t1},
		{Listener: "unbound", Seq: 5},
		{Listener: "undated", Seq: 5, Created: t1},
		{Listener: "undated-2", Seq: 5, Created: t1},
		{Listener: "deleted", Seq: 5, Created: t1},
	}
	changed, gone, err := moitessier.CompareHeads(context.Background(), store, known)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, h := range changed {
		if h != store[h.Listener] {
			t.Errorf("changed %+v, the store has %+v", h, store[h.Listener])
		}
		ids = append(ids, h.Listener)
	}
	if want := []string{"ahead", "remade", "unbound", "undated-2"}; !slices.Equal(ids, want) {
		t.Errorf("changed %v, want %v", ids, want)
	}
	if !slices.Equal(gone, []string{"deleted"}) {
		t.Errorf("gone %v, want [deleted]", gone)
	}
}

// comparingStore is a memory store whose Watcher has a HeadComparer that
// answers from Heads, as CompareHeads does, counting its calls, and that
// can say a listener is gone when it is not.
type comparingStore struct {
	moitessier.Store
	compared atomic.Int64
	fakeGone atomic.Pointer[string]
	before   atomic.Pointer[func()] // run once, at the next call, before it answers
}

func (s *comparingStore) Watch(ctx context.Context, fn func([]moitessier.Head)) error {
	<-ctx.Done()
	return ctx.Err()
}

func (s *comparingStore) Heads(ctx context.Context, ids []string) ([]moitessier.Head, error) {
	return nil, errors.New("Heads called for a store with a HeadComparer")
}

func (s *comparingStore) ChangedHeads(ctx context.Context, known []moitessier.Head) ([]moitessier.Head, []string, error) {
	s.compared.Add(1)
	if f := s.before.Swap(nil); f != nil {
		(*f)()
	}
	var changed []moitessier.Head
	var gone []string
	for _, k := range known {
		if g := s.fakeGone.Load(); g != nil && *g == k.Listener {
			gone = append(gone, k.Listener)
			continue
		}
		info, err := s.Store.Listener(ctx, k.Listener)
		switch {
		case errors.Is(err, moitessier.ErrNotFound):
			gone = append(gone, k.Listener)
		case err != nil:
			return nil, nil, err
		case info.Head > k.Seq || k.Created.IsZero() || !info.Created.Equal(k.Created):
			changed = append(changed, moitessier.Head{Listener: k.Listener, Seq: info.Head, Created: info.Created})
		}
	}
	return changed, gone, nil
}

// TestCatchUpUsesHeadComparer: a hub on a store with a HeadComparer
// catches up through ChangedHeads alone, never Heads: a message written
// behind the hub's back (Append, which the hub does not publish) reaches
// a waiting subscriber, and a listener the answer says is gone ends its
// ListenUntil with ErrClosed.
func TestCatchUpUsesHeadComparer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st := &comparingStore{Store: memstore.New()}
	hub := memHubOn(t, st, moitessier.Options{CatchUpInterval: 10 * time.Millisecond})
	l, err := hub.NewListener(ctx, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "room"})
	if err != nil {
		t.Fatal(err)
	}
	texts, done := listenTexts(ctx, l)
	if _, _, err := st.Append(ctx, &moitessier.Batch{Dispatch: "d1", Scope: "room", Sender: "s", Created: time.Now(),
		Entries: []moitessier.Entry{{Listener: l.ID(), Text: "behind the hub"}}}); err != nil {
		t.Fatal(err)
	}
	waitTexts(t, texts, 1)
	if got := strings.Join(texts(), ","); got != "behind the hub" {
		t.Fatalf("delivered %q", got)
	}
	id := l.ID()
	st.fakeGone.Store(&id)
	select {
	case err := <-done:
		if !errors.Is(err, moitessier.ErrClosed) {
			t.Fatalf("ListenUntil ended with %v, want ErrClosed", err)
		}
	case <-ctx.Done():
		t.Fatal("ListenUntil went on after the catch-up said its listener was gone")
	}
	if st.compared.Load() == 0 {
		t.Fatal("ChangedHeads was never called")
	}
}

// TestCatchUpAfterCorrect: a cache's head went up with a stale head (a
// late notification of a deleted incarnation), the catch-up read sent it,
// and while the store answered, a subscriber put the head right, below the
// store's, and a message was written behind the hub's back. The store's
// head is not above the one sent, so the answer leaves the listener out:
// the catch-up asks again for such a cache, with the head it has now,
// rather than leave the message to the next read.
func TestCatchUpAfterCorrect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st := &comparingStore{Store: memstore.New()}
	hub := memHubOn(t, st, moitessier.Options{CatchUpInterval: time.Hour})
	l, err := hub.NewListener(ctx, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "room"})
	if err != nil {
		t.Fatal(err)
	}
	release := hub.HoldCache(l.ID(), l.Info().Created)
	defer release()
	hub.ObserveHead(l.ID(), 10)
	if got := hub.CacheHead(l.ID()); got != 10 {
		t.Fatalf("cache head %d after a head of 10", got)
	}
	before := func() {
		hub.CorrectCache(l.ID(), 10, 0)
		if _, _, err := st.Append(ctx, &moitessier.Batch{Dispatch: "d1", Scope: "room", Sender: "s", Created: time.Now(),
			Entries: []moitessier.Entry{{Listener: l.ID(), Text: "behind the hub"}}}); err != nil {
			t.Error(err)
		}
	}
	st.before.Store(&before)
	hub.CatchUpOnce(ctx)
	if got := hub.CacheHead(l.ID()); got != 1 {
		t.Fatalf("cache head %d after the catch-up, want the store's 1", got)
	}
	if n := st.compared.Load(); n != 2 {
		t.Fatalf("%d ChangedHeads calls, want 2: the read and the second look", n)
	}
}
