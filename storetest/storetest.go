// Package storetest is the conformance suite of Moitessier: the definition
// of its semantics. Every moitessier.Store runs it with one call,
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, storetest.Harness{New: newStore, Reopen: reopen})
//	}
//
// and must pass it whole. The tests named Store* call the store's methods
// directly and hold it to the contract written on moitessier.Store (Close:
// every later call fails with ErrClosed, a second Close returns nil; Join,
// Leave, Read, Seek, Checkpoint; odd input stored byte for byte); the others
// drive it through a real moitessier.Hub, so they check the hub and the
// store together. A capability a store lacks (durability across Reopen, a
// second process through Share, Close) is skipped by name, never silently.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
)

// Harness tells the suite how to make stores.
type Harness struct {
	// New returns a new, empty store. The suite closes it (if it is a
	// moitessier.Closer) when the test ends. Required.
	New func(tb testing.TB) moitessier.Store
	// Reopen closes s and returns a new store on the same data, as a
	// restarted process would have. Nil for stores that keep nothing (the
	// durability tests are then skipped).
	Reopen func(tb testing.TB, s moitessier.Store) moitessier.Store
	// Share returns a second store on the same data as s, as another
	// process would open it. Nil for single-process stores (the
	// multi-process tests are then skipped).
	Share func(tb testing.TB, s moitessier.Store) moitessier.Store
}

// Run runs the whole suite.
func Run(t *testing.T, h Harness) {
	if h.New == nil {
		t.Fatal("storetest: Harness.New is required")
	}
	tests := []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"StoreClose", testStoreClose},
		{"StoreJoin", testStoreJoin},
		{"StoreLeave", testStoreLeave},
		{"StoreReadSeekCheckpoint", testStoreReadSeekCheckpoint},
		{"StoreCheckpointIncarnation", testStoreCheckpointIncarnation},
		{"StoreReadOf", testStoreReadOf},
		{"StoreLeaveOf", testStoreLeaveOf},
		{"StoreOddInput", testStoreOddInput},
		{"StoreMatchAppend", testStoreMatchAppend},
		{"Listeners", testListeners},
		{"SubscriberPages", testSubscriberPages},
		{"Quota", testQuota},
		{"BadConditions", testBadConditions},
		{"Dispatch", testDispatch},
		{"Private", testPrivate},
		{"Handlers", testHandlers},
		{"HandlerChain", testHandlerChain},
		{"BadDispatch", testBadDispatch},
		{"Atomic", testAtomic},
		{"Idempotency", testIdempotency},
		{"IdempotencyRecreated", testIdempotencyRecreated},
		{"IdempotencyMismatch", testIdempotencyMismatch},
		{"Messages", testMessages},
		{"ListenUntil", testListenUntil},
		{"NoLossDuringRespond", testNoLossDuringRespond},
		{"ServerCursors", testServerCursors},
		{"Start", testStart},
		{"Close", testClose},
		{"Recreate", testRecreate},
		{"RecreateCheckpoint", testRecreateCheckpoint},
		{"DeletedListener", testDeletedListener},
		{"CursorPastHead", testCursorPastHead},
		{"BadIDs", testBadIDs},
		{"ResumeInHub", testResumeInHub},
		{"ListenersChange", testListenersChange},
		{"GC", testGC},
		{"LeaseRenewal", testLeaseRenewal},
		{"Concurrent", testConcurrent},
		{"Reopen", testReopen},
		{"Share", testShare},
		{"RecreateElsewhere", testRecreateElsewhere},
		{"RecreateElsewhereHeard", testRecreateElsewhereHeard},
		{"ShareWatchStartsLate", testShareWatchStartsLate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, h) })
	}
}

// clock is a settable time source for Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newStore(tb testing.TB, h Harness) moitessier.Store {
	tb.Helper()
	s := h.New(tb)
	if c, ok := s.(moitessier.Closer); ok {
		tb.Cleanup(func() { _ = c.Close() })
	}
	return s
}

func newHub(tb testing.TB, s moitessier.Store, opts moitessier.Options) *moitessier.Hub {
	tb.Helper()
	if opts.GCInterval == 0 {
		opts.GCInterval = -1
	}
	if opts.AckInterval == 0 {
		opts.AckInterval = 10 * time.Millisecond
	}
	hub, err := moitessier.New(s, opts)
	if err != nil {
		tb.Fatalf("moitessier.New: %v", err)
	}
	tb.Cleanup(func() { _ = hub.Close() })
	return hub
}

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

func mustListener(tb testing.TB, hub *moitessier.Hub, c moitessier.Conditions) *moitessier.Listener {
	tb.Helper()
	l, err := hub.NewListener(ctxT(tb), c)
	if err != nil {
		tb.Fatalf("NewListener(%+v): %v", c, err)
	}
	return l
}

func mustDispatch(tb testing.TB, hub *moitessier.Hub, sender, scope, text string, opts ...moitessier.DispatchOption) moitessier.Dispatched {
	tb.Helper()
	d, err := hub.Dispatch(ctxT(tb), sender, scope, text, opts...)
	if err != nil {
		tb.Fatalf("Dispatch(%q, %q, %q): %v", sender, scope, text, err)
	}
	return d
}

// texts reads every message of l after c and returns their texts.
func texts(tb testing.TB, l *moitessier.Listener, c moitessier.Cursor) []string {
	tb.Helper()
	var out []string
	for {
		msgs, err := l.Messages(ctxT(tb), c, 100)
		if err != nil {
			tb.Fatalf("Messages(%d): %v", c, err)
		}
		if len(msgs) == 0 {
			return out
		}
		for _, m := range msgs {
			if m.Seq != c+1 {
				tb.Fatalf("Messages: seq %d after cursor %d, want %d", m.Seq, c, c+1)
			}
			if m.Listener != l.ID() {
				tb.Fatalf("Messages: message of listener %s on %s", m.Listener, l.ID())
			}
			c = m.Seq
			out = append(out, m.Text)
		}
	}
}

func wantTexts(tb testing.TB, l *moitessier.Listener, want ...string) {
	tb.Helper()
	got := texts(tb, l, 0)
	if !slices.Equal(got, want) {
		tb.Fatalf("listener %s (%v) holds %q, want %q", l.ID(), l.Info().Type, got, want)
	}
}

func wantErr(tb testing.TB, err, target error) {
	tb.Helper()
	if !errors.Is(err, target) {
		tb.Fatalf("error %v, want one wrapping %v", err, target)
	}
}

// collector gathers what a ListenUntil delivers.
type collector struct {
	mu   sync.Mutex
	msgs []moitessier.Message
	ch   chan struct{}
}

func newCollector() *collector { return &collector{ch: make(chan struct{}, 1)} }

func (c *collector) respond(ctx context.Context, msgs []moitessier.Message) error {
	c.mu.Lock()
	c.msgs = append(c.msgs, msgs...)
	c.mu.Unlock()
	select {
	case c.ch <- struct{}{}:
	default:
	}
	return nil
}

func (c *collector) texts() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, len(c.msgs))
	for i, m := range c.msgs {
		out[i] = m.Text
	}
	return out
}

// waitFor waits until the collector holds n messages or the deadline passes.
func (c *collector) waitFor(tb testing.TB, n int) {
	tb.Helper()
	deadline := time.After(30 * time.Second)
	for {
		c.mu.Lock()
		got := len(c.msgs)
		c.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-c.ch:
		case <-deadline:
			tb.Fatalf("waited 30s for %d messages; have %d: %q", n, got, c.texts())
		}
	}
}

// listen runs ListenUntil in a goroutine; stop ends it and returns its result.
func listen(tb testing.TB, l *moitessier.Listener, c interface {
	respond(context.Context, []moitessier.Message) error
}, since moitessier.Cursor) (stop func() (moitessier.Cursor, error)) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		cur moitessier.Cursor
		err error
	}
	done := make(chan result, 1)
	go func() {
		cur, err := l.ListenUntil(ctx, nil, c.respond, since, 0, 0)
		done <- result{cur, err}
	}()
	var once sync.Once
	var r result
	stop = func() (moitessier.Cursor, error) {
		once.Do(func() {
			cancel()
			r = <-done
			if errors.Is(r.err, context.Canceled) {
				r.err = nil
			}
		})
		return r.cur, r.err
	}
	tb.Cleanup(func() { stop() })
	return stop
}

func seqs(msgs []moitessier.Message) string {
	s := ""
	for _, m := range msgs {
		s += fmt.Sprint(m.Seq, " ")
	}
	return s
}
