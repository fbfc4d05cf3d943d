package moitessierhttp

import (
	"bytes"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"
	"weak"

	"github.com/likestripes/moitessier"
)

// heldBytes is what the cache's maps hold: each entry's encoding once.
func (c *encCache) heldBytes() (entries, n int) {
	seen := map[*encEntry]bool{}
	count := func(_, v any) bool {
		if e := v.(*encEntry); !seen[e] {
			seen[e] = true
			n += len(e.b)
		}
		return true
	}
	c.byID.Range(count)
	c.byAddr.Range(count)
	return len(seen), n
}

// TestEncCacheBytes: the encoding cache holds at most encCacheBytes,
// however large the messages (64 KiB of '<' is 384 KiB of JSON), keeps
// serving the newest, and does not keep an encoding over encCacheMaxEntry;
// every answer is still the message's encoding.
func TestEncCacheBytes(t *testing.T) {
	c := newEncCache()
	text := strings.Repeat("<", 64<<10)
	msgs := make([]moitessier.Message, 2*encCacheBytes/(6*len(text)))
	for i := range msgs {
		msgs[i] = moitessier.Message{Listener: "s1", Seq: moitessier.Cursor(i + 1), Dispatch: "d" + strconv.Itoa(i), Scope: "big", Sender: "alice", Text: text, Created: time.Unix(0, 0)}
		if got := c.json(&msgs[i]); !bytes.Equal(got, encode(&msgs[i])) {
			t.Fatalf("message %d: a wrong encoding", i)
		}
		if _, n := c.heldBytes(); n > encCacheBytes {
			t.Fatalf("after %d messages of %d bytes of JSON the cache holds %d bytes, more than %d", i+1, len(encode(&msgs[i])), n, encCacheBytes)
		}
	}
	entries, n := c.heldBytes()
	if c.bytes != n || entries == 0 {
		t.Fatalf("the cache counts %d bytes, its maps hold %d in %d entries", c.bytes, n, entries)
	}
	// The newest is served from the cache: the same bytes, not a new encoding.
	last := &msgs[len(msgs)-1]
	if a, b := c.json(last), c.json(last); &a[0] != &b[0] {
		t.Fatal("the newest message is not cached")
	}

	huge := moitessier.Message{Listener: "s1", Seq: 1 << 20, Dispatch: "huge", Text: strings.Repeat("<", encCacheMaxEntry/6+1)}
	if got := c.json(&huge); !bytes.Equal(got, encode(&huge)) {
		t.Fatal("a huge message: a wrong encoding")
	}
	if _, ok := c.byID.Load(encKey{huge.Listener, huge.Dispatch, huge.Seq}); ok {
		t.Fatalf("an encoding of %d bytes was cached, over the %d of encCacheMaxEntry", len(encode(&huge)), encCacheMaxEntry)
	}
	if _, ok := c.byAddr.Load(uintptr(unsafe.Pointer(&huge))); ok {
		t.Fatal("a huge message is cached by its address")
	}
}

// TestEncCachePinsNoMessage: a cached encoding keeps nothing of its
// message alive, nor the array of the slice it was in (a chunk of a live
// cache, with its other messages' texts): the cache counts its encodings'
// bytes, and what it pinned besides would not be counted. Its answer for
// the message at the same address stays right after the array is freed.
func TestEncCachePinsNoMessage(t *testing.T) {
	c := newEncCache()
	msgs := make([]moitessier.Message, 64)
	for i := range msgs {
		msgs[i] = moitessier.Message{Listener: "s1", Seq: moitessier.Cursor(i + 1), Dispatch: "d" + strconv.Itoa(i), Text: strings.Repeat("x", 1<<10)}
	}
	want := encode(&msgs[0])
	if got := c.json(&msgs[0]); !bytes.Equal(got, want) {
		t.Fatal("a wrong encoding")
	}
	w := weak.Make(&msgs[0])
	msgs = nil
	for i := 0; w.Value() != nil; i++ {
		if i == 20 {
			t.Fatal("the array of the cached message's slice is still alive after 20 collections: the cache pins it")
		}
		runtime.GC()
	}
	// The same identity is still served from the cache.
	again := moitessier.Message{Listener: "s1", Seq: 1, Dispatch: "d0", Text: strings.Repeat("x", 1<<10)}
	if got := c.json(&again); !bytes.Equal(got, want) {
		t.Fatal("a wrong encoding for the message encoded before")
	}
}
