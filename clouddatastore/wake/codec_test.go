package wake

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
)

func TestEncodeBounds(t *testing.T) {
	var heads []moitessier.Head
	for i := range 1000 {
		h := moitessier.Head{Listener: fmt.Sprintf("l%d", i), Seq: moitessier.Cursor(i) << 40}
		if i%2 == 0 {
			h.Created = time.Unix(0, 1_700_000_000_000_000_000+int64(i)).UTC()
		}
		heads = append(heads, h)
	}
	heads = append(heads, moitessier.Head{Listener: strings.Repeat("x", 300), Seq: 1}) // larger than max alone
	const max = 256
	msgs := encode(heads, max)
	var got []moitessier.Head
	for _, m := range msgs {
		if len(m) > max && len(m) < 300 {
			t.Fatalf("message of %d bytes, want at most %d", len(m), max)
		}
		hs, err := decode(m)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, hs...)
	}
	if !slices.Equal(got, heads) {
		t.Fatalf("decoded %d heads, want the %d encoded", len(got), len(heads))
	}
	if len(msgs) > 1000*25/(max-30)+2 {
		t.Fatalf("%d messages: poorly filled", len(msgs))
	}
}

func TestDecodeBad(t *testing.T) {
	for name, data := range map[string][]byte{
		"Empty":       {},
		"Version":     {2},
		"ShortID":     {version, 5, 'a'},
		"NoSeq":       {version, 1, 'a'},
		"BadVarint":   {version, 0x80},
		"HugeIDLen":   {version, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"TruncSeq":    {version, 1, 'a', 0x80},
		"VersionOnly": nil,
	} {
		if name == "VersionOnly" {
			if hs, err := decode([]byte{version}); err != nil || len(hs) != 0 {
				t.Errorf("%s: decode = %v, %v; want no heads", name, hs, err)
			}
			continue
		}
		if _, err := decode(data); !errors.Is(err, errBadMessage) {
			t.Errorf("%s: decode = %v, want errBadMessage", name, err)
		}
	}
}

// TestDecodeWithoutIncarnations: a message with no incarnations entry
// (from a process of an earlier version of this package, or whose heads
// have none) decodes to heads of no known incarnation, and so does one
// whose entry does not match its heads.
func TestDecodeWithoutIncarnations(t *testing.T) {
	for name, data := range map[string][]byte{
		"NoEntry":    {version, 1, 'a', 5, 2, 'b', 'c', 0x80, 0x01},
		"ShortEntry": {version, 1, 'a', 5, 2, 'b', 'c', 0x80, 0x01, 2, 0, 7, 0},
	} {
		got, err := decode(data)
		want := []moitessier.Head{{Listener: "a", Seq: 5}, {Listener: "bc", Seq: 128}}
		if name == "ShortEntry" {
			want = append(want, moitessier.Head{Listener: "\x00\x07", Seq: 0})
		}
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("%s: decode = %v, %v; want %v", name, got, err, want)
		}
	}
}

// TestEarlierDecoder: what a process of an earlier version of this
// package, which knows no incarnations entry, reads from a message with
// one: every head as sent, and one more, of a listener no hub makes (its
// ID begins with a NUL byte), which it ignores.
func TestEarlierDecoder(t *testing.T) {
	c := time.Unix(0, 1_700_000_000_000_000_000).UTC()
	msgs := encode([]moitessier.Head{{Listener: "a", Seq: 5, Created: c}, {Listener: "bc", Seq: 128}}, 1024)
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want 1", len(msgs))
	}
	// The earlier decoder: heads until the end.
	var got []moitessier.Head
	for b := msgs[0][1:]; len(b) > 0; {
		n, k := binary.Uvarint(b)
		id := string(b[k : k+int(n)])
		b = b[k+int(n):]
		seq, k := binary.Uvarint(b)
		b = b[k:]
		got = append(got, moitessier.Head{Listener: id, Seq: moitessier.Cursor(seq)})
	}
	if msgs[0][0] != 1 || len(got) != 3 || got[0] != (moitessier.Head{Listener: "a", Seq: 5}) || got[1] != (moitessier.Head{Listener: "bc", Seq: 128}) ||
		!strings.HasPrefix(got[2].Listener, "\x00") || got[2].Seq != 0 {
		t.Fatalf("an earlier decoder reads %v (version %d)", got, msgs[0][0])
	}
	heads, err := decode(msgs[0])
	if err != nil || len(heads) != 2 || !heads[0].Created.Equal(c) || !heads[1].Created.IsZero() {
		t.Fatalf("decode = %v, %v; want a's creation time and none for bc", heads, err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(encode([]moitessier.Head{{Listener: "a", Seq: 1}, {Listener: "bb", Seq: 1 << 60}}, 1024)[0])
	f.Add([]byte{version, 0x80})
	f.Fuzz(func(t *testing.T, data []byte) {
		heads, err := decode(data)
		if err != nil {
			return
		}
		// What decodes encodes back to the same bytes.
		if len(heads) == 0 {
			return
		}
		msgs := encode(heads, MaxMessageBytesLimit)
		if len(msgs) != 1 || string(msgs[0]) != string(data) {
			// Non-minimal varints decode but encode shorter; compare heads.
			again, err := decode(msgs[0])
			if err != nil || !slices.Equal(again, heads) {
				t.Fatalf("round trip of %x: %v, %v", data, again, err)
			}
		}
	})
}
