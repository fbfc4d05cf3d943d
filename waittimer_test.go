package moitessier_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/memstore"
)

// TestListenUntilCheckAndTimeout: check runs every interval while
// ListenUntil waits, its error ends the call, and the timeout ends it with
// nil; one timer serves both.
func TestListenUntilCheckAndTimeout(t *testing.T) {
	ctx := context.Background()
	hub, err := moitessier.New(memstore.New(), moitessier.Options{GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	l, err := hub.NewListener(ctx, moitessier.Conditions{Person: "p", Type: moitessier.Shared, Scope: "timer"})
	if err != nil {
		t.Fatal(err)
	}
	respond := func(context.Context, []moitessier.Message) error { return nil }

	// The timeout, checks running meanwhile.
	checks := 0
	check := func(context.Context) error { checks++; return nil }
	start := time.Now()
	if _, err := l.ListenUntil(ctx, check, respond, moitessier.Resume, 10*time.Millisecond, 200*time.Millisecond); err != nil {
		t.Fatalf("at the timeout: %v", err)
	}
	if el := time.Since(start); el < 200*time.Millisecond {
		t.Fatalf("returned after %v, before the timeout", el)
	}
	if checks < 2 {
		t.Fatalf("%d checks in 200 ms at an interval of 10 ms", checks)
	}

	// A check's error ends the call, before the timeout.
	stop := errors.New("stop")
	checks = 0
	check = func(context.Context) error {
		if checks++; checks == 3 {
			return stop
		}
		return nil
	}
	if _, err := l.ListenUntil(ctx, check, respond, moitessier.Resume, 5*time.Millisecond, time.Hour); !errors.Is(err, stop) || checks != 3 {
		t.Fatalf("check's error: %v after %d checks", err, checks)
	}

	// A timeout alone, no check.
	if _, err := l.ListenUntil(ctx, nil, respond, moitessier.Resume, 5*time.Millisecond, 20*time.Millisecond); err != nil {
		t.Fatalf("timeout without check: %v", err)
	}
}
