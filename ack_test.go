package moitessier_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/memstore"
)

// TestAckLater: a respond that returns AckLater takes the messages without
// moving the server-held cursor; AckDelivered moves it, only up to what was
// delivered; a later Resume starts after the acknowledged position, not
// after what was delivered.
func TestAckLater(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	hub, err := moitessier.New(memstore.New(), moitessier.Options{GCInterval: -1, AckInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	l, err := hub.NewListener(ctx, moitessier.Conditions{Person: "alice", Client: "tab", Type: moitessier.Shared, Scope: "room.ack"})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if _, err := hub.Dispatch(ctx, "bob", "room.ack", fmt.Sprint("m", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.AckDelivered(1); !errors.Is(err, moitessier.ErrClosed) {
		t.Fatalf("AckDelivered with no ListenUntil running: %v, want ErrClosed", err)
	}

	got := make(chan moitessier.Cursor, 10)
	lctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := l.ListenUntil(lctx, nil, func(ctx context.Context, msgs []moitessier.Message) error {
			got <- msgs[len(msgs)-1].Seq
			return moitessier.AckLater
		}, 0, 0, 0)
		done <- err
	}()
	for c := moitessier.Cursor(0); c < 3; c = <-got {
	}
	// Delivered, not acknowledged: after several save intervals the
	// stored cursor has not moved.
	time.Sleep(50 * time.Millisecond)
	if c, err := l.Cursor(ctx); err != nil || c != 0 {
		t.Fatalf("cursor after AckLater: %d, %v; want 0", c, err)
	}
	if err := l.AckDelivered(4); !errors.Is(err, moitessier.ErrInvalidArgument) {
		t.Fatalf("AckDelivered past what was delivered: %v, want ErrInvalidArgument", err)
	}
	if err := l.AckDelivered(moitessier.Resume); !errors.Is(err, moitessier.ErrInvalidArgument) {
		t.Fatalf("AckDelivered(Resume): %v, want ErrInvalidArgument", err)
	}
	if err := l.AckDelivered(2); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := l.Cursor(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if c == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cursor %d after AckDelivered(2), want 2", c)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A lower acknowledgement never moves the cursor back.
	if err := l.AckDelivered(1); err != nil {
		t.Fatal(err)
	}
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("ListenUntil: %v", err)
	}
	if c, err := l.Cursor(ctx); err != nil || c != 2 {
		t.Fatalf("cursor after ListenUntil returned: %d, %v; want 2", c, err)
	}
	msgs, err := l.Messages(ctx, moitessier.Resume, 0)
	if err != nil || len(msgs) != 1 || msgs[0].Text != "m3" {
		t.Fatalf("resume: %v, %v; want m3 alone", msgs, err)
	}
}
