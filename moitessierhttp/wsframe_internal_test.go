package moitessierhttp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// clientFrame is a masked frame as a client sends it.
func clientFrame(first byte, payload []byte, key [4]byte) []byte {
	b := []byte{first}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = binary.BigEndian.AppendUint16(append(b, 0x80|126), uint16(n))
	default:
		b = binary.BigEndian.AppendUint64(append(b, 0x80|127), uint64(n))
	}
	b = append(b, key[:]...)
	p := bytes.Clone(payload)
	for i := range p {
		p[i] ^= key[i%4]
	}
	return append(b, p...)
}

// TestParseWSHeader: frames of each length encoding parse whole, and not
// at all from any shorter prefix; the payload unmasks to what was sent.
func TestParseWSHeader(t *testing.T) {
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	for _, n := range []int{0, 1, 7, 8, 9, 125, 126, 127, 0xffff, 0x10000, 70000} {
		payload := bytes.Repeat([]byte("abcdefghijk"), n/11+1)[:n]
		f := clientFrame(0x81, payload, key)
		h, ok, err := parseWSHeader(f, 1<<20)
		if err != nil || !ok || !h.fin || h.op != wsOpText || h.n != n || h.size+h.n != len(f) {
			t.Fatalf("%d bytes: %+v, %v, %v", n, h, ok, err)
		}
		p := f[h.size:]
		wsUnmask(p, h.mask)
		if !bytes.Equal(p, payload) {
			t.Fatalf("%d bytes: payload does not unmask", n)
		}
		for cut := range h.size {
			if _, ok, err := parseWSHeader(f[:cut], 1<<20); ok || err != nil {
				t.Fatalf("%d bytes, header cut at %d: ok %v, %v", n, cut, ok, err)
			}
		}
	}
}

func TestParseWSHeaderErrors(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	unmasked := clientFrame(0x81, []byte("hi"), key)
	unmasked[1] &^= 0x80
	for _, c := range []struct {
		name  string
		frame []byte
		limit int
		code  websocket.StatusCode
	}{
		{"unmasked", unmasked, 100, websocket.StatusProtocolError},
		{"reserved bit", clientFrame(0xC1, []byte("hi"), key), 100, websocket.StatusProtocolError},
		{"unknown opcode", clientFrame(0x83, nil, key), 100, websocket.StatusProtocolError},
		{"fragmented ping", clientFrame(0x09, nil, key), 100, websocket.StatusProtocolError},
		{"long ping", clientFrame(0x89, make([]byte, 126), key), 1000, websocket.StatusProtocolError},
		{"over the limit", clientFrame(0x81, make([]byte, 101), key), 100, websocket.StatusMessageTooBig},
		{"continuation over the limit", clientFrame(0x80, make([]byte, 2), key), 1, websocket.StatusMessageTooBig},
	} {
		_, _, err := parseWSHeader(c.frame, c.limit)
		var pe *wsProtocolError
		if !errors.As(err, &pe) || pe.code != c.code {
			t.Errorf("%s: %v, want close %d", c.name, err, c.code)
		}
	}
	// A ping within a message near the limit is not counted against it.
	if _, ok, err := parseWSHeader(clientFrame(0x89, []byte("ping"), key), 0); !ok || err != nil {
		t.Errorf("ping at the limit: %v, %v", ok, err)
	}
}

func TestParseWSClose(t *testing.T) {
	for _, c := range []struct {
		p    []byte
		code websocket.StatusCode
		ok   bool
	}{
		{nil, websocket.StatusNoStatusRcvd, true},
		{wsClosePayload(websocket.StatusNormalClosure, "bye"), websocket.StatusNormalClosure, true},
		{wsClosePayload(4001, ""), 4001, true},
		{[]byte{3}, 0, false},
		{wsClosePayload(1005, ""), 0, false},
		{wsClosePayload(1004, ""), 0, false},
		{wsClosePayload(1006, ""), 0, false},
		{wsClosePayload(1011, ""), 1011, true},
		// Registered in the IANA WebSocket close code registry: service
		// restart, try again later, bad gateway.
		{wsClosePayload(1012, ""), 1012, true},
		{wsClosePayload(1013, ""), 1013, true},
		{wsClosePayload(1014, ""), 1014, true},
		{wsClosePayload(1015, ""), 0, false},
		{wsClosePayload(1016, ""), 0, false},
		{wsClosePayload(2999, ""), 0, false},
		{wsClosePayload(3000, ""), 3000, true},
		{wsClosePayload(4999, ""), 4999, true},
		{wsClosePayload(5000, ""), 0, false},
		{wsClosePayload(999, ""), 0, false},
		{append(wsClosePayload(1000, ""), 0xff), 0, false},
	} {
		code, err := parseWSClose(c.p)
		if (err == nil) != c.ok || code != c.code {
			t.Errorf("close payload %x: %v, %v; want %v, ok %v", c.p, code, err, c.code, c.ok)
		}
	}
}

// TestWSReadBufferGrowsWithData: a frame's header may claim a length up to
// the read limit; the read buffer grows with the bytes that came, not to
// the length claimed, so that a client pins no more memory than it sends.
func TestWSReadBufferGrowsWithData(t *testing.T) {
	wc := &wsConn{s: &Server{cfg: Config{MaxMessageBytes: 64 << 10}}}
	limit := wc.s.wsReadLimit()
	f := clientFrame(0x81, make([]byte, limit), [4]byte{1, 2, 3, 4})
	sent := 14 // the header, and nothing of the payload yet
	wc.rbuf = append(make([]byte, 0, sent), f[:sent]...)
	for sent < len(f)-1 {
		if !wc.consume(true) {
			t.Fatal("consume ended the reading of a frame in part")
		}
		if got, most := cap(wc.rbuf), max(2*sent, wsReadBuffer); got > most {
			t.Fatalf("%d bytes of a frame of %d came: a buffer of %d, want at most %d", sent, len(f), got, most)
		}
		// The next read fills what room there is, but the frame's last byte.
		n := min(cap(wc.rbuf)-len(wc.rbuf), len(f)-1-sent)
		if n == 0 {
			t.Fatalf("%d bytes of a frame of %d came: no room to read more", sent, len(f))
		}
		wc.rbuf = append(wc.rbuf, f[sent:sent+n]...)
		sent += n
	}
}

// timeoutConn is a connection whose writes send a byte, then time out.
type timeoutConn struct {
	net.Conn
	writes atomic.Int32
	closed atomic.Bool
}

type timeoutErr struct{}

func (timeoutErr) Error() string { return "i/o timeout" }
func (timeoutErr) Timeout() bool { return true }

func (c *timeoutConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return min(len(b), 1), timeoutErr{}
}
func (c *timeoutConn) Read(b []byte) (int, error)       { return 0, io.EOF }
func (c *timeoutConn) Close() error                     { c.closed.Store(true); return nil }
func (c *timeoutConn) SetReadDeadline(time.Time) error  { return nil }
func (c *timeoutConn) SetWriteDeadline(time.Time) error { return nil }

// TestWSWriteCutShort: a write that fails may have sent part of a frame;
// no frame follows it, and the connection ends.
func TestWSWriteCutShort(t *testing.T) {
	s := newInternalServer(t)
	nc := &timeoutConn{}
	ctx, cancel := context.WithCancelCause(context.Background())
	wc := &wsConn{s: s, nc: nc, ctx: ctx, cancel: cancel, pinger: time.AfterFunc(time.Hour, func() {})}
	if !s.streams.begin() {
		t.Fatal("the Server turned a stream away before closing")
	}
	s.metrics.open[transportWS].Add(1)
	if err := wc.writeControl(wsOpPong, []byte("ping payload")); err == nil {
		t.Fatal("a write that timed out reported no error")
	}
	if err := wc.writeControl(wsOpPong, []byte("again")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("a pong after a write cut short: %v, want net.ErrClosed", err)
	}
	wc.send(WSFrame{Type: "error"})
	if n := nc.writes.Load(); n != 1 {
		t.Fatalf("%d writes: frames followed one cut short", n)
	}
	<-s.streams.close() // finish ran
	if !nc.closed.Load() {
		t.Fatal("the connection was not closed")
	}
}
