package live

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// store is a listener's committed messages, as a Store holds them: Read
// serves every committed message after a cursor.
type store struct {
	mu   sync.Mutex
	msgs []Message // msgs[i].Seq == i+1
}

func (s *store) commit(n int) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Message, n)
	for i := range out {
		out[i] = Message{Listener: "l", Seq: Cursor(len(s.msgs) + 1)}
		s.msgs = append(s.msgs, out[i])
	}
	return out
}

func (s *store) Read(_ context.Context, _ string, _ time.Time, after uint64, limit int) ([]Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if after >= uint64(len(s.msgs)) {
		return nil, nil
	}
	end := int(after) + min(limit, len(s.msgs)-int(after))
	return slices.Clone(s.msgs[after:end]), nil
}

// reader is one subscriber's loop, as ListenUntil's step: it takes what
// the cache has after its cursor, reads the store when told to, and
// records what it was handed.
type reader struct {
	cur Cursor
	got []Cursor
}

// step returns the channel to wait on, or nil if it made progress.
func (r *reader) step(t testing.TB, c *Cache[Message], s *store) <-chan struct{} {
	msgs, wake, need, gone := c.Next(r.cur, 16)
	if gone {
		t.Fatal("cache gone")
	}
	if need {
		var h0 uint64
		var err error
		if msgs, h0, gone, err = c.Fill(context.Background(), s.Read, r.cur, 16, 64); err != nil || gone {
			t.Fatal("fill:", err, gone)
		}
		if len(msgs) == 0 {
			r.cur = max(r.cur, h0)
			return nil
		}
	}
	if len(msgs) == 0 {
		return wake
	}
	for _, m := range msgs {
		r.got = append(r.got, m.Seq)
	}
	r.cur = msgs[len(msgs)-1].Seq
	return nil
}

// checkOnceInOrder states the delivery rule: a reader that started at 0
// was handed 1, 2, … n, each once, in order, with no gap.
func checkOnceInOrder(t testing.TB, got []Cursor, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("handed %d messages, want %d: %v", len(got), n, got)
	}
	for i, s := range got {
		if s != Cursor(i+1) {
			t.Fatalf("message %d has seq %d: %v", i, s, got)
		}
	}
}

// checkNext states what Next promises at any cursor: messages that follow
// the cursor contiguously, none past the head; the store only below the
// head; a wait only at or past it. And what the cache holds: its buffer
// contiguous, and no message held back that may join it (one at most
// head+1 has every message before it committed).
func checkNext(t testing.TB, c *Cache[Message], cur Cursor) {
	t.Helper()
	head := c.Head()
	msgs, wake, need, _ := c.Next(cur, 1<<20)
	switch {
	case need && cur >= head:
		t.Fatalf("at %d, head %d: sent to the store with nothing to read", cur, head)
	case len(msgs) > 0:
		for i, m := range msgs {
			if m.Seq != cur+1+Cursor(i) || m.Seq > head {
				t.Fatalf("at %d, head %d: message %d has seq %d", cur, head, i, m.Seq)
			}
		}
	case wake != nil && cur < head:
		t.Fatalf("at %d, head %d: told to wait with messages to read", cur, head)
	}
	c.mu.Lock()
	var buf []Message
	for len(buf) < c.buf.len() {
		buf = append(buf, c.buf.from(len(buf), c.buf.len())...)
	}
	for i := 1; i < len(buf); i++ {
		if buf[i].Seq != buf[i-1].Seq+1 {
			c.mu.Unlock()
			t.Fatalf("cache not contiguous at %d: %d after %d", i, buf[i].Seq, buf[i-1].Seq)
		}
	}
	for _, m := range c.held {
		if h := c.head; m.Seq <= h+1 {
			c.mu.Unlock()
			t.Fatalf("message %d held back with head %d: nothing before it is on its way", m.Seq, h)
		}
	}
	c.mu.Unlock()
}

// FuzzOrder drives a cache with what the hub does to it — commits published
// out of order and more than once, heads observed from the store, appends
// held and released, readers at every cursor — in an order the input
// chooses, and checks Next's promises after every step and, at the end,
// that a reader from 0 was handed every message once, in order.
func FuzzOrder(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7})
	f.Add([]byte{9, 9, 9, 200, 17, 3, 250, 1, 2, 128, 64, 33})
	f.Add(make([]byte, 300))
	// Commit four, publish 3, then 1, then 4: a message past a gap must
	// wait for 2.
	f.Add([]byte{18, 14, 2, 8, 5, 2, 5})
	f.Fuzz(func(t *testing.T, ops []byte) {
		c := newLive("l")
		s := &store{}
		var pending []Message // committed, not yet published
		holds := 0
		r := &reader{}
		for _, op := range ops {
			switch op % 6 {
			case 0, 1: // commit 1..4 messages
				pending = append(pending, s.commit(int(op/6)%4+1)...)
			case 2: // publish a pending message, chosen by the input
				if len(pending) > 0 {
					i := int(op/6) % len(pending)
					c.Add(pending[i:i+1], anyInc, 64)
					if op&0x80 == 0 {
						pending = slices.Delete(pending, i, i+1)
					} // else: published again later, a duplicate
				}
			case 3: // a store notification of the head
				s.mu.Lock()
				h := uint64(len(s.msgs))
				s.mu.Unlock()
				c.Observe(h)
			case 4: // an append of this process begins or ends
				if op&0x80 == 0 || holds == 0 {
					c.Hold()
					holds++
				} else {
					c.Unhold()
					holds--
				}
			case 5: // the reader takes a step
				r.step(t, c, s)
			}
			checkNext(t, c, r.cur)
			checkNext(t, c, Cursor(op)%(c.Head()+1))
		}
		// Every append ends; the last notification arrives; every message
		// is published: the reader then catches up on all of them.
		for ; holds > 0; holds-- {
			c.Unhold()
		}
		c.Add(pending, anyInc, 64)
		n := len(s.msgs)
		c.Observe(uint64(n))
		for range 4*n + 4 {
			if r.step(t, c, s) != nil {
				break
			}
		}
		checkOnceInOrder(t, r.got, n)
	})
}

// TestRace runs what the hub runs at once on one cache — dispatchers that
// commit and publish (and hold while they append), a watcher that observes
// heads, and subscribers that read, wait and fill — and checks that every
// subscriber was handed every message once, in order. Run it with -race.
func TestRace(t *testing.T) {
	const (
		dispatchers = 4
		perDispatch = 300
		subscribers = 6
	)
	n := dispatchers * perDispatch
	c := newLive("l")
	s := &store{}
	c.subs.Store(subscribers)
	var wg sync.WaitGroup
	done := make(chan struct{})
	results := make([][]Cursor, subscribers)
	for i := range subscribers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &reader{}
			for len(r.got) < n {
				if wake := r.step(t, c, s); wake != nil {
					select {
					case <-wake:
					case <-time.After(time.Second):
						// A lost wake-up would hang here: report it.
						if r.cur < c.Head() {
							t.Errorf("subscriber %d: asleep at %d below head %d", i, r.cur, c.Head())
							return
						}
					}
				}
			}
			results[i] = r.got
		}()
	}
	var watched atomic.Bool
	go func() { // the watcher: heads from the store, sometimes ahead of publish
		defer watched.Store(true)
		for {
			select {
			case <-done:
				return
			default:
			}
			s.mu.Lock()
			h := uint64(len(s.msgs))
			s.mu.Unlock()
			c.Observe(h)
			time.Sleep(50 * time.Microsecond)
		}
	}()
	var dw sync.WaitGroup
	for range dispatchers {
		dw.Add(1)
		go func() {
			defer dw.Done()
			for range perDispatch {
				c.Hold()
				msgs := s.commit(1)
				if rand.IntN(8) == 0 {
					time.Sleep(time.Microsecond) // the commit's notification overtakes it
				}
				c.Add(msgs, anyInc, 64)
				c.Unhold()
			}
		}()
	}
	dw.Wait()
	c.Observe(uint64(n))
	wg.Wait()
	close(done)
	for i, got := range results {
		if got != nil {
			checkOnceInOrder(t, got, n)
		} else if !t.Failed() {
			t.Errorf("subscriber %d returned nothing", i)
		}
	}
}

// TestBehindReadHoldsNothingBack: a subscriber behind reads its backlog
// from the store into an empty cache, far below the head; the next message
// committed, just past the head, is not held back as if a gap before it
// were still on its way: it joins the cache at once and wakes the
// subscriber waiting at the head, and the one behind still reads every
// message once, in order.
func TestBehindReadHoldsNothingBack(t *testing.T) {
	c := newLive("l")
	s := &store{}
	s.commit(300)
	c.Observe(300)
	_, wake, _, _ := c.Next(300, 16) // up to date: waits
	behind := &reader{}
	if behind.step(t, c, s) != nil || len(behind.got) == 0 {
		t.Fatal("the subscriber at 0 read nothing")
	}
	checkNext(t, c, behind.cur)
	c.Add(s.commit(1), anyInc, 64)
	checkNext(t, c, 300)
	select {
	case <-wake:
	default:
		t.Fatal("message 301 did not wake the subscriber waiting at 300")
	}
	if msgs, _, need, _ := c.Next(300, 16); need || len(msgs) != 1 || msgs[0].Seq != 301 {
		t.Fatalf("at 300: %v, need %v; want message 301 from the cache", msgs, need)
	}
	for range 100 {
		if behind.step(t, c, s) != nil {
			break
		}
	}
	checkOnceInOrder(t, behind.got, 301)
}

// TestHoldKeepsHeadAside: while this process appends, an observed head does
// not move the cache (its readers would be sent to the store for messages
// about to be added); Unhold applies it.
func TestHoldKeepsHeadAside(t *testing.T) {
	c := newLive("l")
	c.Add([]Message{{Listener: "l", Seq: 1}}, anyInc, 64)
	c.Hold()
	c.Observe(3)
	if h := c.Head(); h != 1 {
		t.Fatalf("head %d while held, want 1", h)
	}
	if _, _, need, _ := c.Next(1, 10); need {
		t.Fatal("a reader at the cache's end sent to the store while the append is held")
	}
	c.Add([]Message{{Listener: "l", Seq: 2}}, anyInc, 64)
	c.Unhold()
	if h := c.Head(); h != 3 {
		t.Fatalf("head %d after Unhold, want the noticed 3", h)
	}
	if _, _, need, _ := c.Next(2, 10); !need {
		t.Fatal("a reader at 2 below head 3 not sent to the store")
	}
}

// TestRegistry: a cache lives from its first Acquire to its last Release;
// Drop and Close mark caches gone; after Close nothing is acquired;
// Publish reaches only the listeners with a cache.
func TestRegistry(t *testing.T) {
	r := NewRegistry(seqOf, listenerOf)
	a1, a2 := r.Acquire("a"), r.Acquire("a")
	if a1 != a2 || r.Len() != 1 {
		t.Fatalf("two Acquires of one listener: same %v, %d caches", a1 == a2, r.Len())
	}
	r.Publish([]Message{{Listener: "a", Seq: 1}, {Listener: "b", Seq: 1}}, func(int) time.Time { return anyInc }, 64)
	if msgs, _, _, _ := a1.Next(0, 10); len(msgs) != 1 {
		t.Fatalf("published message not cached: %v", msgs)
	}
	held := r.Hold(2, func(i int) string { return []string{"a", "b"}[i] })
	if len(held) != 1 || held[0] != a1 {
		t.Fatalf("Hold of a and b held %d caches", len(held))
	}
	Unhold(held)
	r.Release(a1)
	if r.Len() != 1 {
		t.Fatal("cache removed while a subscriber holds it")
	}
	r.Release(a2)
	if r.Len() != 0 {
		t.Fatal("cache kept after its last Release")
	}
	b := r.Acquire("b")
	r.Drop("b")
	if _, _, _, gone := b.Next(0, 10); !gone {
		t.Fatal("dropped cache not gone")
	}
	r.Release(b)
	c := r.Acquire("c")
	r.Close()
	if _, _, _, gone := c.Next(0, 10); !gone {
		t.Fatal("cache not gone after Close")
	}
	if r.Acquire("d") != nil {
		t.Fatal("Acquire after Close made a cache")
	}
}
