package moitessierhttp

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// readBody reads a request's body, at most limit bytes, within
// Config.BodyTimeout: a body that does not arrive in time ends with
// ErrBodyTimeout (408) and the connection is closed. Call it only once the
// request is authenticated.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	rc := http.NewResponseController(w)
	// ServeHTTP set the deadline when the request came; from now is fairer
	// to a client that waited for a slow token check.
	timed := rc.SetReadDeadline(time.Now().Add(s.cfg.BodyTimeout)) == nil
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		if isTimeout(err) {
			return nil, fmt.Errorf("%w: no complete body within %v", ErrBodyTimeout, s.cfg.BodyTimeout)
		}
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: body: %w", ErrBadRequest, err)
	}
	if timed {
		// The whole body is in: lift the deadline, or it would end a
		// long-poll or the connection's next request, and keep the
		// connection (ServeHTTP marked it to close while the body was
		// unread).
		_ = rc.SetReadDeadline(time.Time{})
		w.Header().Del("Connection")
	}
	return b, nil
}

// drainBody reads and drops the body of a request whose endpoint takes
// none (a GET), so that a stream's connection has no deadline left on it.
func (s *Server) drainBody(w http.ResponseWriter, r *http.Request) error {
	if !hasBody(r) {
		return nil
	}
	_, err := s.readBody(w, r, 64<<10)
	return err
}

// decodeJSON decodes a JSON body strictly: valid UTF-8 and no \u escape
// of a lone UTF-16 surrogate (encoding/json would silently turn either
// into U+FFFD, so that a scope of invalid UTF-8 passed as a valid one),
// and nothing but white space after the value.
func decodeJSON(what string, b []byte, v any) error {
	if !utf8.Valid(b) {
		return fmt.Errorf("%w: %s: not valid UTF-8", ErrBadRequest, what)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrBadRequest, what, err)
	}
	if i := loneSurrogate(b); i >= 0 {
		return fmt.Errorf("%w: %s: \\u escape at byte %d: a lone UTF-16 surrogate, not a character", ErrBadRequest, what, i)
	}
	return nil
}

// loneSurrogate returns the offset of the first \u escape in the valid
// JSON b that names half of a UTF-16 surrogate pair without the other
// half, or -1. In valid JSON a backslash is always an escape in a string.
func loneSurrogate(b []byte) int {
	hex4 := func(i int) rune {
		if i+6 > len(b) || b[i] != '\\' || b[i+1] != 'u' {
			return -1
		}
		n, err := strconv.ParseUint(string(b[i+2:i+6]), 16, 16)
		if err != nil {
			return -1
		}
		return rune(n)
	}
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' {
			continue
		}
		r := hex4(i)
		switch {
		case r < 0: // another escape: skip the escaped byte
			i++
		case utf16.IsSurrogate(r):
			if r >= 0xDC00 { // a low half first
				return i
			}
			if lo := hex4(i + 6); lo < 0xDC00 || lo > 0xDFFF {
				return i
			}
			i += 11
		default:
			i += 5
		}
	}
	return -1
}
