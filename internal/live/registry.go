package live

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Registry holds the Caches of the listeners that have subscribers in
// ListenUntil in this process, by listener ID, under one lock. A Cache
// lives from its first Acquire to its last Release; Drop and Replace retire
// it early (its listener was deleted), and Close retires them all and
// refuses new ones.
type Registry[M any] struct {
	seq      func(*M) uint64
	listener func(*M) string

	mu     sync.RWMutex
	caches map[string]*Cache[M]
	closed bool

	// Appends whose listeners are not known until they return (see
	// HoldAll): while there are any, every observed head is kept aside
	// in its cache, and the cache listed in noticed.
	allMu   sync.Mutex
	all     atomic.Int32
	noticed []*Cache[M]
}

// NewRegistry returns an empty registry of caches of messages of type M;
// seq returns a message's sequence number, listener its listener's ID.
func NewRegistry[M any](seq func(*M) uint64, listener func(*M) string) *Registry[M] {
	return &Registry[M]{seq: seq, listener: listener, caches: map[string]*Cache[M]{}}
}

// Acquire returns the cache of listener id, creating it, and counts one
// more subscriber on it. After Close it returns nil: Close sets closed
// before it marks the caches gone, under the same lock, so no cache is
// created that Close would miss.
func (r *Registry[M]) Acquire(id string) *Cache[M] {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	c := r.caches[id]
	if c == nil {
		c = NewCache(id, r.seq)
		r.caches[id] = c
	}
	c.refs++
	c.subs.Store(int32(c.refs))
	return c
}

// Release undoes one Acquire; the last one removes the cache.
func (r *Registry[M]) Release(c *Cache[M]) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c.refs--
	c.subs.Store(int32(c.refs))
	if c.refs == 0 && r.caches[c.id] == c {
		delete(r.caches, c.id)
	}
}

// Replace retires a cache that belongs to a deleted incarnation of its
// listener, so that the next Acquire makes a fresh one.
func (r *Registry[M]) Replace(c *Cache[M]) {
	r.mu.Lock()
	if r.caches[c.id] == c {
		delete(r.caches, c.id)
	}
	r.mu.Unlock()
	c.MarkGone()
}

// Drop tells the subscribers of deleted listener id that it is gone.
func (r *Registry[M]) Drop(id string) {
	r.mu.Lock()
	c := r.caches[id]
	delete(r.caches, id)
	r.mu.Unlock()
	if c != nil {
		c.MarkGone()
	}
}

// Bound is a cache as Caches found it: its listener, the incarnation it
// was bound to then (zero: none yet) and its head then.
type Bound[M any] struct {
	ID      string
	Created time.Time
	Head    uint64
	Cache   *Cache[M]
}

// Caches returns the caches with the incarnations they are bound to and
// their heads, for a catch-up: it reads the store's answer for them, and
// then drops with DropIf those the answer shows deleted, or made again,
// since.
func (r *Registry[M]) Caches() []Bound[M] {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Bound[M], 0, len(r.caches))
	for id, c := range r.caches {
		created, head := c.state()
		out = append(out, Bound[M]{ID: id, Created: created, Head: head, Cache: c})
	}
	return out
}

// DropIf drops, as Drop does, cache c if it is still its listener's: a
// cache that replaced it since Caches (a new incarnation's, made in this
// process after the store's answer was read) is left alone. It reports
// whether it dropped c.
func (r *Registry[M]) DropIf(c *Cache[M]) bool {
	r.mu.Lock()
	if r.caches[c.id] != c {
		r.mu.Unlock()
		return false
	}
	delete(r.caches, c.id)
	r.mu.Unlock()
	c.MarkGone()
	return true
}

// Close marks every cache gone, waking its subscribers, and makes Acquire
// return nil from now on.
func (r *Registry[M]) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for _, c := range r.caches {
		c.markClosed()
	}
}

// Len returns the number of caches: listeners with local subscribers.
func (r *Registry[M]) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.caches)
}

// Publish hands committed messages, of any listeners, to their caches (see
// Cache.Add; maxBuf bounds a cache): created(i) is the incarnation of the
// listener of msgs[i], asked only of messages whose listener has a cache.
// If local subscribers of a listener are still busy with earlier messages
// it yields the processor to them before it returns: the dispatcher never
// waits for a subscriber, but it lets those that can run (not those
// blocked writing to a slow client) catch up, so that an in-memory
// dispatcher cannot outrun its subscribers by an ever-growing backlog, and
// they read from the cache, not the store.
func (r *Registry[M]) Publish(msgs []M, created func(i int) time.Time, maxBuf int) {
	if len(msgs) == 0 {
		return
	}
	behind := false
	r.mu.RLock()
	for i := range msgs {
		if c := r.caches[r.listener(&msgs[i])]; c != nil {
			behind = c.Add(msgs[i:i+1], created(i), maxBuf) || behind
		}
	}
	r.mu.RUnlock()
	if behind {
		runtime.Gosched()
	}
}

// Observe records the heads that a store reported for listeners: for
// i < n, head(i) returns a listener's ID, its head, and the incarnation
// of the listener the head is of (zero: unknown); see Cache.Observe and
// Cache.Other.
func (r *Registry[M]) Observe(n int, head func(i int) (id string, seq uint64, created time.Time)) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.all.Load() > 0 {
		r.allMu.Lock()
		if r.all.Load() > 0 {
			defer r.allMu.Unlock()
			for i := range n {
				id, seq, created := head(i)
				if c := r.caches[id]; c != nil {
					c.Other(created)
					if c.notice(seq) {
						r.noticed = append(r.noticed, c)
					}
				}
			}
			return
		}
		r.allMu.Unlock()
	}
	for i := range n {
		id, seq, created := head(i)
		if c := r.caches[id]; c != nil {
			c.Other(created)
			c.Observe(seq)
		}
	}
}

// HoldAll is Hold for an append whose listeners this process does not know
// until it returns (a store that matches and appends in one statement):
// until UnholdAll, a head observed for any listener is kept aside, as Hold
// keeps those of its listeners.
func (r *Registry[M]) HoldAll() {
	r.allMu.Lock()
	r.all.Add(1)
	r.allMu.Unlock()
}

// UnholdAll ends a HoldAll, once the append's messages are published, and
// applies the heads observed meanwhile.
func (r *Registry[M]) UnholdAll() {
	r.allMu.Lock()
	r.all.Add(-1)
	noticed := r.noticed
	r.noticed = nil
	r.allMu.Unlock()
	for _, c := range noticed {
		c.applyNoticed()
	}
}

// Hold marks the listeners of an append this process is about to make
// (for i < n, listener(i) is one) that have a cache as being appended to,
// until Unhold of what it returns (see Cache.Hold). A store's notification
// of the append's commit can arrive before the append returns; while held,
// a cache keeps such a head aside rather than send its subscribers to read
// from the store the messages Publish is about to hand them.
func (r *Registry[M]) Hold(n int, listener func(i int) string) []*Cache[M] {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if len(r.caches) == 0 {
		return nil
	}
	var held []*Cache[M]
	for i := range n {
		if c := r.caches[listener(i)]; c != nil {
			c.Hold()
			held = append(held, c)
		}
	}
	return held
}

// Unhold ends the holds Hold returned.
func Unhold[M any](held []*Cache[M]) {
	for _, c := range held {
		c.Unhold()
	}
}
