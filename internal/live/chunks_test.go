package live

import (
	"math/rand/v2"
	"testing"
)

// TestChunksKeepHandedSlices adds, trims and hands out messages of a buffer
// in small chunks, in random steps, and checks that every slice handed out
// still holds what it held when handed out (readers keep them after the
// lock is released), that a slice's capacity ends at its length, and that
// from returns the messages asked for, in order, never past a chunk.
func TestChunksKeepHandedSlices(t *testing.T) {
	type handed struct {
		s    []Message
		seqs []Cursor
	}
	r := rand.New(rand.NewPCG(1, 2))
	var (
		c     chunks[Message]
		kept  []handed
		next  = Cursor(1)
		first = Cursor(1) // oldest held
	)
	c.setSize(8) // chunks of 4
	for step := 0; step < 5000; step++ {
		switch r.IntN(4) {
		case 0, 1:
			for range r.IntN(6) + 1 {
				c.push(&Message{Seq: next})
				next++
			}
		case 2:
			k := r.IntN(c.len() + 1)
			if k == 0 {
				k = 1
			}
			if c.len() > k {
				first += Cursor(c.len() - k)
				c.keepNewest(k)
			}
		case 3:
			if c.len() == 0 {
				continue
			}
			i, limit := r.IntN(c.len()), r.IntN(10)+1
			s := c.from(i, limit)
			if len(s) == 0 || len(s) > min(limit, 4) || cap(s) != len(s) {
				t.Fatalf("from(%d, %d) of %d: len %d cap %d", i, limit, c.len(), len(s), cap(s))
			}
			h := handed{s: s}
			for j, m := range s {
				if want := first + Cursor(i+j); m.Seq != want {
					t.Fatalf("from(%d, %d): message %d has seq %d, want %d", i, limit, j, m.Seq, want)
				}
				h.seqs = append(h.seqs, m.Seq)
			}
			kept = append(kept, h)
		}
		if c.len() > 0 && (c.first().Seq != first || c.last().Seq != next-1) {
			t.Fatalf("step %d: holds %d..%d, want %d..%d", step, c.first().Seq, c.last().Seq, first, next-1)
		}
	}
	for _, h := range kept {
		for j, m := range h.s {
			if m.Seq != h.seqs[j] {
				t.Fatalf("a handed slice changed: %d became %d", h.seqs[j], m.Seq)
			}
		}
	}
	c.reset(&Message{Seq: 100000})
	if c.len() != 1 || c.first().Seq != 100000 || c.last().Seq != 100000 {
		t.Fatalf("after reset: %d messages", c.len())
	}
}
