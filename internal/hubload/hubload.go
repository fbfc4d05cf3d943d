// Package hubload holds the subscribers of Moitessier's end-to-end load
// tests and benchmarks: minimal SSE and WebSocket clients on raw sockets,
// one goroutine and a small buffer each, so that ten thousand of them run
// beside a hub on the same machine and cost it as little CPU as possible.
//
// A client expects message texts that start with the publisher's send time
// in decimal Unix nanoseconds and a space (see [Text]); it records, for every
// message, the time from that send to its own receipt, and checks that the
// sequence numbers follow one another.
package hubload

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// TextBytes is the length of the texts Text makes.
const TextBytes = 100

var padding = strings.Repeat(".", TextBytes)

// Text returns a TextBytes-byte message text that carries t.
func Text(t time.Time) string {
	s := strconv.FormatInt(t.UnixNano(), 10)
	return s + " " + padding[:TextBytes-len(s)-1]
}

// SentAt returns the time a text made by Text carries, or the zero time.
func SentAt(text string) time.Time {
	i := strings.IndexByte(text, ' ')
	if i < 0 {
		return time.Time{}
	}
	n, err := strconv.ParseInt(text[:i], 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// Transport names how a Client reads from the hub.
type Transport string

// The transports a Client speaks.
const (
	SSE       Transport = "sse"
	WebSocket Transport = "ws"
)

// ErrTransport is returned for a transport other than SSE or WebSocket.
var ErrTransport = errors.New("hubload: unknown transport")

// Client is one subscriber connection to a hub, listening to one scope from
// its head. Run reads until it has Want messages; the other fields are
// meant to be read after Done is closed.
type Client struct {
	Transport Transport
	Conn      net.Conn

	Want int             // messages to read before Run returns
	Got  int             // messages read
	Lat  []time.Duration // each message's send-to-receipt time, in order
	Last int64           // Unix nanoseconds of the last receipt
	Bad  int64           // messages out of order or repeated
	Err  error           // why Run stopped early
	Done chan struct{}   // closed when Run returns

	// Delivered, if set, counts messages as they arrive, across clients.
	Delivered *atomic.Int64

	r    io.Reader // the stream after the ready event (SSE) or the frames (WebSocket)
	br   *bufio.Reader
	buf  []byte
	held int
	next uint64
	wsw  io.Writer // where WebSocket control answers go
}

// Dial connects a client to the hub at addr (host:port) with the bearer
// token tok, listens to scope as client from the head (since=head), and
// returns once the hub has confirmed the listen, so that every message
// dispatched afterwards reaches it. want is how many messages Run reads.
func Dial(ctx context.Context, tr Transport, addr, tok, scope, client string, want int) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &Client{Transport: tr, Conn: conn, Want: want, Lat: make([]time.Duration, 0, want), Done: make(chan struct{})}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetReadDeadline(dl)
	} else {
		_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
	}
	q := url.Values{"scope": {scope}, "client": {client}, "since": {"head"}}
	switch tr {
	case SSE:
		err = c.startSSE(q, tok)
	case WebSocket:
		err = c.startWS(q, tok)
	default:
		err = fmt.Errorf("%w %q", ErrTransport, tr)
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetReadDeadline(time.Time{})
	c.buf = make([]byte, 16<<10)
	return c, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.Conn.Close() }

// header sends a GET request and reads the response header; it returns the
// status line and whether the body is chunked.
func (c *Client) header(path string, hdr string) (status string, chunked bool, err error) {
	if _, err := fmt.Fprintf(c.Conn, "GET %s HTTP/1.1\r\nHost: hub\r\n%s\r\n", path, hdr); err != nil {
		return "", false, err
	}
	c.br = bufio.NewReaderSize(c.Conn, 1024)
	status, err = c.br.ReadString('\n')
	if err != nil {
		return status, false, fmt.Errorf("status %q: %w", strings.TrimSpace(status), err)
	}
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return status, false, err
		}
		t := bytes.TrimSpace(line)
		if len(t) == 0 {
			return strings.TrimSpace(status), chunked, nil
		}
		chunked = chunked || bytes.EqualFold(t, []byte("Transfer-Encoding: chunked"))
	}
}

func (c *Client) startSSE(q url.Values, tok string) error {
	status, chunked, err := c.header("/v1/events?"+q.Encode(), "Authorization: Bearer "+tok+"\r\nAccept: text/event-stream\r\n")
	if err != nil {
		return err
	}
	if !strings.Contains(status, " 200 ") {
		return fmt.Errorf("SSE: status %q", status)
	}
	if chunked {
		c.br = bufio.NewReaderSize(httputil.NewChunkedReader(c.br), 1024)
	}
	for { // up to the ready event
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if bytes.HasPrefix(line, []byte("event: ready")) {
			break
		}
	}
	c.r = c.br // what it holds first, then (bufio reads large buffers directly) the socket
	return nil
}

func (c *Client) startWS(q url.Values, tok string) error {
	var k [16]byte
	_, _ = rand.Read(k[:])
	key := base64.StdEncoding.EncodeToString(k[:])
	status, _, err := c.header("/v1/ws?"+q.Encode(), "Authorization: Bearer "+tok+"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "+key+"\r\n")
	if err != nil {
		return err
	}
	if !strings.Contains(status, " 101 ") {
		return fmt.Errorf("WebSocket: status %q", status)
	}
	c.r, c.wsw = c.br, c.Conn
	for { // up to the listening frame
		op, p, err := c.frame(nil)
		if err != nil {
			return err
		}
		if op == opText && bytes.Contains(p, []byte(`"type":"listening"`)) {
			return nil
		}
		if op == opText && bytes.Contains(p, []byte(`"type":"error"`)) {
			return fmt.Errorf("WebSocket: %s", p)
		}
	}
}

// Run reads messages until it has Want, then closes Done.
func (c *Client) Run() {
	defer close(c.Done)
	if c.Transport == WebSocket {
		c.runWS()
		return
	}
	for c.Got < c.Want {
		if c.held == len(c.buf) {
			c.buf = append(c.buf, make([]byte, len(c.buf))...)
		}
		n, err := c.r.Read(c.buf[c.held:])
		if n == 0 && err != nil {
			c.Err = err
			return
		}
		// Every event of one read arrived at once: timing them at the read
		// keeps the parsing of a long batch out of the figures.
		if err := c.consumeSSE(n, time.Now()); err != nil {
			c.Err = err
			return
		}
	}
}

// consumeSSE takes the n bytes read at now into c.buf after those held.
func (c *Client) consumeSSE(n int, now time.Time) error {
	got := c.Got
	data := c.buf[:c.held+n]
	for {
		nl := bytes.IndexByte(data, '\n')
		if nl < 0 {
			break
		}
		if err := c.sseLine(data[:nl+1], now); err != nil {
			return err
		}
		data = data[nl+1:]
	}
	c.held = copy(c.buf, data)
	if c.Delivered != nil {
		c.Delivered.Add(int64(c.Got - got))
	}
	return nil
}

var textMarker = []byte(`"text":"`)

func (c *Client) sseLine(line []byte, now time.Time) error {
	if id, ok := bytes.CutPrefix(line, []byte("id: ")); ok {
		seq, _ := strconv.ParseUint(string(bytes.TrimSpace(id)), 10, 64)
		c.seq(seq)
		return nil
	}
	if !bytes.HasPrefix(line, []byte("data: ")) {
		return nil
	}
	i := bytes.Index(line, textMarker)
	if i < 0 {
		return nil
	}
	return c.text(line[i+len(textMarker):], now)
}

// seq checks that seq follows the one before.
func (c *Client) seq(seq uint64) {
	if c.next != 0 && seq != c.next {
		c.Bad++
	}
	c.next = seq + 1
}

// text records the message whose text starts rest, received at now.
func (c *Client) text(rest []byte, now time.Time) error {
	j := bytes.IndexByte(rest, ' ')
	if j < 0 {
		return fmt.Errorf("message %.200q: no send time", rest)
	}
	sent, err := strconv.ParseInt(string(rest[:j]), 10, 64)
	if err != nil {
		return fmt.Errorf("message %.200q: %w", rest, err)
	}
	c.Lat = append(c.Lat, now.Sub(time.Unix(0, sent)))
	c.Last = now.UnixNano()
	c.Got++
	return nil
}

// WebSocket opcodes (RFC 6455).
const (
	opContinuation = 0
	opText         = 1
	opClose        = 8
	opPing         = 9
	opPong         = 10
)

var seqMarker = []byte(`"seq":`)

func (c *Client) runWS() {
	var msg []byte
	for c.Got < c.Want {
		op, p, err := c.frame(msg[:0])
		if err != nil {
			c.Err = err
			return
		}
		if op != opText {
			continue
		}
		msg = p
		now := time.Now()
		got := c.Got
		// {"type":"messages","ref":"","messages":[{…"seq":N,…"text":"…"},…]}
		for {
			i := bytes.Index(p, seqMarker)
			if i < 0 {
				break
			}
			p = p[i+len(seqMarker):]
			k := 0
			for k < len(p) && p[k] >= '0' && p[k] <= '9' {
				k++
			}
			seq, _ := strconv.ParseUint(string(p[:k]), 10, 64)
			c.seq(seq)
			t := bytes.Index(p, textMarker)
			if t < 0 {
				c.Err = fmt.Errorf("frame without text after seq %d", seq)
				return
			}
			p = p[t+len(textMarker):]
			if err := c.text(p, now); err != nil {
				c.Err = err
				return
			}
		}
		if c.Delivered != nil {
			c.Delivered.Add(int64(c.Got - got))
		}
	}
}

// frame reads one complete message (control frames are answered and
// returned alone), appending its payload to buf.
func (c *Client) frame(buf []byte) (op byte, payload []byte, err error) {
	var hdr [14]byte
	op = 0xff
	for {
		if _, err := io.ReadFull(c.r, hdr[:2]); err != nil {
			return 0, nil, err
		}
		fin, fop := hdr[0]&0x80 != 0, hdr[0]&0x0f
		masked := hdr[1]&0x80 != 0
		n := uint64(hdr[1] & 0x7f)
		switch n {
		case 126:
			if _, err := io.ReadFull(c.r, hdr[2:4]); err != nil {
				return 0, nil, err
			}
			n = uint64(binary.BigEndian.Uint16(hdr[2:4]))
		case 127:
			if _, err := io.ReadFull(c.r, hdr[2:10]); err != nil {
				return 0, nil, err
			}
			n = binary.BigEndian.Uint64(hdr[2:10])
		}
		if n > 64<<20 {
			return 0, nil, fmt.Errorf("WebSocket frame of %d bytes", n)
		}
		var mask [4]byte
		if masked {
			if _, err := io.ReadFull(c.r, mask[:]); err != nil {
				return 0, nil, err
			}
		}
		start := len(buf)
		buf = append(buf, make([]byte, n)...)
		if _, err := io.ReadFull(c.r, buf[start:]); err != nil {
			return 0, nil, err
		}
		if masked {
			for i := range buf[start:] {
				buf[start+i] ^= mask[i%4]
			}
		}
		switch fop {
		case opPing, opPong:
			// Control frames may come between the fragments of a message.
			if fop == opPing {
				if err := c.control(opPong, buf[start:]); err != nil {
					return 0, nil, err
				}
			}
			buf = buf[:start]
			if op == 0xff {
				return fop, nil, nil
			}
			continue
		case opClose:
			_ = c.control(opClose, nil)
			return opClose, buf[start:], fmt.Errorf("WebSocket closed by the hub: %q", buf[start:])
		case opContinuation:
		default:
			op = fop
		}
		if fin {
			return op, buf, nil
		}
	}
}

// control sends a masked control frame (a client's frames are masked).
func (c *Client) control(op byte, payload []byte) error {
	f := make([]byte, 0, 6+len(payload))
	f = append(f, 0x80|op, 0x80|byte(len(payload)))
	var mask [4]byte
	_, _ = rand.Read(mask[:])
	f = append(f, mask[:]...)
	for i, b := range payload {
		f = append(f, b^mask[i%4])
	}
	_, err := c.wsw.Write(f)
	return err
}
