package cursors

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// saver records what a Tracker saves, as a store would keep it.
type saver struct {
	mu     sync.Mutex
	calls  [][]Checkpoint
	cursor map[string]uint64 // the stored cursor never moves back
	lease  map[string]time.Time
	fail   error
}

func newSaver() *saver {
	return &saver{cursor: map[string]uint64{}, lease: map[string]time.Time{}}
}

func (s *saver) save(_ context.Context, cps []Checkpoint) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.calls = append(s.calls, append([]Checkpoint(nil), cps...))
	for _, c := range cps {
		k := c.Listener + "/" + c.Person + "/" + c.Client
		s.cursor[k] = max(s.cursor[k], c.Cursor)
		if !c.LeaseExpires.IsZero() {
			s.lease[k] = c.LeaseExpires
		}
	}
	return nil
}

func (s *saver) reset() []([]Checkpoint) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.calls
	s.calls = nil
	return c
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func key(p string) Key { return Key{Listener: "l", Person: p, Created: 1} }

// TestFlushSavesAcks: acknowledgements cost nothing until Flush, which
// saves each subscriber's newest position once, in one call; a position
// never moves back; a Flush with nothing new saves nothing.
func TestFlushSavesAcks(t *testing.T) {
	sv, ck := newSaver(), &clock{t0}
	tr := New(sv.save, ck.now, time.Hour)
	a, b := tr.Acquire(key("a"), time.Hour, t0), tr.Acquire(key("b"), time.Hour, t0)
	tr.Ack(a, 5)
	tr.Ack(a, 3) // late, lower: ignored
	tr.Ack(b, 7)
	if calls := sv.reset(); len(calls) != 0 {
		t.Fatalf("Ack saved at once: %v", calls)
	}
	if err := tr.Flush(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	calls := sv.reset()
	if len(calls) != 1 || len(calls[0]) != 2 {
		t.Fatalf("one Flush made %d saves: %v; want one of two", len(calls), calls)
	}
	if sv.cursor["l/a/"] != 5 || sv.cursor["l/b/"] != 7 {
		t.Fatalf("saved %v, want a at 5 and b at 7", sv.cursor)
	}
	if err := tr.Flush(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if calls := sv.reset(); len(calls) != 0 {
		t.Fatalf("a Flush with nothing new saved %v", calls)
	}
	if got := tr.Acked(key("a")); got != 5 {
		t.Fatalf("Acked = %d, want 5", got)
	}
}

// TestFlushRetries: a Flush that fails queues its acknowledgements again.
func TestFlushRetries(t *testing.T) {
	sv, ck := newSaver(), &clock{t0}
	tr := New(sv.save, ck.now, time.Hour)
	a := tr.Acquire(key("a"), time.Hour, t0)
	tr.Ack(a, 4)
	sv.fail = errors.New("disk full")
	if err := tr.Flush(context.Background(), false); err == nil {
		t.Fatal("Flush hid the store's error")
	}
	sv.fail = nil
	if err := tr.Flush(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if sv.cursor["l/a/"] != 4 {
		t.Fatalf("after a failed Flush the next one saved %v, want a at 4", sv.cursor)
	}
}

// TestLeaseRenewal: leases are renewed by the Flush after a third of the
// lease has passed, not before; Flush(all) renews every one.
func TestLeaseRenewal(t *testing.T) {
	sv, ck := newSaver(), &clock{t0}
	tr := New(sv.save, ck.now, 3*time.Hour)
	tr.Acquire(key("a"), 3*time.Hour, t0)
	ck.t = t0.Add(59 * time.Minute)
	_ = tr.Flush(context.Background(), false)
	if calls := sv.reset(); len(calls) != 0 {
		t.Fatalf("renewed before a third of the lease: %v", calls)
	}
	ck.t = t0.Add(time.Hour)
	_ = tr.Flush(context.Background(), false)
	if got, want := sv.lease["l/a/"], ck.t.Add(3*time.Hour); !got.Equal(want) {
		t.Fatalf("lease %v, want %v", got, want)
	}
	sv.reset()
	ck.t = ck.t.Add(time.Minute)
	_ = tr.Flush(context.Background(), true)
	if calls := sv.reset(); len(calls) != 1 || calls[0][0].LeaseExpires.IsZero() {
		t.Fatalf("Flush(all) did not renew: %v", calls)
	}
}

// TestChunks: one Flush saves at most Chunk subscribers per call.
func TestChunks(t *testing.T) {
	sv, ck := newSaver(), &clock{t0}
	tr := New(sv.save, ck.now, time.Hour)
	const n = 2*Chunk + 10
	for i := range n {
		tr.Ack(tr.Acquire(key(fmt.Sprint(i)), time.Hour, t0), 1)
	}
	_ = tr.Flush(context.Background(), false)
	calls := sv.reset()
	if len(calls) != 3 || len(calls[0]) != Chunk || len(calls[2]) != 10 {
		t.Fatalf("%d saves; want 3 of at most %d", len(calls), Chunk)
	}
}

// TestRelease: the last ListenUntil of a subscriber to end saves its
// position at once; an earlier one does not.
func TestRelease(t *testing.T) {
	sv, ck := newSaver(), &clock{t0}
	tr := New(sv.save, ck.now, time.Hour)
	a1 := tr.Acquire(key("a"), time.Hour, t0)
	a2 := tr.Acquire(key("a"), time.Hour, t0)
	if a1 != a2 {
		t.Fatal("two ListenUntil calls of one subscriber got two Subs")
	}
	tr.Ack(a1, 9)
	if err := tr.Release(context.Background(), a1); err != nil || len(sv.reset()) != 0 {
		t.Fatalf("Release of one of two saved, or failed: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the caller's context has ended: the save happens anyway
	if err := tr.Release(ctx, a2); err != nil {
		t.Fatal(err)
	}
	if sv.cursor["l/a/"] != 9 {
		t.Fatalf("last Release saved %v, want a at 9", sv.cursor)
	}
	if tr.Lookup(key("a")) != nil {
		t.Fatal("Sub kept after its last Release")
	}
}

// TestRaceAckFlush: acknowledgements from many goroutines while Flush runs
// end with every subscriber's newest position saved. Run it with -race.
func TestRaceAckFlush(t *testing.T) {
	sv, ck := newSaver(), &clock{t0}
	tr := New(sv.save, ck.now, time.Hour)
	const subs, acks = 8, 500
	var wg sync.WaitGroup
	stop, flushed := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(flushed)
		for {
			select {
			case <-stop:
				return
			default:
				_ = tr.Flush(context.Background(), false)
			}
		}
	}()
	for i := range subs {
		s := tr.Acquire(key(fmt.Sprint(i)), time.Hour, t0)
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for c := range uint64(acks) {
					tr.Ack(s, c+1)
					s.MarkSent(c + 1)
				}
			}()
		}
	}
	wg.Wait()
	// The background Flush may hold positions it took and has yet to
	// save: it must be done before the last one and the reads below.
	close(stop)
	<-flushed
	if err := tr.Flush(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	sv.mu.Lock()
	defer sv.mu.Unlock()
	for i := range subs {
		if got := sv.cursor[fmt.Sprintf("l/%d/", i)]; got != acks {
			t.Errorf("subscriber %d saved at %d, want %d", i, got, acks)
		}
	}
}
