package moitessierhttp

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/likestripes/moitessier"
)

// encode returns a message's JSON, as json.Marshal(wireMessage(m)) would
// write it, byte for byte (TestEncodeLikeMarshal holds it to that), without
// reflection: every message a hub delivers is encoded once, which at
// fan-out 1 makes the encoder a part of the hub's work per message worth
// saving (see the README's benchmarks).
func encode(m *moitessier.Message) []byte {
	created := m.Created.UTC()
	if y := created.Year(); y < 0 || y > 9999 {
		// json.Marshal refuses such a time; say so as it would.
		return marshalMessage(m)
	}
	b := make([]byte, 0, 128+len(m.Listener)+len(m.Dispatch)+len(m.Scope)+len(m.Sender)+len(m.Text))
	b = append(b, `{"listener":`...)
	b = appendJSONString(b, m.Listener)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, uint64(m.Seq), 10)
	b = append(b, `,"dispatch":`...)
	b = appendJSONString(b, m.Dispatch)
	b = append(b, `,"scope":`...)
	b = appendJSONString(b, m.Scope)
	b = append(b, `,"sender":`...)
	b = appendJSONString(b, m.Sender)
	b = append(b, `,"text":`...)
	b = appendJSONString(b, m.Text)
	b = append(b, `,"created":"`...)
	b = created.AppendFormat(b, time.RFC3339Nano)
	return append(b, `"}`...)
}

// marshalMessage is encode through encoding/json.
func marshalMessage(m *moitessier.Message) []byte {
	b, err := json.Marshal(wireMessage(m))
	if err != nil {
		// A Message of strings, numbers and a time in years 0 to 9999
		// cannot fail to encode.
		panic(fmt.Sprintf("moitessierhttp: encode message: %v", err))
	}
	return b
}

// appendJSONString appends s as a JSON string, escaped as encoding/json
// escapes it: quote, backslash and control characters, <, > and & (as
// \u003c and so on), U+2028 and U+2029, and each invalid UTF-8 byte as
// \ufffd.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
