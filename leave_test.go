package moitessier_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/internal/countstore"
	"github.com/likestripes/moitessier/memstore"
)

// TestHubLeave: Hub.Leave removes one subscriber without a handle and
// without joining (no Store.Join); the last one out deletes the listener,
// ends its running ListenUntil calls with ErrClosed and calls
// Hooks.Emptied; an unknown subscriber or listener is ErrNotFound.
func TestHubLeave(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var emptied []string
	store, calls := countstore.Wrap(memstore.New())
	hub, err := moitessier.New(store, moitessier.Options{GCInterval: -1, Hooks: moitessier.Hooks{
		Emptied: func(_ context.Context, l moitessier.ListenerInfo) { emptied = append(emptied, l.ID) },
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	cond := moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "room.leave"}
	la, err := hub.NewListener(ctx, cond)
	if err != nil {
		t.Fatal(err)
	}
	cond.Person = "bob"
	if _, err := hub.NewListener(ctx, cond); err != nil {
		t.Fatal(err)
	}
	listening := make(chan error, 1)
	go func() {
		_, err := la.ListenUntil(ctx, nil, func(context.Context, []moitessier.Message) error { return nil }, moitessier.Resume, 0, 0)
		listening <- err
	}()
	for hub.Stats().Listening == 0 {
		time.Sleep(time.Millisecond)
	}

	if err := hub.Leave(ctx, la.ID(), "carol", ""); !errors.Is(err, moitessier.ErrNotFound) {
		t.Fatalf("Leave of a non-subscriber: %v, want ErrNotFound", err)
	}
	if err := hub.Leave(ctx, "no-such-listener", "alice", ""); !errors.Is(err, moitessier.ErrNotFound) {
		t.Fatalf("Leave of a missing listener: %v, want ErrNotFound", err)
	}
	before := calls.Load()
	if err := hub.Leave(ctx, la.ID(), "bob", ""); err != nil {
		t.Fatal(err)
	}
	if got := calls.Load() - before; got != 2 {
		t.Errorf("Leave made %d store calls, want 2 (Listener, Leave): no join", got)
	}
	subs, err := hub.Subscribers(ctx, la.ID())
	if err != nil || len(subs) != 1 || subs[0].Person != "alice" {
		t.Fatalf("after bob left: %+v, %v; want alice alone", subs, err)
	}
	if len(emptied) != 0 {
		t.Fatalf("Emptied called for %v while alice remains", emptied)
	}

	if err := hub.Leave(ctx, la.ID(), "alice", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := hub.Info(ctx, la.ID()); !errors.Is(err, moitessier.ErrNotFound) {
		t.Errorf("listener after the last subscriber left: %v, want ErrNotFound", err)
	}
	if len(emptied) != 1 || emptied[0] != la.ID() {
		t.Errorf("Emptied called for %v, want [%s]", emptied, la.ID())
	}
	select {
	case err := <-listening:
		if !errors.Is(err, moitessier.ErrClosed) || errors.Is(err, moitessier.ErrHubClosed) {
			t.Errorf("running ListenUntil returned %v, want ErrClosed, not ErrHubClosed", err)
		}
	case <-ctx.Done():
		t.Fatal("ListenUntil still running after its listener was deleted")
	}

	_ = hub.Close()
	if err := hub.Leave(ctx, la.ID(), "alice", ""); !errors.Is(err, moitessier.ErrClosed) {
		t.Errorf("Leave after Close: %v, want ErrClosed", err)
	}
}

// TestCloseLeavesInOneCall: Listener.Close on a store that is an
// IncarnationLeaver (every store of this module) makes one store call,
// LeaveOf, which checks the handle's incarnation itself, rather than read
// the listener first.
func TestCloseLeavesInOneCall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	store, calls := countstore.Wrap(memstore.New())
	hub, err := moitessier.New(store, moitessier.Options{GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	l, err := hub.NewListener(ctx, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "room.close"})
	if err != nil {
		t.Fatal(err)
	}
	before := calls.Load()
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := calls.Load() - before; got != 1 {
		t.Errorf("Close made %d store calls, want 1 (LeaveOf)", got)
	}
	if _, err := hub.Info(ctx, l.ID()); !errors.Is(err, moitessier.ErrNotFound) {
		t.Fatalf("the listener after its last subscriber closed: %v, want ErrNotFound", err)
	}
}

// plainStore is a store with none of the optional interfaces: a hub on it
// takes the paths every store must support.
type plainStore struct{ moitessier.Store }

// TestCloseWithoutIncarnationLeaver: on a store that is not an
// IncarnationLeaver, Close reads the listener first, and a handle of a
// listener deleted and made again under its ID leaves the new one alone.
func TestCloseWithoutIncarnationLeaver(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	hub, err := moitessier.New(plainStore{memstore.New()}, moitessier.Options{GCInterval: -1, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	cond := moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "room.again"}
	old, err := hub.NewListener(ctx, cond)
	if err != nil {
		t.Fatal(err)
	}
	if err := hub.Leave(ctx, old.ID(), "alice", ""); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Second)
	cur, err := hub.NewListener(ctx, cond)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Close(ctx); !errors.Is(err, moitessier.ErrClosed) {
		t.Fatalf("Close through the old handle: %v, want ErrClosed", err)
	}
	subs, err := cur.Subscribers(ctx)
	if err != nil || len(subs) != 1 || subs[0].Person != "alice" {
		t.Fatalf("subscribers of the new listener: %+v, %v; want alice", subs, err)
	}
	if err := cur.Close(ctx); err != nil {
		t.Fatalf("Close through the new handle: %v", err)
	}
}

// racingStore is a memory store whose next Listener call, after it has
// read the listener, runs then: a test's way of making the listener
// change between a read and what follows it.
type racingStore struct {
	*memstore.Store
	then func()
}

func (r *racingStore) Listener(ctx context.Context, id string) (moitessier.ListenerInfo, error) {
	info, err := r.Store.Listener(ctx, id)
	if f := r.then; f != nil {
		r.then = nil
		f()
	}
	return info, err
}

// TestHubLeaveEmptiedIncarnation: when the listener Hub.Leave reads for
// Hooks.Emptied is deleted, and made again under its ID with the leaving
// person as its one subscriber, before the leave, Hub.Leave removes that
// person from the listener as it now is, and the hook is told of the
// incarnation the call deleted, not of the one it read first.
func TestHubLeaveEmptiedIncarnation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	store := &racingStore{Store: memstore.New()}
	var emptied []moitessier.ListenerInfo
	hub, err := moitessier.New(store, moitessier.Options{GCInterval: -1, Hooks: moitessier.Hooks{
		Emptied: func(_ context.Context, l moitessier.ListenerInfo) { emptied = append(emptied, l) },
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	l, err := hub.NewListener(ctx, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "room.again"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := hub.Info(ctx, l.ID())
	if err != nil {
		t.Fatal(err)
	}
	second := first
	second.Created, second.Head = first.Created.Add(time.Second), 0
	store.then = func() {
		if _, err := store.Store.Leave(ctx, l.ID(), "alice", ""); err != nil {
			t.Errorf("delete the first incarnation: %v", err)
		}
		now := time.Now()
		sub := moitessier.Subscriber{Person: "bob", Cursor: moitessier.Resume, Joined: now, LeaseExpires: now.Add(time.Hour)}
		if _, _, _, err := store.Store.Join(ctx, second, sub, moitessier.Quota{}); err != nil {
			t.Errorf("make the listener again: %v", err)
		}
	}
	if err := hub.Leave(ctx, l.ID(), "bob", ""); err != nil {
		t.Fatalf("Leave of the second incarnation's one subscriber: %v", err)
	}
	if _, err := hub.Info(ctx, l.ID()); !errors.Is(err, moitessier.ErrNotFound) {
		t.Errorf("listener after its one subscriber left: %v, want ErrNotFound", err)
	}
	if len(emptied) != 1 || !emptied[0].Created.Equal(second.Created) {
		t.Fatalf("Emptied called for %+v, want the second incarnation (created %v), once", emptied, second.Created)
	}
}
