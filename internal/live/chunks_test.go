package live

import (
	"context"
	"math"
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

// TestCacheKeepsHandedSlices drives a Cache (Add out of order with gaps,
// duplicates, restarts past maxHeld, Observe, Fill) with small caches, so
// that its buffer runs over many chunks, and keeps every slice Next and
// Fill hand out: at the end every one must still hold what it held. Some
// reads ask for math.MaxInt messages (Options.BatchLimit may be that).
func TestCacheKeepsHandedSlices(t *testing.T) {
	for _, maxBuf := range []int{1, 2, 3, 4, 5, 7, 8, 16, 64} {
		for seed := uint64(0); seed < 40; seed++ {
			r := rand.New(rand.NewPCG(seed, uint64(maxBuf)))
			c := newLive("l")
			s := &store{}
			type kept struct {
				s    []Message
				seqs []Cursor
			}
			var ks []kept
			var pending []Message
			keep := func(m []Message) {
				if len(m) > 0 && cap(m) != len(m) {
					t.Fatalf("handed slice with spare cap: len %d cap %d", len(m), cap(m))
				}
				k := kept{s: m}
				for _, x := range m {
					k.seqs = append(k.seqs, x.Seq)
				}
				ks = append(ks, k)
			}
			for step := 0; step < 3000; step++ {
				switch r.IntN(6) {
				case 0:
					pending = append(pending, s.commit(r.IntN(5)+1)...)
				case 1, 2:
					if len(pending) > 0 {
						i := r.IntN(len(pending))
						j := min(len(pending), i+r.IntN(3)+1)
						c.Add(pending[i:j], anyInc, maxBuf)
						if r.IntN(5) != 0 {
							pending = append(pending[:i:i], pending[j:]...)
						}
					}
				case 3:
					s.mu.Lock()
					h := uint64(len(s.msgs))
					s.mu.Unlock()
					c.Observe(h)
				case 4, 5:
					cur := Cursor(r.IntN(int(c.Head()) + 1))
					limit := r.IntN(10) + 1
					if r.IntN(8) == 0 {
						limit = math.MaxInt
					}
					m, _, need, _ := c.Next(cur, limit)
					if need {
						var err error
						if m, _, _, err = c.Fill(context.Background(), s.Read, cur, limit, maxBuf); err != nil {
							t.Fatal(err)
						}
						// Fill's result is the store's slice: not capped.
						m = m[:len(m):len(m)]
					}
					for i, x := range m {
						if x.Seq != cur+1+Cursor(i) {
							t.Fatalf("maxBuf %d seed %d: Next(%d) [%d] = %d", maxBuf, seed, cur, i, x.Seq)
						}
					}
					keep(m)
				}
			}
			for _, k := range ks {
				for i, x := range k.s {
					if x.Seq != k.seqs[i] {
						t.Fatalf("maxBuf %d seed %d: handed slice changed: %d became %d", maxBuf, seed, k.seqs[i], x.Seq)
					}
				}
			}
		}
	}
}
