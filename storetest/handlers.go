package storetest

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
)

// testHandlerChain checks the bounds of a dispatch's handler chain on
// every store, including those whose matches are cached: there a dispatch
// may be prepared twice, and the handler budget and the caller's context
// cover both preparations.
func testHandlerChain(t *testing.T, h Harness) {
	s := newStore(t, h)
	hub := newHub(t, s, moitessier.Options{MaxHandlers: 4, HandlerBudget: 100 * time.Millisecond})
	a := mustListener(t, hub, moitessier.Conditions{Person: "a", Type: moitessier.Handler, Scope: "job"})
	b := mustListener(t, hub, moitessier.Conditions{Person: "b", Type: moitessier.Handler, Scope: "job"})
	// Dispatch once, so that a store with a match cache has the scope in it.
	mustDispatch(t, hub, "s", "job", "warm")
	var calls atomic.Int64
	counted := func(hf moitessier.HandlerFunc) []moitessier.DispatchOption {
		calls.Store(0)
		return []moitessier.DispatchOption{hf, hf, hf, hf}
	}

	t.Run("TooMany", func(t *testing.T) {
		opts := counted(func(ctx context.Context, id string, m moitessier.Message) (string, error) {
			calls.Add(1)
			return m.Text, nil
		})
		_, err := hub.Dispatch(ctxT(t), "s", "job", "x", append(opts, opts[0])...)
		wantErr(t, err, moitessier.ErrInvalidArgument)
		if n := calls.Load(); n != 0 {
			t.Fatalf("a dispatch over MaxHandlers ran %d handler calls", n)
		}
	})
	t.Run("Canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(ctxT(t))
		defer cancel()
		opts := counted(func(_ context.Context, id string, m moitessier.Message) (string, error) {
			if calls.Add(1) == 2 {
				cancel()
			}
			return m.Text, nil
		})
		_, err := hub.Dispatch(ctx, "s", "job", "x", opts...)
		wantErr(t, err, context.Canceled)
		if n := calls.Load(); n != 2 {
			t.Fatalf("%d handler calls, want 2: none after the context ended", n)
		}
	})
	t.Run("Budget", func(t *testing.T) {
		opts := counted(func(ctx context.Context, id string, m moitessier.Message) (string, error) {
			calls.Add(1)
			<-ctx.Done()
			return "", ctx.Err()
		})
		_, err := hub.Dispatch(ctxT(t), "s", "job", "x", opts...)
		wantErr(t, err, moitessier.ErrBudgetExceeded)
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("budget error %v also wraps context.DeadlineExceeded", err)
		}
		if n := calls.Load(); n != 1 {
			t.Fatalf("%d handler calls, want 1: none after the budget ended", n)
		}
	})
	wantTexts(t, a, "warm")
	wantTexts(t, b, "warm")
}
