package moitessierhttp

import (
	"sync"
	"unsafe"

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
// its identity. The address is kept as a number, not a pointer: a
// pointer to one element would keep the whole array of its slice (a chunk
// of a listener's live cache, with every message's text in it) alive, and
// a few thousand entries, one per chunk, pin far more than the encodings
// counted. A number pins nothing; when the memory at an address is freed
// and used again for another message, the identity check tells them apart.
type encCache struct {
	byAddr sync.Map // message address (uintptr) -> *encEntry
	byID   sync.Map // encKey -> *encEntry
	mu     sync.Mutex
	ring   []encSlot // the entries cached, oldest at head
	head   int
	n      int // slots in use
	bytes  int // of the encodings cached
}

type encKey struct {
	listener, dispatch string
	seq                moitessier.Cursor
}

type encEntry struct {
	encKey
	b []byte
}

// encSlot is one cached entry, in the order they were added, and the
// address it is also cached by, if any.
type encSlot struct {
	e    *encEntry
	addr uintptr // 0: none
}

// The cache's bounds. It holds at most encCacheSlots entries and
// encCacheBytes of encodings, dropping the oldest first, and does not
// cache an encoding larger than encCacheMaxEntry: counted in entries
// alone, messages of the largest size (JSON may spell a byte of text in
// 6) would pin gigabytes. With the default message limit every message
// fits; an operator who raises it far gets the largest messages encoded
// again for each subscriber that sends them, which costs time, not memory.
const (
	encCacheSlots    = 4096
	encCacheBytes    = 64 << 20
	encCacheMaxEntry = 1 << 20
)

func newEncCache() *encCache { return &encCache{ring: make([]encSlot, encCacheSlots)} }

// json returns the encoded message.
func (c *encCache) json(m *moitessier.Message) []byte {
	k := encKey{m.Listener, m.Dispatch, m.Seq}
	at := uintptr(unsafe.Pointer(m))
	if v, ok := c.byAddr.Load(at); ok {
		if e := v.(*encEntry); e.encKey == k {
			return e.b
		}
		// The variable at m holds another message now: look it up by its
		// identity.
	}
	if v, ok := c.byID.Load(k); ok {
		return v.(*encEntry).b
	}
	b := encode(m)
	if len(b) > encCacheMaxEntry {
		return b
	}
	e := &encEntry{encKey: k, b: b}
	if v, loaded := c.byID.LoadOrStore(k, e); loaded {
		return v.(*encEntry).b
	}
	var addr uintptr
	if _, loaded := c.byAddr.LoadOrStore(at, e); !loaded {
		addr = at
	}
	c.add(encSlot{e: e, addr: addr})
	return e.b
}

// add records a new entry, dropping the oldest until it fits.
func (c *encCache) add(s encSlot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.n == len(c.ring) || c.n > 0 && c.bytes+len(s.e.b) > encCacheBytes {
		old := c.ring[c.head]
		c.ring[c.head] = encSlot{}
		c.head = (c.head + 1) % len(c.ring)
		c.n--
		c.bytes -= len(old.e.b)
		// Only if they still map to it: a key's entry may have been
		// replaced since.
		c.byID.CompareAndDelete(old.e.encKey, old.e)
		if old.addr != 0 {
			c.byAddr.CompareAndDelete(old.addr, old.e)
		}
	}
	c.ring[(c.head+c.n)%len(c.ring)] = s
	c.n++
	c.bytes += len(s.e.b)
}
