package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/postgres"
)

// lateWatch is a store whose Watch starts only once gate is closed, as a
// LISTEN connection slow to open (a loaded server) starts late: the hub
// is running, and its listeners joined, before the store listens.
type lateWatch struct {
	*postgres.Store
	gate chan struct{}
}

func (w lateWatch) Watch(ctx context.Context, fn func([]moitessier.Head)) error {
	select {
	case <-w.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return w.Store.Watch(ctx, fn)
}

// TestWatchStartsLate: messages dispatched by another process after a
// listener's ListenUntil began, but before the hub's Watch was listening,
// reach the listener without waiting for the hub's periodic catch-up:
// once its LISTEN is active, Watch reports the heads, so that nothing
// committed before is missed. (Conformance's Share test lost all of its
// first 50 messages this way, once, on a loaded machine.)
func TestWatchStartsLate(t *testing.T) {
	schema := newSchema(t)
	sa := openStore(t, schema)
	sb := lateWatch{openStore(t, schema), make(chan struct{})}
	ctx := ctxT(t)
	ha := newHub(t, sa, moitessier.Options{})
	hb := newHub(t, sb, moitessier.Options{CatchUpInterval: time.Hour})
	l, err := hb.NewListener(ctx, moitessier.Conditions{Person: "b", Type: moitessier.Shared, Scope: "x.>"})
	if err != nil {
		t.Fatal(err)
	}
	got := stream(t, l)
	for hb.Stats().Listening == 0 { // ListenUntil has joined and read the head
		time.Sleep(time.Millisecond)
	}
	const n = 3
	for i := range n {
		if _, err := ha.Dispatch(ctx, "a", "x.y", "m"); err != nil {
			t.Fatalf("dispatch %d: %v", i, err)
		}
	}
	close(sb.gate)
	for i := range n {
		select {
		case m := <-got:
			if m.Seq != moitessier.Cursor(i+1) {
				t.Fatalf("received seq %d, want %d", m.Seq, i+1)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("message %d of %d, committed before Watch listened, not delivered in 20s", i+1, n)
		}
	}
}
