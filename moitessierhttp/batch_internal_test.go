package moitessierhttp

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/memstore"
)

// TestBatchIntervalBusyOnly: the default batch interval grows with the
// streams that write, not with the open ones: with
// two thousand idle connections open and no other stream busy, a stream
// that wrote does not wait (no timer is even made); with a hundred busy,
// it waits 4 ms, and never more than maxSSEBatch.
func TestBatchIntervalBusyOnly(t *testing.T) {
	for _, c := range []struct {
		busy int64
		want time.Duration
	}{{0, 0}, {1, 0}, {24, 0}, {25, time.Millisecond}, {100, 4 * time.Millisecond}, {4000, maxSSEBatch}, {1 << 40, maxSSEBatch}} {
		if got := batchInterval(c.busy); got != c.want {
			t.Errorf("batchInterval(%d) = %v, want %v", c.busy, got, c.want)
		}
	}

	s := newInternalServer(t)
	s.metrics.open[transportSSE].Add(1000)
	s.metrics.open[transportWS].Add(1000)
	defer s.metrics.open[transportSSE].Add(-1000)
	defer s.metrics.open[transportWS].Add(-1000)
	var p batchPause
	s.batchWait(context.Background(), &p)
	if p.timer != nil {
		t.Fatal("a lone busy stream among 2 000 idle connections waited")
	}
	// With 99 other streams writing it waits; a cancelled context ends
	// the wait at once.
	others := make([]int64, 99)
	for i := range others {
		s.busy.wrote(&others[i])
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.batchWait(ctx, &p)
	if p.timer == nil {
		t.Fatal("a stream among 100 busy ones did not wait")
	}
	// A stream is counted once a window, however often it writes.
	if n := s.busy.wrote(&others[0]); n > 100 || n < 99 {
		t.Fatalf("busy streams = %d after 100 streams wrote, want 100", n)
	}
}

// newInternalServer returns a Server with default settings on a memory
// store, closed (it and its hub) when the test ends.
func newInternalServer(t *testing.T) *Server {
	t.Helper()
	hub, err := moitessier.New(memstore.New(), moitessier.Options{GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hub.Close() })
	s, err := New(hub, Config{Secret: []byte("0123456789abcdef0123456789abcdef")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestBusyStreamsConcurrent: streams writing at once are each counted once
// in their window, none lost.
func TestBusyStreamsConcurrent(t *testing.T) {
	for try := 0; ; try++ {
		b := busyStreams{origin: time.Now()}
		var wg sync.WaitGroup
		lasts := make([]int64, 200)
		for i := range lasts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				b.wrote(&lasts[i])
				b.wrote(&lasts[i]) // a second write in the window counts nothing
			}()
		}
		wg.Wait()
		var probe int64
		n := b.wrote(&probe)
		if time.Since(b.origin) >= busyWindow && try < 5 {
			continue // a window ended meanwhile: the counts are split; again
		}
		if n != 201 {
			t.Fatalf("200 streams and a probe wrote in one window: estimate %d, want 201", n)
		}
		return
	}
}
