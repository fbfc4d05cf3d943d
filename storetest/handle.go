package storetest

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
)

// testDeletedListener: a handle whose stored listener was deleted elsewhere
// (its last subscriber left through another handle, or GC expired it)
// answers ErrClosed from Messages, Messages(Resume), ListenUntil and Ack,
// and nothing creates the listener again.
func testDeletedListener(t *testing.T, h Harness) {
	s := newStore(t, h)
	clk := newClock()
	var created atomic.Int64
	hub := newHub(t, s, moitessier.Options{Now: clk.Now, Lease: time.Hour, Hooks: moitessier.Hooks{
		Created: func(context.Context, moitessier.ListenerInfo) { created.Add(1) },
	}})
	ctx := ctxT(t)
	gone := func(t *testing.T, l *moitessier.Listener) {
		t.Helper()
		c := newCollector()
		for _, since := range []moitessier.Cursor{0, moitessier.Resume, 1} {
			if _, err := l.Messages(ctx, since, 0); !errors.Is(err, moitessier.ErrClosed) {
				t.Fatalf("Messages(%d) on a deleted listener: %v, want ErrClosed", since, err)
			}
			if _, err := l.ListenUntil(ctx, nil, c.respond, since, 0, time.Millisecond); !errors.Is(err, moitessier.ErrClosed) {
				t.Fatalf("ListenUntil(%d) on a deleted listener: %v, want ErrClosed", since, err)
			}
		}
		if err := l.Ack(ctx, 0); !errors.Is(err, moitessier.ErrClosed) {
			t.Fatalf("Ack on a deleted listener: %v, want ErrClosed", err)
		}
		if _, err := l.Cursor(ctx); !errors.Is(err, moitessier.ErrClosed) {
			t.Fatalf("Cursor on a deleted listener: %v, want ErrClosed", err)
		}
		if _, err := l.CursorAt(ctx, time.Time{}); !errors.Is(err, moitessier.ErrClosed) {
			t.Fatalf("CursorAt on a deleted listener: %v, want ErrClosed", err)
		}
		if _, err := l.Subscribers(ctx); !errors.Is(err, moitessier.ErrClosed) {
			t.Fatalf("Subscribers on a deleted listener: %v, want ErrClosed", err)
		}
		if err := l.Close(ctx); !errors.Is(err, moitessier.ErrClosed) {
			t.Fatalf("Close of a handle whose listener was deleted: %v, want ErrClosed", err)
		}
		if _, err := hub.Info(ctx, l.ID()); !errors.Is(err, moitessier.ErrNotFound) {
			t.Fatalf("the deleted listener is back: Info = %v", err)
		}
	}

	t.Run("LeftElsewhere", func(t *testing.T) {
		a := mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "deleted.left"})
		mustDispatch(t, hub, "alice", "deleted.left", "one")
		other, err := hub.Open(ctx, a.ID(), "alice", "")
		if err != nil {
			t.Fatal(err)
		}
		if err := other.Close(ctx); err != nil {
			t.Fatal(err)
		}
		n := created.Load()
		gone(t, a)
		if created.Load() != n {
			t.Fatal("Hooks.Created called for a listener made again")
		}
	})
	t.Run("Expired", func(t *testing.T) {
		a := mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "deleted.expired"})
		clk.Add(2 * time.Hour)
		if res, err := hub.GC(ctx); err != nil || len(res.Expired) != 1 {
			t.Fatalf("GC = %+v, %v; want the listener expired", res, err)
		}
		gone(t, a)
	})
	t.Run("CreatedAgain", func(t *testing.T) {
		// Deleted, then created again under the same ID by someone else:
		// the old handle does not join the new listener.
		a := mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "deleted.again"})
		if err := func() error {
			o, err := hub.Open(ctx, a.ID(), "alice", "")
			if err != nil {
				return err
			}
			return o.Close(ctx)
		}(); err != nil {
			t.Fatal(err)
		}
		clk.Add(time.Second) // another incarnation has another creation time
		b := mustListener(t, hub, moitessier.Conditions{Person: "bob", Type: moitessier.Shared, Scope: "deleted.again"})
		if b.ID() != a.ID() {
			t.Fatal("the listener made again has another ID")
		}
		mustDispatch(t, hub, "bob", "deleted.again", "for bob")
		c := newCollector()
		for _, since := range []moitessier.Cursor{0, moitessier.Resume} {
			if _, err := a.Messages(ctx, since, 0); !errors.Is(err, moitessier.ErrClosed) {
				t.Fatalf("Messages(%d) through the old handle: %v, want ErrClosed", since, err)
			}
			if _, err := a.ListenUntil(ctx, nil, c.respond, since, 0, time.Millisecond); !errors.Is(err, moitessier.ErrClosed) {
				t.Fatalf("ListenUntil(%d) through the old handle: %v, want ErrClosed", since, err)
			}
		}
		if len(c.texts()) != 0 {
			t.Fatalf("the old handle delivered %q", c.texts())
		}
		// Closing the old handle leaves the new listener alone.
		if err := a.Close(ctx); !errors.Is(err, moitessier.ErrClosed) {
			t.Fatalf("Close through the old handle: %v, want ErrClosed", err)
		}
		subs, err := b.Subscribers(ctx)
		if err != nil || len(subs) != 1 || subs[0].Person != "bob" {
			t.Fatalf("subscribers of the new listener: %+v, %v; want bob alone", subs, err)
		}
	})
	t.Run("CreatedAgainBySamePerson", func(t *testing.T) {
		// The same, made again by the old handle's own person: closing
		// the old handle must not take her out of the new listener.
		c := moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "deleted.mine"}
		a := mustListener(t, hub, c)
		if err := hub.Leave(ctx, a.ID(), "alice", ""); err != nil {
			t.Fatal(err)
		}
		clk.Add(time.Second)
		b := mustListener(t, hub, c)
		if err := a.Close(ctx); !errors.Is(err, moitessier.ErrClosed) {
			t.Fatalf("Close through the old handle: %v, want ErrClosed", err)
		}
		subs, err := b.Subscribers(ctx)
		if err != nil || len(subs) != 1 || subs[0].Person != "alice" {
			t.Fatalf("subscribers of the new listener: %+v, %v; want alice", subs, err)
		}
	})
}

// testCursorPastHead: ListenUntil with a cursor past the listener's head
// fails with ErrInvalidArgument before it writes anything: the lease does
// not move and a deleted listener is not created again.
func testCursorPastHead(t *testing.T, h Harness) {
	s := newStore(t, h)
	clk := newClock()
	hub := newHub(t, s, moitessier.Options{Now: clk.Now, Lease: time.Hour})
	ctx := ctxT(t)
	a := mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "past.head"})
	mustDispatch(t, hub, "alice", "past.head", "one")
	lease := func() time.Time {
		t.Helper()
		subs, err := a.Subscribers(ctx)
		if err != nil || len(subs) != 1 {
			t.Fatalf("subscribers %+v, %v", subs, err)
		}
		return subs[0].LeaseExpires
	}
	before := lease()
	clk.Add(10 * time.Minute)
	c := newCollector()
	if _, err := a.ListenUntil(ctx, nil, c.respond, 2, 0, 0); !errors.Is(err, moitessier.ErrInvalidArgument) {
		t.Fatalf("ListenUntil past the head: %v, want ErrInvalidArgument", err)
	}
	if got := lease(); !got.Equal(before) {
		t.Fatalf("a refused ListenUntil moved the lease from %v to %v", before, got)
	}
	if msgs, err := a.Messages(ctx, 2, 0); !errors.Is(err, moitessier.ErrInvalidArgument) {
		t.Fatalf("Messages past the head = %d messages, %v; want ErrInvalidArgument", len(msgs), err)
	}
	// Deleted elsewhere: a cursor past the head is not a reason to create
	// it again.
	o, err := hub.Open(ctx, a.ID(), "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ListenUntil(ctx, nil, c.respond, 5, 0, 0); !errors.Is(err, moitessier.ErrClosed) {
		t.Fatalf("ListenUntil past the head of a deleted listener: %v, want ErrClosed", err)
	}
	if _, err := hub.Info(ctx, a.ID()); !errors.Is(err, moitessier.ErrNotFound) {
		t.Fatalf("the deleted listener is back: Info = %v", err)
	}
}

// testResumeInHub: a second ListenUntil(Resume) of one subscriber in one
// hub starts after what the first one acknowledged, even before that is
// saved (AckInterval), so nothing is delivered twice without a crash.
func testResumeInHub(t *testing.T, h Harness) {
	s := newStore(t, h)
	hub := newHub(t, s, moitessier.Options{AckInterval: time.Hour})
	ctx := ctxT(t)
	scope := "resume.hub"
	a := mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: scope, Client: "tab"})
	first := newCollector()
	stopFirst := listen(t, a, first, moitessier.Resume)
	for _, text := range []string{"1", "2", "3"} {
		mustDispatch(t, hub, "x", scope, text)
	}
	first.waitFor(t, 3)
	// The first call runs on (a stream the client has not yet dropped);
	// the same subscriber resumes through another handle.
	again, err := hub.Open(ctx, a.ID(), "alice", "tab")
	if err != nil {
		t.Fatal(err)
	}
	// The first call acknowledges what it delivered once its respond has
	// returned, which the collector cannot see: wait for that, as long as
	// waitFor would.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		msgs, err := again.Messages(ctx, moitessier.Resume, 0)
		if err == nil && len(msgs) == 0 {
			break
		}
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("Messages(Resume) while the first call runs = %d messages, %v; want none", len(msgs), err)
		}
	}
	second := newCollector()
	stopSecond := listen(t, again, second, moitessier.Resume)
	// Once it has begun (the first call acknowledges "4" as soon as it is
	// stored, and a later start would rightly resume after it):
	for deadline := time.Now().Add(30 * time.Second); hub.Stats().Listening < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the second ListenUntil did not begin")
		}
	}
	mustDispatch(t, hub, "x", scope, "4")
	second.waitFor(t, 1)
	first.waitFor(t, 4)
	if _, err := stopSecond(); err != nil {
		t.Fatal(err)
	}
	if got := second.texts(); !slices.Equal(got, []string{"4"}) {
		t.Fatalf("the second ListenUntil(Resume) delivered %q, want [4]", got)
	}
	if _, err := stopFirst(); err != nil {
		t.Fatal(err)
	}
}

// testBadIDs: the hub's calls that take a listener ID or a person refuse
// what no listener or subscriber can have (a malformed ID is ErrNotFound,
// a name of invalid UTF-8 or a control character ErrInvalidArgument)
// before the store sees it, whatever the store would make of it. After
// Shutdown they return ErrClosed.
func testBadIDs(t *testing.T, h Harness) {
	s := newStore(t, h)
	hub := newHub(t, s, moitessier.Options{})
	ctx := ctxT(t)
	l := mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "ids"})
	for _, id := range []string{"", "nope", "s\xff" + l.ID()[2:], l.ID() + "0", "S" + l.ID()[1:], "x" + l.ID()[1:], "s\x00" + l.ID()[2:]} {
		if _, err := hub.Info(ctx, id); !errors.Is(err, moitessier.ErrNotFound) {
			t.Errorf("Info(%q) = %v, want ErrNotFound", id, err)
		}
		if _, err := hub.Open(ctx, id, "alice", ""); !errors.Is(err, moitessier.ErrNotFound) {
			t.Errorf("Open(%q) = %v, want ErrNotFound", id, err)
		}
		if err := hub.Leave(ctx, id, "alice", ""); !errors.Is(err, moitessier.ErrNotFound) {
			t.Errorf("Leave(%q) = %v, want ErrNotFound", id, err)
		}
		if _, err := hub.Subscribers(ctx, id); !errors.Is(err, moitessier.ErrNotFound) {
			t.Errorf("Subscribers(%q) = %v, want ErrNotFound", id, err)
		}
	}
	for _, name := range []string{"\xff", "a\x00b", strings.Repeat("n", moitessier.MaxNameBytes+1)} {
		if err := hub.Leave(ctx, l.ID(), name, ""); !errors.Is(err, moitessier.ErrInvalidArgument) {
			t.Errorf("Leave(person %q) = %v, want ErrInvalidArgument", name, err)
		}
		if err := hub.Leave(ctx, l.ID(), "alice", name); !errors.Is(err, moitessier.ErrInvalidArgument) {
			t.Errorf("Leave(client %q) = %v, want ErrInvalidArgument", name, err)
		}
		for _, r := range []moitessier.SubscriberRange{{Person: name}, {Person: "alice", Client: name}} {
			if _, err := hub.SubscriberPage(ctx, l.ID(), r); !errors.Is(err, moitessier.ErrInvalidArgument) {
				t.Errorf("SubscriberPage(%+v) = %v, want ErrInvalidArgument", r, err)
			}
		}
	}
	if _, err := hub.Info(ctx, l.ID()); err != nil {
		t.Fatalf("Info of the listener after the refused calls: %v", err)
	}
	if err := hub.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := hub.Info(ctx, l.ID()); !errors.Is(err, moitessier.ErrClosed) {
		t.Errorf("Info after Shutdown = %v, want ErrClosed", err)
	}
	if _, err := hub.Subscribers(ctx, l.ID()); !errors.Is(err, moitessier.ErrClosed) {
		t.Errorf("Subscribers after Shutdown = %v, want ErrClosed", err)
	}
}
