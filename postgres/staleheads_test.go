package postgres_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
)

// TestStaleHeadSkipsNothing: a head notified for a deleted incarnation of
// a listener, arriving after a subscriber of the incarnation created
// again under its ID began (as a notification late in the Watch's queue
// does), does not move the subscriber past the new incarnation's
// messages: each of them is delivered, once, in order.
func TestStaleHeadSkipsNothing(t *testing.T) {
	schema := newSchema(t)
	sA, sB := openStore(t, schema), openStore(t, schema)
	ctx := ctxT(t)
	hA, hB := newHub(t, sA, slow), newHub(t, sB, slow)
	awaitWatchers(t, sA, 2)
	cond := moitessier.Conditions{Person: "p", Type: moitessier.Shared, Scope: "room"}
	l, err := hB.NewListener(ctx, cond)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		if _, err := hB.Dispatch(ctx, "s", "room", fmt.Sprint("old ", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := hB.Leave(ctx, l.ID(), "p", ""); err != nil {
		t.Fatal(err)
	}
	l2, err := hA.NewListener(ctx, cond)
	if err != nil {
		t.Fatal(err)
	}
	got := stream(t, l2)
	for hA.Stats().Listening < 1 {
		time.Sleep(time.Millisecond)
	}
	// The old incarnation's head, notified late.
	if _, err := sB.Pool().Exec(ctx, "SELECT pg_notify($1, $2)", sB.Channel(), l.ID()+" 5"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // hub A hears it
	const n = 6
	for i := 1; i <= n; i++ {
		if _, err := hB.Dispatch(ctx, "s", "room", fmt.Sprint("new ", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= n; i++ {
		select {
		case m := <-got:
			if want := fmt.Sprint("new ", i); m.Seq != moitessier.Cursor(i) || m.Text != want {
				t.Fatalf("message %d: seq %d %q, want seq %d %q", i, m.Seq, m.Text, i, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("the new incarnation's message %d was not delivered", i)
		}
	}
}
