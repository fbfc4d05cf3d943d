package moitessierhttp

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
)

// TestDecodeJSONWraps: a body that is not JSON is ErrBadRequest and keeps
// the decoder's error, for errors.As.
func TestDecodeJSONWraps(t *testing.T) {
	var v struct{}
	err := decodeJSON("body", []byte(`{"a":`), &v)
	var se *json.SyntaxError
	if !errors.Is(err, ErrBadRequest) || !errors.As(err, &se) {
		t.Fatalf("%v: want ErrBadRequest wrapping a *json.SyntaxError", err)
	}
}

// FuzzLoneSurrogate: loneSurrogate never panics, finds nothing in what
// encoding/json writes, and finds an escaped lone surrogate put anywhere in
// a string.
func FuzzLoneSurrogate(f *testing.F) {
	f.Add("hello", 0xdc00)
	f.Add(`\"\\u`, 0xd83d)
	f.Add("\u2028 \x01 😀", 0xdfff)
	f.Fuzz(func(t *testing.T, s string, half int) {
		_ = loneSurrogate([]byte(s))
		b, _ := json.Marshal(s)
		if i := loneSurrogate(b); i >= 0 {
			t.Fatalf("%s: lone surrogate at %d in what encoding/json wrote", b, i)
		}
		half = 0xd800 + (half & 0x7ff)
		bad := append(append([]byte(`"`), b[1:len(b)-1]...), []byte(fmt.Sprintf(`\u%04x"`, half))...)
		if loneSurrogate(bad) < 0 {
			t.Fatalf("%s: lone surrogate not found", bad)
		}
	})
}
