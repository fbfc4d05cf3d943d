package memstore

import "github.com/likestripes/moitessier"

// chunkSize is how many messages one chunk of a listener's log holds.
const chunkSize = 1024

// msgLog is a listener's messages, oldest first, in chunks of chunkSize:
// appending never copies what is already stored (one growing slice would
// copy all of it, again and again, as it grows), and dropping the oldest
// frees whole chunks. The first chunk grows as a slice does, so that a
// listener with few messages holds little; later ones are made whole.
type msgLog struct {
	chunks [][]moitessier.Message // every chunk but the last is full
	off    int                    // index in chunks[0] of the oldest message kept
	n      int                    // messages kept
}

func (g *msgLog) len() int { return g.n }

// at returns the i-th message kept, 0 being the oldest.
func (g *msgLog) at(i int) *moitessier.Message {
	p := g.off + i
	return &g.chunks[p/chunkSize][p%chunkSize]
}

func (g *msgLog) append(m moitessier.Message) {
	last := len(g.chunks) - 1
	switch {
	case last < 0:
		g.chunks = append(g.chunks, []moitessier.Message{m})
	case len(g.chunks[last]) < chunkSize:
		g.chunks[last] = append(g.chunks[last], m)
	default:
		c := make([]moitessier.Message, 1, chunkSize)
		c[0] = m
		g.chunks = append(g.chunks, c)
	}
	g.n++
}

// copyRange returns a copy of the messages i to j-1.
func (g *msgLog) copyRange(i, j int) []moitessier.Message {
	if i >= j {
		return nil
	}
	out := make([]moitessier.Message, 0, j-i)
	for i < j {
		p := g.off + i
		c := g.chunks[p/chunkSize]
		k := min(len(c), p%chunkSize+j-i)
		out = append(out, c[p%chunkSize:k]...)
		i += k - p%chunkSize
	}
	return out
}

// dropOldest removes the k oldest messages.
func (g *msgLog) dropOldest(k int) {
	k = min(k, g.n)
	// Clear what is dropped from a chunk that stays, so that its texts
	// can be collected.
	for k > 0 {
		c := g.chunks[0]
		d := min(k, len(c)-g.off)
		clear(c[g.off : g.off+d])
		g.off += d
		g.n -= d
		k -= d
		if g.off == chunkSize {
			g.chunks[0] = nil
			g.chunks = g.chunks[1:]
			g.off = 0
		}
	}
}

// search returns the smallest i in [0, n) for which f(message i) is true,
// or n; f must be false and then true along the log.
func (g *msgLog) search(f func(*moitessier.Message) bool) int {
	lo, hi := 0, g.n
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if !f(g.at(m)) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}
