package live

// maxChunk bounds the messages one chunk of a cache's buffer holds.
const maxChunk = 4096

// chunks is a cache's buffer: messages in chunks of at most size, oldest
// first. Readers are handed slices of a chunk (capped, so that appending
// never writes where they read) and keep them after the cache's lock is
// released, so an element, once written, never changes: adding writes past
// every chunk's length, and dropping the oldest messages drops or reslices
// chunks without touching their arrays. Unlike one growing slice, adding
// never copies what is already there (a slice trimmed to its newest half
// and grown again copied half the cache every CacheSize/2 messages). The
// first chunk of an empty buffer grows as a slice does, so that a listener
// with few messages holds little; later ones are made whole.
//
// A reader is handed one chunk's messages at most (from): with chunks of
// half the cache, a batch is cut short at most once per chunk, and no
// reader copies anything.
type chunks[M any] struct {
	cs   [][]M // every chunk but the last holds at least one message
	n    int   // messages held
	size int   // a chunk's length once full; set by setSize or the first push
}

// setSize makes chunks half a cache of maxBuf messages long, unless their
// length is set already: it is set once, so that every chunk between the
// first and the last holds exactly size messages (see from).
func (c *chunks[M]) setSize(maxBuf int) {
	if c.size == 0 {
		c.size = min(max(maxBuf/2, 1), maxChunk)
	}
}

func (c *chunks[M]) len() int { return c.n }

// first and last return the oldest and the newest message; c is not empty.
func (c *chunks[M]) first() *M { return &c.cs[0][0] }

func (c *chunks[M]) last() *M {
	l := c.cs[len(c.cs)-1]
	return &l[len(l)-1]
}

// push adds m after the newest message.
func (c *chunks[M]) push(m *M) {
	if c.size == 0 {
		c.size = maxChunk
	}
	size := c.size
	k := len(c.cs) - 1
	switch {
	case k < 0:
		c.cs = append(c.cs, []M{*m})
	case len(c.cs[k]) < size:
		c.cs[k] = append(c.cs[k], *m)
	default:
		nc := make([]M, 1, size)
		nc[0] = *m
		c.cs = append(c.cs, nc)
	}
	c.n++
}

// reset makes m the only message. The arrays readers may hold are left
// as they are.
func (c *chunks[M]) reset(m *M) {
	clear(c.cs)
	c.cs = append(c.cs[:0], []M{*m})
	c.n = 1
}

// keepNewest drops all but the newest k messages.
func (c *chunks[M]) keepNewest(k int) {
	for d := c.n - k; d > 0; {
		f := c.cs[0]
		if len(f) > d {
			c.cs[0] = f[d:]
			c.n -= d
			return
		}
		c.cs[0] = nil
		c.cs = c.cs[1:]
		c.n -= len(f)
		d -= len(f)
	}
}

// from returns up to limit messages from the i-th oldest on, all from one
// chunk, in a slice whose capacity ends at its length.
func (c *chunks[M]) from(i, limit int) []M {
	if i < 0 || i >= c.n {
		return nil
	}
	ch := c.cs[0]
	if i >= len(ch) {
		i -= len(ch)
		ch, i = c.cs[1+i/c.size], i%c.size
	}
	j := i + min(limit, len(ch)-i) // limit may be near MaxInt
	return ch[i:j:j]
}
