package moitessierhttp

import (
	"sync"

	"github.com/likestripes/moitessier"
)

// encCache keeps the JSON of recent messages, so that a message delivered
// to ten thousand subscribers of one listener is encoded once.
//
// It looks a message up first by its address: the slices that ListenUntil
// hands to the subscribers of one listener share their elements, so the
// common lookup hashes one pointer and allocates nothing. An entry records
// the message's identity, checked on every hit, so that a caller that
// reuses a variable for another message never gets a stale encoding. A
// message at another address than the one it was first encoded from (each
// subscriber that reads from the store gets its own copies) is looked up by
// its identity. Keys hold their messages alive only while cached.
type encCache struct {
	byAddr sync.Map // *moitessier.Message -> *encEntry
	byID   sync.Map // encKey -> *encEntry
	mu     sync.Mutex
	ring   []encSlot
	next   int
}

type encKey struct {
	listener, dispatch string
	seq                moitessier.Cursor
}

type encEntry struct {
	encKey
	b []byte
}

// encSlot is one cached key, in the order they were added.
type encSlot struct {
	addr *moitessier.Message
	id   encKey
}

const encCacheSize = 4096

func newEncCache() *encCache { return &encCache{ring: make([]encSlot, 0, encCacheSize)} }

// json returns the encoded message.
func (c *encCache) json(m *moitessier.Message) []byte {
	k := encKey{m.Listener, m.Dispatch, m.Seq}
	if v, ok := c.byAddr.Load(m); ok {
		if e := v.(*encEntry); e.encKey == k {
			return e.b
		}
		// The variable at m holds another message now: look it up by its
		// identity.
	}
	if v, ok := c.byID.Load(k); ok {
		return v.(*encEntry).b
	}
	e := &encEntry{encKey: k, b: encode(m)}
	if v, loaded := c.byID.LoadOrStore(k, e); loaded {
		return v.(*encEntry).b
	}
	c.add(encSlot{id: k})
	if _, loaded := c.byAddr.LoadOrStore(m, e); !loaded {
		c.add(encSlot{addr: m})
	}
	return e.b
}

// add records a new key, dropping the oldest when the cache is full.
func (c *encCache) add(s encSlot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.ring) < cap(c.ring) {
		c.ring = append(c.ring, s)
		return
	}
	old := c.ring[c.next]
	if old.addr != nil {
		c.byAddr.Delete(old.addr)
	} else {
		c.byID.Delete(old.id)
	}
	c.ring[c.next] = s
	c.next = (c.next + 1) % len(c.ring)
}
