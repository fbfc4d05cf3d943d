package sqlite_test

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/sqlite"
)

// appendRecover runs Append and returns what it panicked with, if it did.
func appendRecover(s *sqlite.Store, b *moitessier.Batch) (p any, err error) {
	defer func() { p = recover() }()
	_, _, err = s.Append(context.Background(), b)
	return nil, err
}

// appendWithin runs mustAppend, failing the test rather than hanging if the
// store's writer is stuck.
func appendWithin(t *testing.T, s *sqlite.Store, b *moitessier.Batch) {
	t.Helper()
	done := make(chan error, 1)
	go func() { _, _, err := s.Append(context.Background(), b); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Append(%s) after a write panicked: %v", b.Dispatch, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("Append(%s) after a write panicked never returned", b.Dispatch)
	}
}

// TestWritePanicAlone: a write that panics in a transaction of its own
// panics in its caller, and the transaction is rolled back, so the store's
// writer is free for the writes after it.
func TestWritePanicAlone(t *testing.T) {
	s := mustOpen(t, dbPath(t))
	mustJoin(t, s, listener("L", "x"), "alice")
	sqlite.SetAppendHook(s, func(b *moitessier.Batch, i int) error {
		if b.Dispatch == "boom" {
			panic("boom")
		}
		return nil
	})
	defer sqlite.SetAppendHook(s, nil)

	if p, err := appendRecover(s, batch("boom", map[string]string{"L": "boom"})); p != "boom" {
		t.Fatalf("Append that panics: panic %v, error %v; want panic boom", p, err)
	}
	appendWithin(t, s, batch("after", map[string]string{"L": "after"}))
	if got := texts(mustRead(t, s, "L", 0)); len(got) != 1 || got[0] != "after" {
		t.Fatalf("listener holds %q, want only the write after the panic", got)
	}
	if got := texts(mustRead(t, reopen(t, s), "L", 0)); len(got) != 1 || got[0] != "after" {
		t.Fatalf("reopened, listener holds %q, want only the write after the panic", got)
	}
}

// TestWritePanicInGroup: a write that panics among combined writes panics
// in its own caller only; it leaves nothing, the others commit, and the
// store's writer is free for the writes after them.
func TestWritePanicInGroup(t *testing.T) {
	s := mustOpen(t, dbPath(t))
	mustJoin(t, s, listener("L", "x"), "alice")
	mustJoin(t, s, listener("M", "y"), "alice")
	holding, hold := make(chan struct{}), make(chan struct{})
	sqlite.SetAppendHook(s, func(b *moitessier.Batch, i int) error {
		switch b.Dispatch {
		case "hold":
			close(holding)
			<-hold
		case "boom":
			panic("boom")
		}
		return nil
	})
	defer sqlite.SetAppendHook(s, nil)

	var wg sync.WaitGroup
	var held, before, after error
	var boom any
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _, held = s.Append(context.Background(), batch("hold", map[string]string{"M": "held"}))
	}()
	<-holding // the held write is the writer's
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _, before = s.Append(context.Background(), batch("before", map[string]string{"L": "before"}))
	}()
	for sqlite.QueuedWrites(s) != 1 {
		runtime.Gosched()
	}
	wg.Add(1)
	go func() { defer wg.Done(); boom, _ = appendRecover(s, batch("boom", map[string]string{"L": "boom"})) }()
	for sqlite.QueuedWrites(s) != 2 {
		runtime.Gosched()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _, after = s.Append(context.Background(), batch("after", map[string]string{"L": "after"}))
	}()
	for sqlite.QueuedWrites(s) != 3 {
		runtime.Gosched()
	}
	close(hold)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the writes queued with one that panics never returned")
	}
	if held != nil || before != nil || after != nil {
		t.Fatalf("writes beside one that panics: %v, %v, %v", held, before, after)
	}
	if boom != "boom" {
		t.Fatalf("write that panics among others: panic %v, want boom", boom)
	}
	appendWithin(t, s, batch("later", map[string]string{"L": "later"}))
	want := []string{"before", "after", "later"}
	if got := texts(mustRead(t, s, "L", 0)); !slices.Equal(got, want) {
		t.Fatalf("listener holds %q, want %q", got, want)
	}
	if got := texts(mustRead(t, reopen(t, s), "L", 0)); !slices.Equal(got, want) {
		t.Fatalf("reopened, listener holds %q, want %q", got, want)
	}
}
