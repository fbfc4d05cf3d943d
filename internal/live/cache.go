// Package live is the hub's in-process delivery cache: for every listener
// with subscribers in ListenUntil in this process, the newest messages,
// shared by all of them, and the broadcast that wakes them. The Registry
// maps listener IDs to Caches under one lock.
//
// The ordering rules the cache keeps (order_test.go states them as code):
//
//   - A Cache's messages are contiguous and ascending: Next hands a
//     subscriber at cursor c exactly the messages c+1, c+2, … it holds,
//     never one past a gap, never one twice.
//   - Messages may be added in any order (concurrent dispatchers publish
//     their commits microseconds apart): one past a gap above head (whose
//     messages may still be on their way) is held back until the gap
//     fills; if it does not fill (more than maxHeld wait), the cache
//     restarts at the held messages and readers below them read the
//     store. One past a gap below head+1 is never held: every message of
//     the gap is committed, so the cache restarts at it at once, and
//     readers in the gap read the store.
//   - head is the highest sequence number known to be committed (added, or
//     observed from a store's notification). A reader below head whose
//     messages are not cached is told to read the store (need), and Fill
//     makes one read for every reader that needs the same rows. A head
//     observed for a deleted incarnation of the listener is put right
//     (Correct) when a read shows it stale.
//   - While this process appends to the listener (Hold … Unhold), an
//     observed head is kept aside: the append's own messages, about to be
//     added, must not send readers to the store first.
//   - A cache belongs to one incarnation of its listener (Bind), and
//     caches no message added for another (Add), whose number it takes
//     as a head observed, marking itself Suspect until a reader confirms
//     its incarnation in the store (so is a cache bound to another
//     incarnation than a head observed before it was bound); a deleted
//     listener's cache is marked gone and wakes its readers at once.
//
// The package knows nothing of the moitessier types: a Cache holds
// messages of any type M, whose sequence number and listener it reads
// through the functions given to NewRegistry.
package live

import (
	"context"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Cache is the in-process state of one listener that has local subscribers in
// ListenUntil: the newest messages, shared by all of them, and a broadcast
// channel that wakes them. Subscribers of one listener never each query the
// store for the same rows: whoever misses the cache reads once (fill) and
// puts what it read in the cache for the others.
type Cache[M any] struct {
	id   string
	refs int // local ListenUntil calls; guarded by Registry.mu

	mu   sync.Mutex
	buf  chunks[M] // contiguous sequence numbers, ascending; elements never change once written
	held []M       // committed messages past a gap after buf, waiting for it to fill

	// back is the newest store read that did not join buf (it lay below
	// it): every message after backFrom up to its last, so subscribers
	// behind the cache at any cursor in that range share one read instead
	// of each reading the same rows.
	back     []M
	backFrom uint64
	head     uint64 // highest sequence number known to be committed
	wake     chan struct{}
	gone     bool // the listener was deleted, or the Registry closed
	closed   bool // gone because the Registry closed, not the listener

	// While this hub appends to the listener (local > 0), a head notified
	// by the store is kept in noticed until an append ends: the append's
	// own messages, which its dispatcher is about to add, must not send
	// subscribers to the store first.
	local   int
	noticed uint64

	created time.Time // the incarnation the cache belongs to; see bind
	suspect bool      // see Suspect
	// heardOthers says that heads of more than one incarnation were
	// observed while the cache was not yet bound; heard is the one of
	// them, in Unix nanoseconds, or 0. Binding the cache to another marks
	// it Suspect (see bind).
	heardOthers bool
	heard       int64
	// marks counts markSuspect's calls: a Confirm whose check ran while
	// another came leaves the cache suspect.
	marks uint64

	// waiting counts the subscribers that found nothing new since the
	// last wake-up: they wait on wake. subs mirrors refs, for add and
	// broadcast, which run under mu, not Registry.mu.
	waiting int32
	subs    atomic.Int32
	// busy counts the messages added since a dispatch last found every
	// local subscriber waiting.
	busy int

	// Wake-ups of many subscribers are coalesced (see broadcast): lastWake
	// is when wake was last closed, and pending says a timer will close it.
	lastWake time.Time
	pending  bool
	// unwoken counts the messages added since the last wake-up.
	unwoken int

	fillMu sync.Mutex

	seq func(*M) uint64 // a message's sequence number
}

// NewCache returns an empty cache of listener id; seq returns a message's
// sequence number. The Registry makes its caches with it.
func NewCache[M any](id string, seq func(*M) uint64) *Cache[M] {
	return &Cache[M]{id: id, wake: make(chan struct{}), seq: seq}
}

// Next returns the cached messages after cur (at most limit, and at most the
// rest of one chunk of the buffer: see chunks), or need=true if messages
// after cur exist but are not in the cache, or if the cache is Suspect
// (its reader is to confirm it; see Confirm). With nothing new it returns
// the channel that will be closed when something changes.
func (lv *Cache[M]) Next(cur uint64, limit int) (msgs []M, wake <-chan struct{}, need, gone bool) {
	return lv.next(cur, limit, true)
}

// next is Next; with wait false, it neither returns the wake channel nor
// counts the caller among the waiting (Fill, which does not wait).
func (lv *Cache[M]) next(cur uint64, limit int, wait bool) (msgs []M, wake <-chan struct{}, need, gone bool) {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	if lv.gone {
		return nil, nil, false, true
	}
	if cur < lv.head || lv.suspect {
		if lv.buf.len() > 0 {
			base := lv.seq(lv.buf.first())
			if cur+1 >= base && cur+1 <= lv.seq(lv.buf.last()) {
				return lv.buf.from(int(cur+1-base), limit), nil, false, false
			}
		}
		if n := len(lv.back); n > 0 && cur >= lv.backFrom && cur < lv.seq(&lv.back[n-1]) {
			i := sort.Search(n, func(k int) bool { return lv.seq(&lv.back[k]) > cur })
			j := i + min(limit, n-i) // limit may be near MaxInt
			return lv.back[i:j:j], nil, false, false
		}
		return nil, nil, true, false
	}
	if !wait {
		return nil, nil, false, false
	}
	lv.waiting++
	return nil, lv.wake, false, false
}

// Add puts committed messages of this listener, in ascending order, into the
// cache and wakes the waiters. It reports whether local subscribers were
// still busy with earlier messages (not all of them waiting): see
// Registry.Publish. Messages already known are ignored. A message
// past a gap is held back until the gap fills (concurrent dispatchers
// publish their commits in any order, microseconds apart); if the gap does
// not fill soon, the cache restarts at the new messages and readers behind
// them use the store.
//
// created is the incarnation of the listener the messages were written to
// (see Bind): a dispatch may publish its commit late, after the listener
// was deleted and created again under the same ID, and the old
// incarnation's messages, numbered from where it stood, must not pass for
// the new one's. Messages of another incarnation than the cache's are not
// cached; a cache not yet bound is bound to theirs (its subscriber's Bind
// then fails, and it starts over with a fresh cache). Yet they may have
// been written to the cache's incarnation (stores append by ID, and the
// listener may have been made again between the dispatch's match and its
// append), or the cache's may be the deleted one (made again elsewhere):
// which, only the store knows. So their newest sequence number is taken as
// a head observed, as a notification's is, and the cache is marked
// Suspect: readers below that head ask the store, and the first confirms
// that the cache's incarnation is the store's before it reads (see
// Listener.step), or ends them all. A zero created is unknown, and taken as
// the cache's.
func (lv *Cache[M]) Add(msgs []M, created time.Time, maxBuf int) (behind bool) {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	if !lv.belongs(created) {
		if len(msgs) > 0 {
			lv.markSuspect()
			lv.observe(lv.seq(&msgs[len(msgs)-1]))
		}
		return false
	}
	return lv.add(msgs, maxBuf)
}

// belongs reports whether messages of the incarnation created go in the
// cache (see Add), binding it to created if it is not bound; lv.mu is held.
func (lv *Cache[M]) belongs(created time.Time) bool {
	switch {
	case created.IsZero() || lv.created.Equal(created):
		return true
	case lv.created.IsZero():
		lv.bind(created)
		return true
	}
	return false
}

// bind binds the cache, not yet bound, to the incarnation created, and
// marks it Suspect if a head of another was observed before (see Other):
// the head may be past the messages of created, or short of them, as
// much as a head observed after binding. lv.mu is held.
func (lv *Cache[M]) bind(created time.Time) {
	lv.created = created
	if lv.heardOthers || lv.heard != 0 && lv.heard != created.UnixNano() {
		lv.markSuspect()
	}
	lv.heard, lv.heardOthers = 0, false
}

// add is Add with lv.mu held.
func (lv *Cache[M]) add(msgs []M, maxBuf int) (behind bool) {
	if lv.waiting >= lv.subs.Load() {
		lv.busy = 0
	} else {
		lv.busy += len(msgs)
	}
	behind = lv.busy >= yieldAfter && lv.busy%yieldAfter == 0
	lv.buf.setSize(maxBuf)
	changed := false
	for i := range msgs {
		changed = lv.put(&msgs[i]) || changed
	}
	if len(lv.held) > maxHeld {
		// The gap did not fill: restart the cache at the held messages.
		sort.Slice(lv.held, func(i, j int) bool { return lv.seq(&lv.held[i]) < lv.seq(&lv.held[j]) })
		lv.buf.reset(&lv.held[0])
		for i := 1; i < len(lv.held); i++ {
			m := &lv.held[i]
			if s, last := lv.seq(m), lv.seq(lv.buf.last()); s == last+1 {
				lv.buf.push(m)
			} else if s > last {
				lv.buf.reset(m)
			}
		}
		lv.held = nil
		lv.head = max(lv.head, lv.seq(lv.buf.last()))
		changed = true
	}
	if lv.buf.len() > maxBuf {
		lv.buf.keepNewest(maxBuf / 2)
	}
	if changed {
		lv.unwoken += len(msgs)
		if lv.broadcast() {
			behind = true
		}
	}
	return behind
}

// yieldAfter is how many messages dispatchers may add while local
// subscribers are busy before they yield to them (see Registry.Publish).
const yieldAfter = 32

// maxHeld bounds the messages a listener holds back waiting for a gap.
const maxHeld = 64

// put adds one message; it reports whether the cache grew. A message that
// follows on from the newest is added; so is one no higher than head+1,
// every message before which is committed: an empty cache starts at it,
// and a cache whose newest message lies below head (a store read of a
// subscriber behind, say) starts again at it, readers below it reading
// the store. Only a message past head+1, the messages before which may
// still be on their way, is held back: holding one whose gap is committed
// would leave the head where it was, and up-to-date subscribers asleep,
// until a reader behind caught up.
//
// m points into the caller's slice, not at a copy: the address of a local
// copy given to seq, a function the compiler cannot see into, would move
// every message added to the heap.
func (lv *Cache[M]) put(m *M) bool {
	n := lv.buf.len()
	s := lv.seq(m)
	switch {
	case n > 0 && s <= lv.seq(lv.buf.last()):
		return false
	case n > 0 && s == lv.seq(lv.buf.last())+1, n == 0 && s <= lv.head+1:
		lv.buf.push(m)
	case s <= lv.head+1:
		lv.buf.reset(m)
	default:
		lv.held = append(lv.held, *m)
		return false
	}
	lv.head = max(lv.head, s)
	lv.release()
	return true
}

// release moves held messages that may now join the cache (see put) into
// it.
func (lv *Cache[M]) release() bool {
	moved := false
	for i := 0; i < len(lv.held); {
		h := lv.seq(&lv.held[i])
		n := lv.buf.len()
		switch {
		case n > 0 && h <= lv.seq(lv.buf.last()):
			lv.held = slices.Delete(lv.held, i, i+1)
			continue
		case n > 0 && h == lv.seq(lv.buf.last())+1, n == 0 && h <= lv.head+1:
			lv.buf.push(&lv.held[i])
		case h <= lv.head+1:
			lv.buf.reset(&lv.held[i])
		default:
			i++
			continue
		}
		lv.head = max(lv.head, h)
		lv.held = slices.Delete(lv.held, i, i+1)
		moved, i = true, 0
	}
	return moved
}

// Other marks the cache Suspect (see Add) if created, the incarnation of
// the listener a head observed next is of (a store's notification says
// it), is another than the cache's: that head may be another
// incarnation's (the listener was deleted and made again elsewhere, or the
// notification is an old one's, late), and the store is asked before
// anyone reads past it. A zero created is left as it is; a cache not yet
// bound keeps created, and is marked when it is bound to another (see
// bind).
func (lv *Cache[M]) Other(created time.Time) {
	if created.IsZero() {
		return
	}
	lv.mu.Lock()
	defer lv.mu.Unlock()
	switch ns := created.UnixNano(); {
	case lv.created.IsZero() && lv.heard == 0:
		lv.heard = ns
	case lv.created.IsZero():
		lv.heardOthers = lv.heardOthers || lv.heard != ns
	case !lv.created.Equal(created):
		lv.markSuspect()
	}
}

// markSuspect marks the cache Suspect and, if it was not, wakes its
// readers, who confirm it whatever their cursor (see Next): the listener
// may be gone, and they would otherwise sleep until messages or a catch-up
// came. lv.mu is held.
func (lv *Cache[M]) markSuspect() {
	lv.marks++
	if !lv.suspect {
		lv.suspect = true
		lv.wakeNow(time.Time{})
	}
}

// Observe records that the listener's head is at least h.
func (lv *Cache[M]) Observe(h uint64) {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	lv.observe(h)
}

// observe is Observe with lv.mu held.
func (lv *Cache[M]) observe(h uint64) {
	if lv.local > 0 {
		lv.noticed = max(lv.noticed, h)
		return
	}
	lv.raise(h)
}

// notice keeps h aside, as Observe does while the cache is held, for a
// Registry.HoldAll; it reports whether h is news.
func (lv *Cache[M]) notice(h uint64) bool {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	if h <= lv.head || h <= lv.noticed {
		return false
	}
	lv.noticed = h
	return true
}

// applyNoticed applies a head kept aside by notice, as Unhold does.
func (lv *Cache[M]) applyNoticed() {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	lv.raise(lv.noticed)
	if lv.local == 0 {
		lv.noticed = 0
	}
}

// Hold and unhold bracket an append by this hub to the listener; see local.
func (lv *Cache[M]) Hold() {
	lv.mu.Lock()
	lv.local++
	lv.mu.Unlock()
}

// Unhold ends an append begun by Hold and applies a head noticed meanwhile:
// by now the append's messages are in the cache, and a head beyond them
// is another writer's, to be read.
func (lv *Cache[M]) Unhold() {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	lv.local--
	lv.raise(lv.noticed)
	if lv.local == 0 {
		lv.noticed = 0
	}
}

func (lv *Cache[M]) raise(h uint64) {
	if h > lv.head {
		lv.head = h
		lv.release()
		lv.broadcast()
	}
}

// Correct puts right a head that the store showed stale: a read found
// nothing after a cursor below seen, the head it went by, and the store
// then gave the listener's head as h, lower. Heads reach the cache without
// an incarnation, and one of a deleted incarnation of the listener can
// come late (a notification late in its queue, a catch-up read taken
// before the deletion); the messages the cache holds are this
// incarnation's (see Add), so the head goes back to the newest of them,
// or h. A head raised since seen is left as it is.
func (lv *Cache[M]) Correct(seen, h uint64) {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	if lv.head != seen || h >= seen {
		return
	}
	if lv.buf.len() > 0 {
		h = max(h, lv.seq(lv.buf.last()))
	}
	if n := len(lv.back); n > 0 {
		h = max(h, lv.seq(&lv.back[n-1]))
	}
	lv.head = min(h, seen)
}

// Head returns the highest sequence number known to be committed.
func (lv *Cache[M]) Head() uint64 {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	return lv.head
}

// MarkGone marks the cache gone (its listener was deleted, or its
// incarnation replaced) and wakes its readers, whose next look finds so.
func (lv *Cache[M]) MarkGone() {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	lv.markGone()
}

// markGone is MarkGone with lv.mu held.
func (lv *Cache[M]) markGone() {
	if !lv.gone {
		lv.gone = true
		lv.wakeNow(time.Time{})
	}
}

// markClosed marks the cache gone for its Registry's Close, and Closed, if
// its listener had not gone first.
func (lv *Cache[M]) markClosed() {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	if !lv.gone {
		lv.closed = true
	}
	lv.markGone()
}

// Closed reports whether the cache went gone because its Registry closed
// (the hub shut down), rather than because its listener went: what ended
// its readers then says nothing of the listener.
func (lv *Cache[M]) Closed() bool {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	return lv.closed
}

// Coalescing of wake-ups. Every local subscriber of a listener waits on the
// same channel, and each wake-up costs the runtime one to two microseconds
// per waiting goroutine (each is rescheduled, runs select again, takes the
// cache's lock twice and acknowledges), whether it then finds one message
// or a hundred. When more than coalesceAbove subscribers wait, they are
// therefore woken at most once per wakeEvery × waiting subscribers (at
// most maxWakeEvery), which keeps wake-ups to a fifth of a core or less
// however fast messages come: the first message after a quiet spell wakes
// them at once, and those that follow within the interval wait for its end
// and are handed over together. Subscribers still busy with earlier
// messages see new ones without waiting: only the sleepers are delayed, by
// at most the interval. (A shorter interval left a dispatcher to a
// thousand subscribers waiting for the processor behind their wake-ups:
// see the README's benchmark section.) Once wakeBatch messages wait for a
// wake-up, the sleepers are woken at once and the dispatcher that added the
// last of them yields the processor to them (Add reports them behind):
// waiting longer would gain nothing (a respond call takes BatchLimit
// messages at most) and a fast dispatcher would leave them behind the
// cache, to read from the store, further behind with every read.
const (
	coalesceAbove = 32
	wakeEvery     = 8 * time.Microsecond
	maxWakeEvery  = 8 * time.Millisecond
	wakeBatch     = 128
)

// broadcast wakes the waiting subscribers, at once or (see coalesceAbove)
// at the end of the current interval. It reports whether it woke them
// early because wakeBatch messages waited. lv.mu is held.
func (lv *Cache[M]) broadcast() (full bool) {
	n := lv.waiting
	if n <= coalesceAbove {
		lv.wakeNow(time.Time{})
		return false
	}
	if lv.unwoken >= wakeBatch {
		lv.wakeNow(time.Now())
		return true
	}
	if lv.pending {
		return false
	}
	every := min(time.Duration(n)*wakeEvery, maxWakeEvery)
	now := time.Now()
	wait := every - now.Sub(lv.lastWake)
	if wait <= 0 {
		lv.wakeNow(now)
		return false
	}
	lv.pending = true
	time.AfterFunc(wait, func() {
		lv.mu.Lock()
		defer lv.mu.Unlock()
		if lv.pending {
			lv.wakeNow(time.Now())
		}
	})
	return false
}

// wakeNow closes the wake channel, if anyone waits on it; lv.mu is held.
// Every subscriber handed the channel by Next is counted in waiting, so
// with none, no one holds it and it can stay open for the next.
func (lv *Cache[M]) wakeNow(now time.Time) {
	if lv.waiting > 0 {
		lv.waiting = 0
		close(lv.wake)
		lv.wake = make(chan struct{})
	}
	lv.lastWake, lv.pending, lv.unwoken = now, false, 0
}

// ReadFunc reads up to limit messages of listener id after cursor after,
// in sequence order, of its incarnation created if the store can tell
// (the one the cache is bound to; see Bind): Store.Read, or
// IncarnationReader.ReadOf.
type ReadFunc[M any] func(ctx context.Context, id string, created time.Time, after uint64, limit int) ([]M, error)

// Fill reads messages after cur from the store, once for all local
// subscribers that need the same rows, and caches them. It also returns the
// head known before the read: every message up to it was committed before
// the read began, so an empty read means they are gone (retention). It
// reports gone, handing over nothing, if the cache is gone before the read
// (it may have waited for another subscriber's) or after it: an empty
// answer must not pass for an empty read, from which the caller would
// move its cursor past messages it never delivered.
func (lv *Cache[M]) Fill(ctx context.Context, read ReadFunc[M], cur uint64, limit, maxBuf int) (msgs []M, h0 uint64, gone bool, err error) {
	lv.fillMu.Lock()
	defer lv.fillMu.Unlock()
	h0 = lv.Head()
	msgs, _, need, gone := lv.next(cur, limit, false)
	if gone || !need {
		return msgs, h0, gone, nil
	}
	if msgs, err = read(ctx, lv.id, lv.bound(), cur, limit); err != nil {
		return nil, h0, false, err
	}
	lv.mu.Lock()
	defer lv.mu.Unlock()
	if lv.gone {
		return nil, h0, true, nil
	}
	lv.add(msgs, maxBuf)
	if len(msgs) > 0 {
		lv.back, lv.backFrom = msgs, cur
	}
	return msgs, h0, false, nil
}

// Bind ties the cache to one incarnation of the listener (its creation
// time): a listener deleted and created again under the same ID must not
// see the old one's messages. It reports whether lv belongs to created.
func (lv *Cache[M]) Bind(created time.Time) bool {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	if lv.created.IsZero() {
		lv.bind(created)
		return true
	}
	return lv.created.Equal(created)
}

// bound returns the incarnation the cache is bound to, zero if none.
func (lv *Cache[M]) bound() time.Time {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	return lv.created
}

// state returns the incarnation the cache is bound to (zero if none) and
// its head, as one look.
func (lv *Cache[M]) state() (time.Time, uint64) {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	return lv.created, lv.head
}

// Suspect reports whether messages, or a head, of another incarnation than
// the cache's were added or observed since its subscribers last confirmed
// it (see Add, Other and Confirm).
func (lv *Cache[M]) Suspect() bool {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	return lv.suspect
}

// Confirm runs check for a reader that found the cache Suspect, once for
// all the readers that find it so together: the others wait for it, and
// run nothing if it confirmed the cache, or if the cache is gone (their
// next look finds so). If check returns nil (it found the cache's
// incarnation in the store), the cache is no longer suspect and reads may
// go on, unless it was marked again while check ran (what marked it may
// have come after what check read): it then stays suspect, and its
// readers confirm it again. check's error is returned as is.
func (lv *Cache[M]) Confirm(check func() error) error {
	lv.fillMu.Lock()
	defer lv.fillMu.Unlock()
	lv.mu.Lock()
	skip, marks := !lv.suspect || lv.gone, lv.marks
	lv.mu.Unlock()
	if skip {
		return nil
	}
	if err := check(); err != nil {
		return err
	}
	lv.mu.Lock()
	if lv.marks == marks {
		lv.suspect = false
	}
	lv.mu.Unlock()
	return nil
}
