package moitessier

import (
	"context"
	"time"
)

// What the tests of package moitessier_test reach inside a hub.

// CatchUpOnce runs one catch-up read, as the hub does every
// Options.CatchUpInterval, on its store, which must be a Watcher.
func (h *Hub) CatchUpOnce(ctx context.Context) { h.catchUp(ctx, h.store.(Watcher)) }

// HoldCache makes the hub's cache of listener id, as a ListenUntil on it
// does, bound to the incarnation created, until release is called.
func (h *Hub) HoldCache(id string, created time.Time) (release func()) {
	lv := h.lives.Acquire(id)
	lv.Bind(created)
	return func() { h.lives.Release(lv) }
}

// ObserveHead hands the hub a head of listener id, as its Watch does.
func (h *Hub) ObserveHead(id string, seq Cursor) {
	h.observeHeads([]Head{{Listener: id, Seq: seq}})
}

// CorrectCache puts right the head of the cache of listener id, as a
// subscriber that found it stale does (see live.Cache.Correct).
func (h *Hub) CorrectCache(id string, seen, head Cursor) {
	for _, c := range h.lives.Caches() {
		if c.ID == id {
			c.Cache.Correct(uint64(seen), uint64(head))
		}
	}
}

// CacheHead returns the head of the hub's cache of listener id, or 0.
func (h *Hub) CacheHead(id string) Cursor {
	for _, c := range h.lives.Caches() {
		if c.ID == id {
			return Cursor(c.Cache.Head())
		}
	}
	return 0
}
