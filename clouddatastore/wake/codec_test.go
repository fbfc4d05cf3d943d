package wake

import (
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
		"Version":     {3},
		"NoCreated":   {version, 1, 'a', 5},
		"BadCreated":  {version, 1, 'a', 5, 0x80},
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

// TestDecodeV1: a message of an earlier version of this package, with no
// creation times, decodes to heads of no known incarnation.
func TestDecodeV1(t *testing.T) {
	got, err := decode([]byte{versionV1, 1, 'a', 5, 2, 'b', 'c', 0x80, 0x01})
	want := []moitessier.Head{{Listener: "a", Seq: 5}, {Listener: "bc", Seq: 128}}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("decode = %v, %v; want %v", got, err, want)
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
