package memstore

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/likestripes/moitessier"
)

// TestMsgLog checks the chunked log against a plain slice through appends,
// drops and reads that cross chunk boundaries.
func TestMsgLog(t *testing.T) {
	var g msgLog
	var want []moitessier.Message
	seq := moitessier.Cursor(0)
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		for range r.IntN(3 * chunkSize) {
			seq++
			m := moitessier.Message{Seq: seq, Text: "m"}
			g.append(m)
			want = append(want, m)
		}
		if k := r.IntN(len(want) + 1); round%3 == 0 {
			g.dropOldest(k)
			want = want[k:]
		}
		if g.len() != len(want) {
			t.Fatalf("round %d: len %d, want %d", round, g.len(), len(want))
		}
		if len(g.chunks) > g.len()/chunkSize+2 {
			t.Fatalf("round %d: %d chunks hold %d messages", round, len(g.chunks), g.len())
		}
		for range 20 {
			i := r.IntN(len(want) + 1)
			j := i + r.IntN(len(want)-i+1)
			if got := g.copyRange(i, j); !slices.Equal(got, want[i:j]) {
				t.Fatalf("round %d: copyRange(%d, %d) gives %d messages, wrong", round, i, j, len(got))
			}
			if i < len(want) {
				if got := *g.at(i); got != want[i] {
					t.Fatalf("at(%d) = %v, want %v", i, got.Seq, want[i].Seq)
				}
				c := want[i].Seq
				if got := g.search(func(m *moitessier.Message) bool { return m.Seq >= c }); got != i {
					t.Fatalf("search for %d: %d, want %d", c, got, i)
				}
			}
		}
	}
	// What is dropped from a chunk that stays is cleared.
	g.dropOldest(g.len())
	for _, c := range g.chunks {
		for _, m := range c[:g.off] {
			if m.Text != "" {
				t.Fatal("a dropped message is still held")
			}
		}
	}
}
