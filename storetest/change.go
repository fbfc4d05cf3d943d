package storetest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/likestripes/moitessier"
)

// testListenersChange checks that a dispatch reaches exactly the listeners
// that exist when it is made, however recently they were created or deleted
// and by whichever process, even when the scope was dispatched to just
// before: a store may answer Match from a cache (moitessier.MatchCacher),
// but never with an out-of-date answer.
func testListenersChange(t *testing.T, h Harness) {
	t.Run("SameHub", func(t *testing.T) {
		s := newStore(t, h)
		hub := newHub(t, s, moitessier.Options{})
		checkListenersChange(t, hub, hub)
	})
	t.Run("OtherProcess", func(t *testing.T) {
		if h.Share == nil {
			t.Skip("storetest: ListenersChange/OtherProcess: the store serves one process (Harness.Share is nil)")
		}
		s1 := newStore(t, h)
		s2 := shareStore(t, h, s1)
		checkListenersChange(t, newHub(t, s1, moitessier.Options{}), newHub(t, s2, moitessier.Options{}))
	})
}

// checkListenersChange dispatches from hub d after each change made through
// hub c.
func checkListenersChange(t *testing.T, d, c *moitessier.Hub) {
	ctx := ctxT(t)
	reached := func(text string, want ...*moitessier.Listener) {
		t.Helper()
		got := mustDispatch(t, d, "alice", "chg.room", text).Reached
		ids := make([]string, len(want))
		for i, l := range want {
			ids[i] = l.ID()
		}
		slices.Sort(got)
		slices.Sort(ids)
		if !slices.Equal(got, ids) {
			t.Fatalf("dispatch %q reached %v, want %v", text, got, ids)
		}
	}
	reached("none")
	reached("none again")
	shared := mustListener(t, c, moitessier.Conditions{Person: "bob", Type: moitessier.Shared, Scope: "chg.room"})
	reached("shared", shared)
	pattern := mustListener(t, c, moitessier.Conditions{Person: "bob", Type: moitessier.Shared, Scope: "chg.*"})
	reached("pattern", shared, pattern)
	list := mustListener(t, c, moitessier.Conditions{Person: "bob", Type: moitessier.Shared, Scopes: []string{"chg.other", "chg.room"}})
	reached("list", shared, pattern, list)
	private := mustListener(t, c, moitessier.Conditions{Person: "alice", Client: "tab", Type: moitessier.Private, Scope: "chg.room"})
	reached("private", shared, pattern, list, private)
	handler := mustListener(t, c, moitessier.Conditions{Person: "carol", Type: moitessier.Handler, Scope: "chg.room"})
	reached("handler", shared, pattern, list, private, handler)
	// Deleted: not reached, though the scope still has other listeners.
	if err := pattern.Close(ctx); err != nil {
		t.Fatal(err)
	}
	reached("pattern gone", shared, list, private, handler)
	if err := shared.Close(ctx); err != nil {
		t.Fatal(err)
	}
	reached("shared gone", list, private, handler)
	// Created again: a new incarnation, which holds only what came after.
	again := mustListener(t, c, moitessier.Conditions{Person: "dave", Type: moitessier.Shared, Scope: "chg.room"})
	reached("shared again", again, list, private, handler)
	wantTexts(t, again, "shared again")
	wantTexts(t, list, "list", "private", "handler", "pattern gone", "shared gone", "shared again")
	wantTexts(t, private, "private", "handler", "pattern gone", "shared gone", "shared again")
	for _, l := range []*moitessier.Listener{again, list, private, handler} {
		if err := l.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	reached("all gone")

	// A handler that stores nothing runs once per dispatch while nothing
	// changes; once its listener is deleted (and the app forgets it), it is
	// not called for it again, so a handler that refuses unknown listeners
	// does not fail later dispatches.
	hl := mustListener(t, c, moitessier.Conditions{Person: "erin", Type: moitessier.Handler, Scope: "chg.handlers"})
	var mu sync.Mutex
	known, calls := map[string]bool{hl.ID(): true}, 0
	filter := moitessier.HandlerFunc(func(_ context.Context, id string, _ moitessier.Message) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		if !known[id] {
			return "", fmt.Errorf("unknown listener %s", id)
		}
		calls++
		return "", nil
	})
	for range 3 {
		if got := mustDispatch(t, d, "alice", "chg.handlers", "x", filter).Reached; len(got) != 1 || got[0] != hl.ID() {
			t.Fatalf("reached %v, want [%s]", got, hl.ID())
		}
	}
	if calls != 3 {
		t.Fatalf("a handler that stores nothing ran %d times in 3 dispatches", calls)
	}
	if err := hl.Close(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	delete(known, hl.ID())
	mu.Unlock()
	for range 2 {
		if got := mustDispatch(t, d, "alice", "chg.handlers", "x", filter).Reached; len(got) != 0 {
			t.Fatalf("reached %v after its listener was deleted", got)
		}
	}
}
