package moitessier_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/likestripes/moitessier"
)

// Retrying a dispatch whose outcome is unknown: with the same idempotency
// key, a retry of one that was stored replays it, and one that was not is
// stored now; either way it is stored once. Every other error means that
// nothing was stored.
func ExampleErrOutcomeUnknown() {
	hub := newHub()
	defer hub.Close()
	ctx := context.Background()
	_, _ = hub.NewListener(ctx, moitessier.Conditions{Person: "shop", Type: moitessier.Shared, Scope: "orders"})

	send := func() (moitessier.Dispatched, error) {
		var (
			d   moitessier.Dispatched
			err error
		)
		for range 3 {
			d, err = hub.Dispatch(ctx, "alice", "orders", "order 7", moitessier.IdempotencyKey("order-7"))
			if !errors.Is(err, moitessier.ErrOutcomeUnknown) {
				break // stored (or replayed), or certainly not stored
			}
		}
		return d, err
	}
	d, err := send()
	fmt.Println(len(d.Messages), d.Replayed, err)
	d, err = send()
	fmt.Println(len(d.Messages), d.Replayed, err)
	// Output:
	// 1 false <nil>
	// 1 true <nil>
}

// Shutting a hub down: running ListenUntil calls return ErrClosed, each
// having saved its position, and Shutdown waits for them within ctx.
func ExampleHub_Shutdown() {
	hub := newHub()
	ctx := context.Background()
	l, _ := hub.NewListener(ctx, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "room"})

	done := make(chan error, 1)
	go func() {
		_, err := l.ListenUntil(ctx, nil, func(ctx context.Context, msgs []moitessier.Message) error { return nil }, moitessier.Resume, 0, 0)
		done <- err
	}()
	for hub.Stats().Listening == 0 {
		time.Sleep(time.Millisecond)
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	fmt.Println(hub.Shutdown(sctx))
	fmt.Println(errors.Is(<-done, moitessier.ErrClosed))
	_, err := hub.Dispatch(ctx, "bob", "room", "too late")
	fmt.Println(errors.Is(err, moitessier.ErrClosed))
	// Output:
	// <nil>
	// true
	// true
}
