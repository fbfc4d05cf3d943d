package storetest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
)

// testIdempotencyMismatch checks that a store keeps the fingerprint of the
// request with its idempotency key: a key reused for another request —
// another scope, text, addressing or chain of handler names — is refused
// with ErrIdempotencyMismatch and stores nothing, while a true retry is
// replayed; and (with Reopen) that the fingerprint survives a restart.
func testIdempotencyMismatch(t *testing.T, h Harness) {
	s := newStore(t, h)
	clk := newClock()
	hub := newHub(t, s, moitessier.Options{Now: clk.Now, IdempotencyWindow: time.Hour})
	ctx := ctxT(t)
	pay := mustListener(t, hub, moitessier.Conditions{Person: "x", Type: moitessier.Shared, Scope: "pay"})
	other := mustListener(t, hub, moitessier.Conditions{Person: "x", Type: moitessier.Shared, Scope: "other"})
	bob := mustListener(t, hub, moitessier.Conditions{Person: "bob", Type: moitessier.Private, Scope: "pay"})
	carol := mustListener(t, hub, moitessier.Conditions{Person: "carol", Type: moitessier.Handler, Scope: "pay"})
	upper := moitessier.NamedHandler("upper", func(ctx context.Context, id string, m moitessier.Message) (string, error) {
		return strings.ToUpper(m.Text), nil
	})
	lower := moitessier.NamedHandler("lower", func(ctx context.Context, id string, m moitessier.Message) (string, error) {
		return strings.ToLower(m.Text), nil
	})
	mismatch := func(t *testing.T, scope, text string, opts ...moitessier.DispatchOption) {
		t.Helper()
		d, err := hub.Dispatch(ctx, "alice", scope, text, opts...)
		if err == nil {
			t.Fatalf("a reused key for another request answered %+v, want ErrIdempotencyMismatch", d)
		}
		wantErr(t, err, moitessier.ErrIdempotencyMismatch)
	}
	replay := func(t *testing.T, first moitessier.Dispatched, scope, text string, opts ...moitessier.DispatchOption) {
		t.Helper()
		d := mustDispatch(t, hub, "alice", scope, text, opts...)
		if !d.Replayed || d.ID != first.ID || len(d.Messages) != len(first.Messages) {
			t.Fatalf("retry answered %+v, want a replay of %+v", d, first)
		}
	}

	t.Run("ScopeAndText", func(t *testing.T) {
		k := moitessier.IdempotencyKey("k1")
		first := mustDispatch(t, hub, "alice", "pay", "charge 10", k)
		mismatch(t, "other", "charge 10", k)
		mismatch(t, "pay", "charge 20", k)
		mismatch(t, "pay", "", k)
		replay(t, first, "pay", "charge 10", k)
		// The key is per sender: bob's k1 is another key.
		if d := mustDispatch(t, hub, "bob", "other", "bob's", k); d.Replayed {
			t.Fatal("another sender's key replayed")
		}
	})
	t.Run("Addressing", func(t *testing.T) {
		k := moitessier.IdempotencyKey("k2")
		first := mustDispatch(t, hub, "alice", "pay", "to bob", k, moitessier.To("bob", "carol"))
		// The same persons in another order, or named twice, are the same request.
		replay(t, first, "pay", "to bob", k, moitessier.To("carol", "bob", "bob"))
		mismatch(t, "pay", "to bob", k, moitessier.To("bob"))
		mismatch(t, "pay", "to bob", k)
		mismatch(t, "pay", "to bob", k, moitessier.To())
	})
	t.Run("Handlers", func(t *testing.T) {
		k := moitessier.IdempotencyKey("k3")
		first := mustDispatch(t, hub, "alice", "pay", "Job", k, upper, lower)
		replay(t, first, "pay", "Job", k, upper, lower)
		mismatch(t, "pay", "Job", k, lower, upper)
		mismatch(t, "pay", "Job", k, upper)
		mismatch(t, "pay", "Job", k)
	})
	wantTexts(t, pay, "charge 10", "Job") // a Shared listener gets the text as is
	wantTexts(t, other, "bob's")
	wantTexts(t, bob, "to bob")
	wantTexts(t, carol, "charge 10", "job")

	t.Run("AfterWindow", func(t *testing.T) {
		// Past the window the key is free for any request.
		clk.Add(time.Hour + time.Second)
		if d := mustDispatch(t, hub, "alice", "other", "new", moitessier.IdempotencyKey("k1")); d.Replayed {
			t.Fatal("an expired key replayed")
		}
		wantTexts(t, other, "bob's", "new")
	})

	t.Run("Reopen", func(t *testing.T) {
		if h.Reopen == nil {
			t.Skip("storetest: Reopen: the store keeps nothing across processes (Harness.Reopen is nil)")
		}
		s := h.New(t)
		hub, err := moitessier.New(s, moitessier.Options{GCInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		l := mustListener(t, hub, moitessier.Conditions{Person: "x", Type: moitessier.Shared, Scope: "pay"})
		first := mustDispatch(t, hub, "alice", "pay", "once", moitessier.IdempotencyKey("k"))
		if err := hub.Close(); err != nil {
			t.Fatal(err)
		}
		s = h.Reopen(t, s)
		if c, ok := s.(moitessier.Closer); ok {
			t.Cleanup(func() { _ = c.Close() })
		}
		hub2 := newHub(t, s, moitessier.Options{})
		_, err = hub2.Dispatch(ctx, "alice", "pay", "twice", moitessier.IdempotencyKey("k"))
		wantErr(t, err, moitessier.ErrIdempotencyMismatch)
		d := mustDispatch(t, hub2, "alice", "pay", "once", moitessier.IdempotencyKey("k"))
		if !d.Replayed || d.ID != first.ID {
			t.Fatalf("retry after reopen answered %+v, want a replay of %+v", d, first)
		}
		l2, err := hub2.Open(ctx, l.ID(), "x", "")
		if err != nil {
			t.Fatal(err)
		}
		wantTexts(t, l2, "once")
	})
}
