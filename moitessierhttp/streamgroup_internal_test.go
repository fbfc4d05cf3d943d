package moitessierhttp

import (
	"sync"
	"testing"
)

// TestStreamGroup: streams begun before close are waited for, goroutines
// they add are too, and streams that come after close are turned away,
// including while another goroutine waits for the group to drain (which a
// sync.WaitGroup, counted up from zero during its Wait, does not allow).
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
	<-drained

	// Requests keep coming while Shutdown waits.
	var h streamGroup
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				if h.begin() {
					h.done()
				}
			}
		})
	}
	<-h.close()
	wg.Wait()
	if h.begin() {
		t.Fatal("begin accepted after close")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n != 0 {
		t.Fatalf("%d still counted", h.n)
	}
}
