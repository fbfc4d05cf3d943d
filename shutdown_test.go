package moitessier_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/memstore"
)

// TestShutdown: Shutdown ends running ListenUntil calls, waits for them
// (their positions are then saved), and gives up when its context ends,
// saying so; a second call returns nil.
func TestShutdown(t *testing.T) {
	ctx := context.Background()
	store := memstore.New()
	hub, err := moitessier.New(store, moitessier.Options{AckInterval: time.Hour, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	l, err := hub.NewListener(ctx, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "room"})
	if err != nil {
		t.Fatal(err)
	}
	slow, err := hub.NewListener(ctx, moitessier.Conditions{Person: "bob", Type: moitessier.Shared, Scope: "room"})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan struct{}, 1)
	release := make(chan struct{})
	stuck := make(chan struct{}, 1)
	fast := make(chan error, 1)
	go func() {
		_, err := l.ListenUntil(ctx, nil, func(ctx context.Context, msgs []moitessier.Message) error {
			got <- struct{}{}
			return nil
		}, 0, 0, 0)
		fast <- err
	}()
	slowDone := make(chan error, 1)
	go func() {
		_, err := slow.ListenUntil(ctx, nil, func(ctx context.Context, msgs []moitessier.Message) error {
			stuck <- struct{}{}
			<-release // a client that takes its time
			return nil
		}, 0, 0, 0)
		slowDone <- err
	}()
	if _, err := hub.Dispatch(ctx, "x", "room", "one"); err != nil {
		t.Fatal(err)
	}
	<-got
	<-stuck
	sctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := hub.Shutdown(sctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown while a respond is stuck: %v, want DeadlineExceeded", err)
	}
	if err := <-fast; !errors.Is(err, moitessier.ErrHubClosed) || !errors.Is(err, moitessier.ErrClosed) {
		t.Fatalf("running ListenUntil after Shutdown: %v, want ErrHubClosed, an ErrClosed", err)
	}
	close(release)
	if err := <-slowDone; !errors.Is(err, moitessier.ErrHubClosed) {
		t.Fatalf("stuck ListenUntil after Shutdown: %v, want ErrHubClosed", err)
	}
	// Each saved its position as it returned, with AckInterval an hour (the
	// store tells: the hub's own calls now return ErrClosed).
	subs, err := store.Subscribers(ctx, l.ID(), moitessier.SubscriberRange{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range subs {
		if s.Cursor != 1 {
			t.Fatalf("subscriber %s saved at %d, want 1", s.Person, s.Cursor)
		}
	}
	if err := hub.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if err := hub.Close(); err != nil {
		t.Fatalf("Close after Shutdown: %v", err)
	}
	if _, err := hub.Dispatch(ctx, "x", "room", "two"); !errors.Is(err, moitessier.ErrHubClosed) {
		t.Fatalf("Dispatch after Shutdown: %v, want ErrHubClosed", err)
	}
}

// TestShutdownWaits: Shutdown returns only once running ListenUntil calls
// have returned.
func TestShutdownWaits(t *testing.T) {
	ctx := context.Background()
	hub, err := moitessier.New(memstore.New(), moitessier.Options{GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	l, err := hub.NewListener(ctx, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "room"})
	if err != nil {
		t.Fatal(err)
	}
	in := make(chan struct{})
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		_, _ = l.ListenUntil(ctx, nil, func(ctx context.Context, msgs []moitessier.Message) error {
			close(in)
			time.Sleep(100 * time.Millisecond)
			return nil
		}, 0, 0, 0)
	}()
	if _, err := hub.Dispatch(ctx, "x", "room", "one"); err != nil {
		t.Fatal(err)
	}
	<-in
	if err := hub.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-returned:
	default:
		t.Fatal("Shutdown returned before the running ListenUntil did")
	}
}
