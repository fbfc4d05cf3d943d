package moitessier

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// live is the in-process state of one listener that has local subscribers in
// ListenUntil: the newest messages, shared by all of them, and a broadcast
// channel that wakes them. Subscribers of one listener never each query the
// store for the same rows: whoever misses the cache reads once (fill) and
// puts what it read in the cache for the others.
type live struct {
	id   string
	refs int // local ListenUntil calls; guarded by Hub.livesMu

	mu   sync.Mutex
	buf  []Message // contiguous sequence numbers, ascending; elements never change once written
	held []Message // committed messages past a gap after buf, waiting for it to fill

	// back is the newest store read that did not join buf (it lay below
	// it): every message after backFrom up to its last, so subscribers
	// behind the cache at any cursor in that range share one read instead
	// of each reading the same rows.
	back     []Message
	backFrom Cursor
	head     Cursor // highest sequence number known to be committed
	wake     chan struct{}
	gone     bool // the listener was deleted

	// While this hub appends to the listener (local > 0), a head notified
	// by the store is kept in noticed until an append ends: the append's
	// own messages, which its dispatcher is about to add, must not send
	// subscribers to the store first.
	local   int
	noticed Cursor

	created time.Time // the incarnation the cache belongs to; see bind

	// waiting counts the subscribers that found nothing new since the
	// last wake-up: they wait on wake. subs mirrors refs, for add and
	// broadcast, which run under mu, not livesMu.
	waiting int32
	subs    atomic.Int32
	// busy counts the messages added since a dispatch last found every
	// local subscriber waiting.
	busy int

	// Wake-ups of many subscribers are coalesced (see broadcast): lastWake
	// is when wake was last closed, and pending says a timer will close it.
	lastWake time.Time
	pending  bool

	fillMu sync.Mutex
}

func newLive(id string) *live { return &live{id: id, wake: make(chan struct{})} }

// next returns the cached messages after cur (at most limit), or need=true if
// messages after cur exist but are not in the cache. With nothing new it
// returns the channel that will be closed when something changes.
func (lv *live) next(cur Cursor, limit int) (msgs []Message, wake <-chan struct{}, need, gone bool) {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	if lv.gone {
		return nil, nil, false, true
	}
	if cur < lv.head {
		if n := len(lv.buf); n > 0 {
			base := lv.buf[0].Seq
			if cur+1 >= base && cur+1 <= lv.buf[n-1].Seq {
				i := int(cur + 1 - base)
				j := min(n, i+limit)
				return lv.buf[i:j:j], nil, false, false
			}
		}
		if n := len(lv.back); n > 0 && cur >= lv.backFrom && cur < lv.back[n-1].Seq {
			i, _ := slices.BinarySearchFunc(lv.back, cur+1, func(m Message, c Cursor) int { return cmp.Compare(m.Seq, c) })
			j := min(n, i+limit)
			return lv.back[i:j:j], nil, false, false
		}
		return nil, nil, true, false
	}
	lv.waiting++
	return nil, lv.wake, false, false
}

// add puts committed messages of this listener, in ascending order, into the
// cache and wakes the waiters. It reports whether local subscribers were
// still busy with earlier messages (not all of them waiting): see
// Hub.publish. Messages already known are ignored. A message
// past a gap is held back until the gap fills (concurrent dispatchers
// publish their commits in any order, microseconds apart); if the gap does
// not fill soon, the cache restarts at the new messages and readers behind
// them use the store.
func (lv *live) add(msgs []Message, max int) (behind bool) {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	if lv.waiting >= lv.subs.Load() {
		lv.busy = 0
	} else {
		lv.busy += len(msgs)
	}
	behind = lv.busy >= yieldAfter && lv.busy%yieldAfter == 0
	changed := false
	for _, m := range msgs {
		changed = lv.put(m) || changed
	}
	if len(lv.held) > maxHeld {
		// The gap did not fill: restart the cache at the held messages.
		slices.SortFunc(lv.held, func(a, b Message) int { return cmp.Compare(a.Seq, b.Seq) })
		lv.buf = []Message{lv.held[0]}
		for _, m := range lv.held[1:] {
			if m.Seq == lv.buf[len(lv.buf)-1].Seq+1 {
				lv.buf = append(lv.buf, m)
			} else if m.Seq > lv.buf[len(lv.buf)-1].Seq {
				lv.buf = []Message{m}
			}
		}
		lv.held = nil
		lv.head = max64(lv.head, lv.buf[len(lv.buf)-1].Seq)
		changed = true
	}
	if len(lv.buf) > max {
		lv.buf = lv.buf[len(lv.buf)-max/2:]
	}
	if changed {
		lv.broadcast()
	}
	return behind
}

// yieldAfter is how many messages dispatchers may add while local
// subscribers are busy before they yield to them (see Hub.publish).
const yieldAfter = 32

// maxHeld bounds the messages a listener holds back waiting for a gap.
const maxHeld = 64

// put adds one message; it reports whether the cache grew. An empty cache
// starts at a message no higher than head+1: below that, every message is
// in the store; above it, the ones between are still on their way.
func (lv *live) put(m Message) bool {
	n := len(lv.buf)
	switch {
	case n > 0 && m.Seq <= lv.buf[n-1].Seq:
		return false
	case n > 0 && m.Seq == lv.buf[n-1].Seq+1:
		lv.buf = append(lv.buf, m)
	case n == 0 && m.Seq <= lv.head+1:
		lv.buf = []Message{m} // never overwrite an array readers may hold
	default:
		lv.held = append(lv.held, m)
		return false
	}
	lv.head = max64(lv.head, m.Seq)
	lv.release()
	return true
}

// release moves held messages that now follow on into the cache.
func (lv *live) release() bool {
	moved := false
	for i := 0; i < len(lv.held); {
		h := lv.held[i]
		n := len(lv.buf)
		switch {
		case n > 0 && h.Seq <= lv.buf[n-1].Seq:
			lv.held = slices.Delete(lv.held, i, i+1)
		case n > 0 && h.Seq == lv.buf[n-1].Seq+1, n == 0 && h.Seq <= lv.head+1:
			if n == 0 {
				lv.buf = []Message{h}
			} else {
				lv.buf = append(lv.buf, h)
			}
			lv.head = max64(lv.head, h.Seq)
			lv.held = slices.Delete(lv.held, i, i+1)
			moved, i = true, 0
		default:
			i++
		}
	}
	return moved
}

// observe records that the listener's head is at least h.
func (lv *live) observe(h Cursor) {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	if lv.local > 0 {
		lv.noticed = max(lv.noticed, h)
		return
	}
	lv.raise(h)
}

// hold and unhold bracket an append by this hub to the listener; see local.
func (lv *live) hold() {
	lv.mu.Lock()
	lv.local++
	lv.mu.Unlock()
}

// unhold ends an append begun by hold and applies a head noticed meanwhile:
// by now the append's messages are in the cache, and a head beyond them
// is another writer's, to be read.
func (lv *live) unhold() {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	lv.local--
	lv.raise(lv.noticed)
	if lv.local == 0 {
		lv.noticed = 0
	}
}

func (lv *live) raise(h Cursor) {
	if h > lv.head {
		lv.head = h
		lv.release()
		lv.broadcast()
	}
}

// headAt returns the highest sequence number known to be committed.
func (lv *live) headAt() Cursor {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	return lv.head
}

func (lv *live) markGone() {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	if !lv.gone {
		lv.gone = true
		lv.wakeNow(time.Time{})
	}
}

// Coalescing of wake-ups. Every local subscriber of a listener waits on the
// same channel, and each wake-up costs the runtime about a microsecond per
// waiting goroutine (each is rescheduled and runs select again), whether it
// then finds one message or a hundred. When more than coalesceAbove
// subscribers wait, they are therefore woken at most once per
// wakeEvery × waiting subscribers (at most maxWakeEvery): the first message after
// a quiet spell wakes them at once, and those that follow within the
// interval wait for its end and are handed over together. Subscribers
// still busy with earlier messages see new ones without waiting: only the
// sleepers are delayed, by at most the interval.
const (
	coalesceAbove = 32
	wakeEvery     = 2 * time.Microsecond
	maxWakeEvery  = 2 * time.Millisecond
)

// broadcast wakes the waiting subscribers, at once or (see coalesceAbove)
// at the end of the current interval. lv.mu is held.
func (lv *live) broadcast() {
	n := lv.waiting
	if n <= coalesceAbove {
		lv.wakeNow(time.Time{})
		return
	}
	if lv.pending {
		return
	}
	every := min(time.Duration(n)*wakeEvery, maxWakeEvery)
	now := time.Now()
	wait := every - now.Sub(lv.lastWake)
	if wait <= 0 {
		lv.wakeNow(now)
		return
	}
	lv.pending = true
	time.AfterFunc(wait, func() {
		lv.mu.Lock()
		defer lv.mu.Unlock()
		if lv.pending {
			lv.wakeNow(time.Now())
		}
	})
}

// wakeNow closes the wake channel; lv.mu is held.
func (lv *live) wakeNow(now time.Time) {
	lv.waiting = 0
	close(lv.wake)
	lv.wake = make(chan struct{})
	lv.lastWake, lv.pending = now, false
}

// fill reads messages after cur from the store, once for all local
// subscribers that need the same rows, and caches them. It also returns the
// head known before the read: every message up to it was committed before
// the read began, so an empty read means they are gone (retention).
func (lv *live) fill(ctx context.Context, s Store, cur Cursor, limit, max int) ([]Message, Cursor, error) {
	lv.fillMu.Lock()
	defer lv.fillMu.Unlock()
	h0 := lv.headAt()
	if msgs, _, need, _ := lv.next(cur, limit); !need {
		return msgs, h0, nil
	}
	msgs, err := s.Read(ctx, lv.id, cur, limit)
	if err != nil {
		return nil, h0, err
	}
	lv.add(msgs, max)
	if len(msgs) > 0 {
		lv.mu.Lock()
		lv.back, lv.backFrom = msgs, cur
		lv.mu.Unlock()
	}
	return msgs, h0, nil
}

// bind ties the cache to one incarnation of the listener (its creation
// time): a listener deleted and created again under the same ID must not
// see the old one's messages. It reports whether lv belongs to created.
func (lv *live) bind(created time.Time) bool {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	if lv.created.IsZero() {
		lv.created = created
		return true
	}
	return lv.created.Equal(created)
}
