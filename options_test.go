package moitessier_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/memstore"
)

// TestDefaultOptions: DefaultOptions is what New uses for zero fields, and
// a hub made with it works.
func TestDefaultOptions(t *testing.T) {
	d := moitessier.DefaultOptions()
	if d.AckInterval != moitessier.DefaultAckInterval || moitessier.DefaultAckInterval != time.Second {
		t.Fatalf("AckInterval %v, want 1s", d.AckInterval)
	}
	if d.MaxMessageBytes != 64<<10 || d.Lease != 24*time.Hour || d.Retention.MaxAge != 7*24*time.Hour || d.GCInterval != time.Minute {
		t.Fatalf("DefaultOptions = %+v", d)
	}
	if d.Logger != nil || d.Now != nil {
		t.Fatal("DefaultOptions sets Logger or Now")
	}
	hub, err := moitessier.New(memstore.New(), d)
	if err != nil {
		t.Fatal(err)
	}
	if err := hub.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestLeaseAtLeastTwoAckIntervals: a lease a running ListenUntil could not
// renew in time (it renews when positions are saved, every AckInterval) is
// refused, for the hub and for one subscriber.
func TestLeaseAtLeastTwoAckIntervals(t *testing.T) {
	if _, err := moitessier.New(memstore.New(), moitessier.Options{Lease: time.Second, AckInterval: time.Second}); !errors.Is(err, moitessier.ErrInvalidArgument) {
		t.Fatalf("New with Lease = AckInterval: %v, want ErrInvalidArgument", err)
	}
	hub, err := moitessier.New(memstore.New(), moitessier.Options{Lease: 2 * time.Second, AckInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	c := moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "s", Lease: 1500 * time.Millisecond}
	if _, err := hub.NewListener(context.Background(), c); !errors.Is(err, moitessier.ErrInvalidArgument) {
		t.Fatalf("NewListener with a lease under two AckIntervals: %v, want ErrInvalidArgument", err)
	}
	c.Lease = 2 * time.Second
	if _, err := hub.NewListener(context.Background(), c); err != nil {
		t.Fatalf("NewListener with a lease of two AckIntervals: %v", err)
	}
}
