package moitessierhttp

import (
	"testing"
	"time"
)

// TestReserveBound: what a person's concurrent dispatches reserve of
// their handler time never passes the bucket, however many there are,
// and each gets at most the most asked.
func TestReserveBound(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	l := &limiter{rate: 0.25, burst: 4, buckets: map[string]*bucket{}}
	var held float64
	granted := 0
	for range 1000 {
		got, wait := l.reserve("alice", now, 2, 0.01)
		if got == 0 {
			if wait <= 0 {
				t.Fatal("a refusal without a wait")
			}
			continue
		}
		if got > 2 {
			t.Fatalf("a share of %v s, more than the 2 s asked", got)
		}
		held += got
		granted++
	}
	if held > 4 {
		t.Fatalf("1000 concurrent dispatches hold %v s of a 4 s bucket", held)
	}
	if granted < 5 {
		t.Fatalf("only %d concurrent dispatches got a share", granted)
	}
	// Given back, the bucket holds what it did (up to burst).
	l.give("alice", held, now)
	if got, _ := l.reserve("alice", now, 2, 0.01); got != 2 {
		t.Fatalf("after everything was given back, a share of %v s, want 2", got)
	}
}
