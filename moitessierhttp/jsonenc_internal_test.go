package moitessierhttp

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
)

// TestEncodeLikeMarshal: encode writes what json.Marshal writes, byte for
// byte, for strings of every kind of character encoding/json escapes, and
// for random ones.
func TestEncodeLikeMarshal(t *testing.T) {
	texts := []string{
		"", "hi", `quote " backslash \ slash /`, "<script>&amp;</script>",
		"\x00\x01\x07\b\t\n\v\f\r\x1b\x1f\x7f", "é ☃ 𝄞 \u2027\u2028\u2029\u202a",
		"bad \xff utf-8 \xc3", "\xed\xa0\x80 surrogate", strings.Repeat("x", 1000),
	}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"a", "\"", "\\", "<", ">", "&", "\n", "\x01", "é", "\u2028", "\xff", "𝄞", "\x7f", " "}
	for range 2000 {
		var b strings.Builder
		for range rng.IntN(20) {
			b.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		texts = append(texts, b.String())
	}
	times := []time.Time{
		{}, time.Unix(0, 0), time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 120000000, time.FixedZone("x", 3600)), time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
	}
	for i, text := range texts {
		m := moitessier.Message{
			Listener: "s" + text, Seq: moitessier.Cursor(i * 7919), Dispatch: "d" + text, Scope: "room." + text,
			Sender: text, Text: text, Created: times[i%len(times)],
		}
		if got, want := encode(&m), marshalMessage(&m); !bytes.Equal(got, want) {
			t.Fatalf("encode(%q)\n got %s\nwant %s", text, got, want)
		}
	}
}

// TestEncodeYearOutOfRange: a time json.Marshal refuses panics, as before,
// rather than writing JSON a client cannot read.
func TestEncodeYearOutOfRange(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("encode of a message created in year 10000 did not panic")
		}
	}()
	encode(&moitessier.Message{Created: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)})
}

func BenchmarkEncode(b *testing.B) {
	m := moitessier.Message{Listener: "s797dccda4649bfd916c949a328760d9f", Seq: 12345, Dispatch: "18a2b3c4d5e6f7a8", Scope: "bench.fanout",
		Sender: "bench", Text: strings.Repeat("x", 100), Created: time.Now()}
	b.Run("append", func(b *testing.B) {
		for range b.N {
			encode(&m)
		}
	})
	b.Run("marshal", func(b *testing.B) {
		for range b.N {
			marshalMessage(&m)
		}
	})
}
