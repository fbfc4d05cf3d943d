package moitessierhttp

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// drainedWithin fails the test unless ch is closed within a few seconds.
func drainedWithin(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("the group did not drain")
	}
}

// TestStreamGroup: streams begun before close are waited for, and so are
// the goroutines they add; streams that come after close are turned away.
func TestStreamGroup(t *testing.T) {
	var g streamGroup
	if !g.begin() {
		t.Fatal("begin refused before close")
	}
	g.add()
	drained := g.close()
	if g.close() != drained {
		t.Fatal("a second close returned another channel")
	}
	if g.begin() {
		t.Fatal("begin accepted after close")
	}
	g.done()
	select {
	case <-drained:
		t.Fatal("drained with a goroutine still counted")
	default:
	}
	g.done()
	drainedWithin(t, drained)
}

// TestStreamGroupBeginsDuringDrain: requests keep beginning and ending
// streams while close waits for one still held, as requests keep coming
// while Shutdown waits (which a sync.WaitGroup, counted up from zero
// during its Wait, does not allow). None is counted once close has run,
// and the group drains when the held stream ends.
func TestStreamGroupBeginsDuringDrain(t *testing.T) {
	var g streamGroup
	if !g.begin() {
		t.Fatal("begin refused before close")
	}
	const workers = 8
	var started sync.WaitGroup
	var wg sync.WaitGroup
	var stop, late atomic.Bool
	started.Add(workers)
	for range workers {
		wg.Go(func() {
			first := true
			for !stop.Load() {
				closing := g.isClosing()
				if g.begin() {
					if closing {
						late.Store(true)
					}
					g.done()
				}
				if first {
					started.Done()
					first = false
				}
			}
		})
	}
	started.Wait()
	drained := g.close()
	select {
	case <-drained:
		t.Fatal("drained with a stream still held")
	default:
	}
	g.done()
	drainedWithin(t, drained)
	stop.Store(true)
	wg.Wait()
	if late.Load() || g.begin() {
		t.Fatal("a stream began after close")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.n != 0 {
		t.Fatalf("%d still counted", g.n)
	}
}
