package donectx

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"
)

func TestWithDoneCancelsOnDone(t *testing.T) {
	done := make(chan struct{})
	ctx, cancel := WithDone(context.Background(), done)
	defer cancel()
	if ctx.Err() != nil {
		t.Fatalf("ctx ended before done closed: %v", ctx.Err())
	}
	close(done)
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("ctx not cancelled after done closed")
	}
	if !errors.Is(ctx.Err(), context.Canceled) {
		t.Fatalf("ctx.Err() = %v; want context.Canceled", ctx.Err())
	}
}

func TestWithDoneFollowsParent(t *testing.T) {
	parent, pcancel := context.WithCancel(context.Background())
	ctx, cancel := WithDone(parent, make(chan struct{}))
	defer cancel()
	pcancel()
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("ctx not cancelled with its parent")
	}
}

func TestWithDoneCancelEndsGoroutine(t *testing.T) {
	before := runtime.NumGoroutine()
	for range 100 {
		_, cancel := WithDone(context.Background(), make(chan struct{}))
		cancel()
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before+10 {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left after cancel; had %d", runtime.NumGoroutine(), before)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
