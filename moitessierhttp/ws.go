package moitessierhttp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/likestripes/moitessier"
)

// StatusTokenExpired is the WebSocket close code sent when the token of
// the connection expires: get a new token and reconnect.
const StatusTokenExpired websocket.StatusCode = 4001

// WSRequest is a frame a WebSocket client sends, as JSON text:
//
//	{"op":"listen","ref":"chat","type":"shared","scopes":["room.1"],"client":"tab1","since":"resume"}
//	{"op":"listen","ref":"mine","listener":"p3f…","since":12}
//	{"op":"ack","ref":"chat","seq":14}
//	{"op":"unlisten","ref":"chat"}                  (add "leave":true to stop being a subscriber)
//	{"op":"dispatch","ref":"d1","scope":"room.1","text":"hi","to":["bob"],"idempotency_key":"k1"}
//
// ref is the client's name for a listen or a dispatch, at most
// MaxRefBytes. since is a sequence number, "resume" (the default: the
// server-held cursor) or "head" (only new messages). A listen with
// since=N acknowledges N. start, as in the query of the other endpoints
// (see [ParseStart]), is where a subscriber that the listen makes starts.
//
// ack acknowledges the messages of a ref up to seq: the client has them.
// The server-held cursor moves only on acks (and on a listen's since=N),
// never because a frame was written, so a client that sends an ack for
// each messages frame once it has handled it, and comes back with
// since "resume", misses nothing and sees again at most the messages it
// had not acknowledged. An ack past what the ref was sent is an error;
// a client that never acks resumes from the since of its last listen.
type WSRequest struct {
	Op  string `json:"op"`
	Ref string `json:"ref"`

	Listener string      `json:"listener,omitempty"`
	Type     string      `json:"type,omitempty"`
	Scopes   []string    `json:"scopes,omitempty"`
	Client   string      `json:"client,omitempty"`
	Since    CursorParam `json:"since,omitempty"`
	Start    string      `json:"start,omitempty"`
	Leave    bool        `json:"leave,omitempty"`
	// Seq is the cursor an ack acknowledges.
	Seq uint64 `json:"seq,omitempty"`

	DispatchRequest
}

// MaxRefBytes is the longest ref a WebSocket request may carry, in bytes,
// as long as a name (moitessier.MaxNameBytes): a listen keeps its ref and
// repeats it in every frame it sends. A longer one gets an error frame,
// bad_request, with no ref.
const MaxRefBytes = moitessier.MaxNameBytes

// CursorParam is a cursor given in JSON as a number or a string ("resume", "head", "12").
type CursorParam string

// UnmarshalJSON accepts a JSON number or string.
func (c *CursorParam) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*c = CursorParam(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return err
	}
	*c = CursorParam(n)
	return nil
}

// WSFrame is a frame the server sends:
//
//	{"type":"listening","ref":"chat","listener":{…ListenerInfo},"reset":false}
//	{"type":"messages","ref":"chat","messages":[{…Message},…]}
//	{"type":"unlistened","ref":"chat"}
//	{"type":"dispatched","ref":"d1","result":{…DispatchResult}}
//	{"type":"error","ref":"chat","error":{…ErrorBody}}   (for a listen: it has ended)
//
// The connection closes with 1001 (going away) when the server shuts down
// (or its hub, first: an error frame shutting_down precedes it), with
// 4001 when the token expires, and abruptly when the client is too slow
// to take its messages; in every case it reconnects and listens again
// from the last seq it saw for each ref.
type WSFrame struct {
	Type     string          `json:"type"`
	Ref      string          `json:"ref,omitempty"`
	Listener *ListenerInfo   `json:"listener,omitempty"`
	Reset    bool            `json:"reset,omitempty"`
	Messages []Message       `json:"messages,omitempty"`
	Result   *DispatchResult `json:"result,omitempty"`
	Error    *ErrorBody      `json:"error,omitempty"`
}

// serveWS handles GET /v1/ws. Listeners may also be named in the query as
// for SSE (scope=…, listener=…, since=…): that listen gets the ref "".
//
// The handler returns once the connection is upgraded: the connection is
// then the hub's, which reads and writes its frames itself (the WebSocket
// library does only the handshake). Where it can (a TCP socket on Linux),
// no goroutine waits for the client's frames: the Server's close watcher
// says when there is something to read, and a goroutine then reads it and
// ends; elsewhere one goroutine reads. Pings and the close run on timers,
// so that an idle connection holds one goroutine per listen and no buffer.
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	c, ok := s.openListen(w, r, "application/json")
	if !ok {
		return
	}
	if err := s.wsOriginAllowed(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.holdStream(c.Subject); err != nil {
		s.writeError(w, r, err)
		return
	}
	if !s.streams.begin() {
		s.releaseStream(c.Subject)
		s.writeError(w, r, errServerClosing)
		return
	}
	hj := &wsHijack{ResponseWriter: w}
	// The origin is checked above, as CORS checks it.
	lib, err := websocket.Accept(hj, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil || hj.conn == nil {
		if hj.conn != nil {
			_ = hj.conn.Close()
		}
		s.streams.done()
		s.releaseStream(c.Subject)
		return // Accept answered the request
	}
	// The library's connection is dropped, the hub has the socket: without
	// its finalizer (which would close handshakeConn, a no-op), it goes at
	// the next collection rather than the one after.
	runtime.SetFinalizer(lib, nil)
	s.metrics.open[transportWS].Add(1)

	// The connection outlives the request: its context ends with the
	// connection (see stop), not with the handler. No listen's context is
	// its child (stop cancels them), so that an idle connection holds no
	// map of children; a dispatch's store calls, under it, may give it one
	// (pgx watches a statement's context with context.AfterFunc).
	ctx, cancel := context.WithCancelCause(context.Background())
	wc := &wsConn{
		s: s, nc: hj.conn, claims: c, holder: c.Subject, ctx: ctx, cancel: cancel,
		rbuf: hj.left,
	}
	now := time.Now()
	wc.mu.Lock()
	if life := s.tokenLife(c); life > 0 {
		wc.expires = now.Add(life)
	}
	wc.pingAt = now.Add(s.cfg.Heartbeat)
	// Set before it can run: tick takes wc.mu.
	wc.pinger = time.AfterFunc(wc.untilLocked(now), wc.tick)
	wc.mu.Unlock()
	// When the Server closes, the connection closes cleanly.
	if !s.ws.add(s.ctx, wc) {
		wc.stop(nil)
	}
	if q := r.URL.Query(); len(q["scope"]) > 0 || q.Get("listener") != "" {
		wc.listen(WSRequest{Op: "listen", Listener: q.Get("listener"), Type: q.Get("type"), Scopes: q["scope"], Client: q.Get("client"), Since: CursorParam(q.Get("since")), Start: q.Get("start")})
	}
	if rw, ok := s.closes.watchRead(wc.nc, wc.readable); ok {
		// The connection may have ended already (a write to it failed):
		// finish then runs, or ran, without this watch, which ends here.
		wc.mu.Lock()
		ended := wc.readDone
		if !ended {
			wc.watch = rw
		}
		wc.mu.Unlock()
		if ended {
			rw.stop()
			return
		}
		if wc.startRead() {
			// What came with the request, and what is there now, on this
			// goroutine, which ends next; then the watch is armed.
			wc.pass()
		}
		return
	}
	if wc.startRead() {
		go wc.readLoop()
	}
}

// startRead reports whether a read of the client's frames may start, and
// counts it in wc.wg: not once the connection's reading has ended.
func (wc *wsConn) startRead() bool {
	wc.mu.Lock()
	defer wc.mu.Unlock()
	if wc.readDone {
		return false
	}
	wc.wg.Add(1)
	return true
}

// readable is called by the read watch when the client sent something, or
// left: a goroutine reads what there is, then ends.
func (wc *wsConn) readable() {
	if wc.startRead() {
		go wc.pass()
	}
}

// pass reads and serves what the client sent until there is nothing more
// to read, then arms the read watch again. Listens, acks and dispatches
// run on it, one after the other as they came.
func (wc *wsConn) pass() {
	defer wc.wg.Done()
	for {
		if !wc.consume(true) {
			wc.endRead()
			return
		}
		if wc.rbuf == nil {
			wc.rbox = wsReadPool.Get().(*[]byte)
			wc.rbuf = (*wc.rbox)[:0]
		}
		n, err := wc.watch.read(wc.rbuf[len(wc.rbuf):cap(wc.rbuf)])
		if errors.Is(err, errWouldBlock) {
			break
		}
		if err != nil {
			wc.endRead()
			return
		}
		wc.rbuf = wc.rbuf[:len(wc.rbuf)+n]
	}
	if len(wc.rbuf) == 0 {
		// Nothing held between passes, unless a frame came in part.
		if wc.rbox != nil {
			*wc.rbox = wc.rbuf
			wsReadPool.Put(wc.rbox)
		}
		wc.rbuf, wc.rbox = nil, nil
	}
	if err := wc.watch.arm(); err != nil {
		wc.endRead()
	}
}

// readLoop reads and serves the client's frames until the connection
// ends, where there is no read watch. It runs listens and dispatches,
// which go deep into the store, on a goroutine of their own and waits for
// them: its own stack, which stays while the connection is idle, then
// stays small.
func (wc *wsConn) readLoop() {
	defer wc.wg.Done()
	defer wc.endRead()
	for wc.consume(false) {
		if cap(wc.rbuf) == 0 {
			wc.rbuf = make([]byte, 0, wsReadBuffer)
		}
		n, err := wc.nc.Read(wc.rbuf[len(wc.rbuf):cap(wc.rbuf)])
		wc.rbuf = wc.rbuf[:len(wc.rbuf)+n]
		if err != nil {
			return
		}
	}
}

// wsReadLimit is the largest message a WebSocket client may send: room
// for a dispatch of the largest message, JSON-escaped.
func (s *Server) wsReadLimit() int { return 6*s.cfg.MaxMessageBytes + 64<<10 }

// wsReadBuffer is the size of the buffer a connection reads its client's
// frames into: enough for the frames a client sends (acks, listens); a
// larger frame gets a buffer of its size.
const wsReadBuffer = 4 << 10

// wsReadPool holds the read buffers, which a connection holds only while
// it reads, or while it waits for the rest of a frame.
var wsReadPool = sync.Pool{New: func() any { b := make([]byte, 0, wsReadBuffer); return &b }}

// consume serves the whole frames at the front of wc.rbuf and keeps what
// is left, with room for the rest of its frame. It reports false once the
// connection's reading has ended (a close frame, a protocol error). With
// inline, requests run on the calling goroutine; else apart.
func (wc *wsConn) consume(inline bool) bool {
	b, off := wc.rbuf, 0
	need := 0
	for {
		h, ok, err := parseWSHeader(b[off:], wc.s.wsReadLimit()-len(wc.msg))
		if err != nil {
			wc.fail(err)
			return false
		}
		if !ok {
			need = 14
			break
		}
		if len(b)-off < h.size+h.n {
			need = h.size + h.n
			break
		}
		p := b[off+h.size : off+h.size+h.n]
		off += h.size + h.n
		wsUnmask(p, h.mask)
		if !wc.frame(h, p, inline) {
			return false
		}
	}
	if off > 0 {
		n := copy(b, b[off:])
		b = b[:n]
	}
	switch {
	case len(b) == 0 && (cap(b) < need || cap(b) > wsReadBuffer):
		// Nothing held: the next read takes a buffer of wsReadBuffer.
		b, wc.rbox = nil, nil
	case len(b) == cap(b) && need > cap(b):
		// A frame's header says how long it is, which costs the client
		// nothing to claim: the buffer grows with what came, at most
		// doubling, not to the length claimed.
		nb := make([]byte, len(b), min(need, max(2*cap(b), wsReadBuffer)))
		copy(nb, b)
		b, wc.rbox = nb, nil
	}
	wc.rbuf = b
	return true
}

// frame serves one frame, p its unmasked payload; false once the
// connection's reading has ended.
func (wc *wsConn) frame(h wsHeader, p []byte, inline bool) bool {
	switch h.op {
	case wsOpPing:
		_ = wc.writeControl(wsOpPong, p)
	case wsOpPong:
		wc.pong()
	case wsOpClose:
		code, err := parseWSClose(p)
		if err != nil {
			wc.fail(wsProtocol("close frame: " + err.Error()))
			return false
		}
		// The answer carries the same code, unless the hub's close went first.
		var answer []byte
		if code != websocket.StatusNoStatusRcvd {
			answer = p[:2]
		}
		wc.writeClose(answer)
		return false
	case wsOpText, wsOpBinary:
		if wc.msgOp != 0 {
			wc.fail(wsProtocol("a new message within a fragmented one"))
			return false
		}
		if h.fin {
			return wc.message(h.op, p, inline)
		}
		wc.msgOp, wc.msg = h.op, append([]byte(nil), p...)
	case wsOpContinuation:
		if wc.msgOp == 0 {
			wc.fail(wsProtocol("continuation frame without a message"))
			return false
		}
		wc.msg = append(wc.msg, p...)
		if h.fin {
			op, m := wc.msgOp, wc.msg
			wc.msgOp, wc.msg = 0, nil
			return wc.message(op, m, inline)
		}
	}
	return true
}

// fail closes the connection for a client's protocol error.
func (wc *wsConn) fail(err error) {
	code, reason := websocket.StatusProtocolError, err.Error()
	var pe *wsProtocolError
	if errors.As(err, &pe) {
		code, reason = pe.code, pe.reason
	}
	wc.writeClose(wsClosePayload(code, reason))
}

// message serves one message from the client; false once the
// connection's reading has ended (a text message that is not UTF-8).
func (wc *wsConn) message(op byte, data []byte, inline bool) bool {
	s := wc.s
	if op != wsOpText {
		wc.sendError("", fmt.Errorf("%w: binary frame", ErrBadRequest))
		return true
	}
	if !utf8.Valid(data) {
		// RFC 6455, 8.1: the endpoint fails the connection.
		wc.fail(&wsProtocolError{code: websocket.StatusInvalidFramePayloadData, reason: "text message not valid UTF-8"})
		return false
	}
	var req WSRequest
	if err := decodeJSON("frame", data, &req); err != nil {
		wc.sendError("", err)
		return true
	}
	if len(req.Ref) > MaxRefBytes {
		// Not repeated back: the error frame goes with no ref.
		wc.sendError("", fmt.Errorf("%w: ref of %d bytes, more than %d", ErrBadRequest, len(req.Ref), MaxRefBytes))
		return true
	}
	run := apart
	if inline {
		run = func(f func()) { f() }
	}
	switch req.Op {
	case "listen":
		run(func() { wc.listen(req) })
	case "ack":
		wc.ack(req)
	case "unlisten":
		run(func() { wc.unlisten(req) })
	case "dispatch":
		run(func() {
			res, err := s.dispatch(wc.ctx, wc.claims, req.DispatchRequest)
			if err != nil {
				wc.sendError(req.Ref, err)
				return
			}
			wc.send(WSFrame{Type: "dispatched", Ref: req.Ref, Result: &res})
		})
	default:
		wc.sendError(req.Ref, fmt.Errorf("%w: op %.32q: want listen, ack, unlisten or dispatch", ErrBadRequest, req.Op))
	}
	return true
}

// apart runs f on a goroutine of its own and waits for it.
func apart(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	<-done
}

var errTokenExpired = errors.New("token expired")

// wsHijack hands websocket.Accept the connection, keeps it (the hub reads
// and writes it), and what the client sent after its request.
type wsHijack struct {
	http.ResponseWriter
	conn net.Conn
	left []byte
}

// Hijack implements http.Hijacker.
func (h *wsHijack) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	if err := brw.Writer.Flush(); err != nil { // the 101 response, if still held
		_ = conn.Close()
		return nil, nil, err
	}
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		h.left = bytes.Clone(b)
	}
	h.conn = conn
	// The library's connection, which the hub drops, gets buffers it never
	// uses and a socket it cannot close (its finalizer closes it).
	hc := handshakeConn{conn}
	return hc, bufio.NewReadWriter(bufio.NewReaderSize(hc, 16), bufio.NewWriterSize(hc, 16)), nil
}

// handshakeConn is the connection as the WebSocket library has it.
type handshakeConn struct{ net.Conn }

// Close implements net.Conn: the hub closes the connection.
func (handshakeConn) Close() error { return nil }

type wsConn struct {
	s         *Server
	nc        net.Conn
	claims    *Claims
	holder    string // the person whose stream it counts as (see holdStream)
	ctx       context.Context
	cancel    context.CancelCauseFunc
	wg        sync.WaitGroup // the listens, and the reads
	pinger    *time.Timer    // pings, pongs due, the token's expiry: see tick
	closeOnce sync.Once      // close runs once; Do returns once it has run
	watch     *readWatch     // nil: readLoop reads

	// Read by one goroutine at a time: pass (the watch calls one at a
	// time), or readLoop.
	rbuf  []byte  // what was read and not yet served
	rbox  *[]byte // wsReadPool's handle on rbuf
	msg   []byte  // a fragmented message, so far
	msgOp byte    // its opcode; 0 if none

	endOnce sync.Once // endRead

	wmu      sync.Mutex // held while writing to the socket
	closing  bool       // a close frame may have gone: no more frames
	deadline time.Time  // the socket's write deadline

	mu         sync.Mutex
	subs       []*wsSub              // at most MaxListenersPerConn
	joins      []*context.CancelFunc // of the listens being set up (see listen)
	ended      bool                  // no more pings
	readDone   bool                  // no more reads
	pingOut    bool                  // a ping went; its pong is due
	pingAt     time.Time             // when to ping; if pingOut, when its pong is due
	expires    time.Time             // when the token expires; zero: never
	closeTimer *time.Timer           // ends the connection if the client does not answer a close
}

// wsConns are a Server's open WebSockets, which its close stops: one
// context.AfterFunc for all of them, rather than one each.
type wsConns struct {
	once    sync.Once
	mu      sync.Mutex
	m       map[*wsConn]struct{}
	stopped bool
}

// add adds wc, or reports false if the Server (whose context is ctx) is
// closing.
func (c *wsConns) add(ctx context.Context, wc *wsConn) bool {
	c.once.Do(func() { context.AfterFunc(ctx, c.stopAll) })
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return false
	}
	if c.m == nil {
		c.m = map[*wsConn]struct{}{}
	}
	c.m[wc] = struct{}{}
	return true
}

func (c *wsConns) remove(wc *wsConn) {
	c.mu.Lock()
	delete(c.m, wc)
	c.mu.Unlock()
}

// stopAll stops every connection, on the Server's close.
func (c *wsConns) stopAll() {
	c.mu.Lock()
	c.stopped = true
	all := make([]*wsConn, 0, len(c.m))
	for wc := range c.m {
		all = append(all, wc)
	}
	c.mu.Unlock()
	for _, wc := range all {
		go wc.stop(nil)
	}
}

// wsSub is one listen of a connection.
type wsSub struct {
	wc      *wsConn
	ref     string
	refJSON []byte
	l       *moitessier.Listener
	cancel  context.CancelFunc
	buf     []byte     // the frame being written, while respond runs
	pause   batchPause // see Server.batchWait
}

// subLocked returns the listen of ref, or nil; wc.mu is held.
func (wc *wsConn) subLocked(ref string) *wsSub {
	for _, sub := range wc.subs {
		if sub.ref == ref {
			return sub
		}
	}
	return nil
}

// dropLocked removes sub from the connection's listens, if there; wc.mu is held.
func (wc *wsConn) dropLocked(sub *wsSub) {
	if i := slices.Index(wc.subs, sub); i >= 0 {
		wc.subs = slices.Delete(wc.subs, i, i+1)
	}
}

// tick runs on the connection's one timer: it pings the client, Heartbeat
// after its last pong; drops it if it has not answered within
// WriteTimeout; and closes the connection when the token expires.
func (wc *wsConn) tick() {
	now := time.Now()
	wc.mu.Lock()
	if wc.ended {
		wc.mu.Unlock()
		return
	}
	if !wc.expires.IsZero() && !now.Before(wc.expires) {
		wc.mu.Unlock()
		wc.stop(errTokenExpired)
		return
	}
	ping := false
	switch {
	case wc.pingOut && !now.Before(wc.pingAt):
		wc.mu.Unlock()
		wc.abort()
		return
	case !wc.pingOut && !now.Before(wc.pingAt):
		ping, wc.pingOut, wc.pingAt = true, true, now.Add(wc.s.cfg.WriteTimeout)
	}
	wc.pinger.Reset(wc.untilLocked(now))
	wc.mu.Unlock()
	if ping {
		if err := wc.writeControl(wsOpPing, nil); err != nil && !errors.Is(err, net.ErrClosed) {
			wc.abort()
		}
	}
}

// untilLocked is the time from now to the timer's next task: the pong
// due, or the next ping, or the token's expiry if sooner. wc.mu is held.
func (wc *wsConn) untilLocked(now time.Time) time.Duration {
	at := wc.pingAt
	if !wc.expires.IsZero() && wc.expires.Before(at) {
		at = wc.expires
	}
	return at.Sub(now)
}

// pong notes the client's answer to a ping: the next one goes Heartbeat
// later.
func (wc *wsConn) pong() {
	now := time.Now()
	wc.mu.Lock()
	if wc.pingOut && !wc.ended {
		wc.pingOut = false
		wc.pingAt = now.Add(wc.s.cfg.Heartbeat)
		wc.pinger.Reset(wc.untilLocked(now))
	}
	wc.mu.Unlock()
}

// stop ends the connection's context, with cause, and its listens' (they
// end), then closes the connection (see close), once.
func (wc *wsConn) stop(cause error) {
	wc.cancel(cause)
	wc.mu.Lock()
	for _, sub := range wc.subs {
		sub.cancel()
	}
	for _, cancel := range wc.joins {
		(*cancel)()
	}
	wc.mu.Unlock()
	wc.closeOnce.Do(wc.close)
}

// startJoin records the cancel function of a listen being set up, for stop
// to call; it reports false if the connection is ending.
func (wc *wsConn) startJoin(cancel *context.CancelFunc) bool {
	wc.mu.Lock()
	defer wc.mu.Unlock()
	if wc.ctx.Err() != nil {
		return false
	}
	wc.joins = append(wc.joins, cancel)
	return true
}

// endJoin forgets what startJoin recorded.
func (wc *wsConn) endJoin(cancel *context.CancelFunc) {
	wc.mu.Lock()
	defer wc.mu.Unlock()
	wc.joins = slices.DeleteFunc(wc.joins, func(c *context.CancelFunc) bool { return c == cancel })
}

// close ends the connection once stopped: with a close frame
// that says why, then waits for the client's answer (wsCloseWait at
// most); or at once when the client left.
func (wc *wsConn) close() {
	var (
		code   websocket.StatusCode
		reason string
	)
	switch {
	case errors.Is(context.Cause(wc.ctx), errTokenExpired):
		code, reason = StatusTokenExpired, "token expired"
	case wc.s.streams.isClosing(), errors.Is(context.Cause(wc.ctx), moitessier.ErrHubClosed):
		code, reason = websocket.StatusGoingAway, "server shutting down"
	default:
		// The connection's reading ended: it is closing.
		wc.wmu.Lock()
		wc.closing = true
		wc.wmu.Unlock()
		return
	}
	if !wc.writeClose(wsClosePayload(code, reason)) {
		wc.endRead()
		return
	}
	t := time.AfterFunc(wsCloseWait, wc.endRead)
	wc.mu.Lock()
	wc.closeTimer = t
	wc.mu.Unlock()
}

// wsCloseWait bounds how long a connection waits for the client's answer
// to its close frame.
const wsCloseWait = 5 * time.Second

// abort ends the connection at once: a client that does not answer pings
// or take its messages.
func (wc *wsConn) abort() {
	wc.wmu.Lock()
	wc.closing = true
	wc.wmu.Unlock()
	_ = wc.nc.Close()
	wc.endRead()
}

// endRead ends the connection's reading, once: a read in progress fails,
// and finish ends the connection.
func (wc *wsConn) endRead() {
	wc.endOnce.Do(func() {
		_ = wc.nc.SetReadDeadline(time.Now())
		go wc.finish()
	})
}

// finish ends the connection once its reading has ended: its listens end,
// then the socket closes.
func (wc *wsConn) finish() {
	wc.mu.Lock()
	wc.ended, wc.readDone = true, true
	wc.pinger.Stop()
	wc.mu.Unlock()
	wc.s.ws.remove(wc)
	wc.stop(nil) // close has run when it returns
	wc.wg.Wait()
	wc.mu.Lock()
	if wc.closeTimer != nil {
		wc.closeTimer.Stop()
	}
	wc.mu.Unlock()
	if wc.watch != nil {
		wc.watch.stop()
	}
	if wc.rbox != nil {
		wsReadPool.Put(wc.rbox)
	}
	wc.rbuf, wc.rbox, wc.msg = nil, nil, nil
	closeConn(wc.nc)
	wc.s.metrics.open[transportWS].Add(-1)
	if wc.holder != "" {
		wc.s.releaseStream(wc.holder)
	}
	wc.s.streams.done()
}

// writeControl writes a control frame, unless a close frame went.
func (wc *wsConn) writeControl(op byte, payload []byte) error {
	b := wsControlFrame(op, payload)
	wc.wmu.Lock()
	defer wc.wmu.Unlock()
	if wc.closing {
		return net.ErrClosed
	}
	return wc.writeLocked(b)
}

// writeClose writes a close frame with payload, unless one went already;
// it reports whether it wrote it. No frame follows it.
func (wc *wsConn) writeClose(payload []byte) bool {
	b := wsControlFrame(wsOpClose, payload)
	wc.wmu.Lock()
	defer wc.wmu.Unlock()
	if wc.closing {
		return false
	}
	wc.closing = true
	return wc.writeLocked(b) == nil
}

// writeLocked writes b within the write timeout (at least half of it, as
// on SSE), wmu held. The timeout does not depend on the connection's
// context, so that a shutdown closes cleanly instead of cutting writes
// short.
func (wc *wsConn) writeLocked(b []byte) error {
	// The deadline moves only once half of it has passed: setting it
	// costs more than the clock.
	if now := time.Now(); wc.deadline.Sub(now) < wc.s.cfg.WriteTimeout/2 {
		wc.deadline = now.Add(wc.s.cfg.WriteTimeout)
		_ = wc.nc.SetWriteDeadline(wc.deadline)
	}
	_, err := wc.nc.Write(b)
	if err != nil {
		// A write cut short (its deadline passed) may have sent part of
		// a frame: any frame after it would be read as the rest of it.
		// The connection ends.
		wc.closing = true
		_ = wc.nc.Close()
		wc.endRead()
	}
	return err
}

// wsHeadroom is the room a data frame's buffer keeps in front of its
// payload for the frame header (at most 10 bytes from a server).
const wsHeadroom = 10

// writeFrame writes buf[wsHeadroom:] as one text frame, in one write
// within the write timeout. Frames are written whole, one at a time.
func (wc *wsConn) writeFrame(buf []byte) error {
	n := len(buf) - wsHeadroom
	var h int
	switch {
	case n < 126:
		h = 2
		buf[wsHeadroom-1] = byte(n)
	case n <= 0xffff:
		h = 4
		buf[wsHeadroom-3] = 126
		binary.BigEndian.PutUint16(buf[wsHeadroom-2:], uint16(n))
	default:
		h = 10
		buf[wsHeadroom-9] = 127
		binary.BigEndian.PutUint64(buf[wsHeadroom-8:], uint64(n))
	}
	buf[wsHeadroom-h] = 0x81 // FIN, text
	wc.wmu.Lock()
	defer wc.wmu.Unlock()
	if wc.closing {
		return &writeError{net.ErrClosed}
	}
	if err := wc.writeLocked(buf[wsHeadroom-h:]); err != nil {
		if isTimeout(err) {
			return &writeError{fmt.Errorf("%w: %w", ErrSlowConsumer, err)}
		}
		return &writeError{err}
	}
	return nil
}

func (wc *wsConn) send(f WSFrame) {
	b, err := json.Marshal(f)
	if err != nil {
		return
	}
	buf := make([]byte, wsHeadroom, wsHeadroom+len(b))
	_ = wc.writeFrame(append(buf, b...))
}

// sendError sends err as an error frame for ref. If the hub was shut
// down (before the Server), the connection then closes as it does when
// the Server shuts down, with 1001 (going away): its client is to connect
// again, to this hub once it is back or to another.
func (wc *wsConn) sendError(ref string, err error) {
	body := wc.s.errorBody(&http.Request{Method: "WS", URL: &url.URL{Path: "/v1/ws"}}, err)
	if body.Status == 499 {
		return
	}
	wc.send(WSFrame{Type: "error", Ref: ref, Error: &body})
	if errors.Is(err, moitessier.ErrHubClosed) {
		wc.stop(err)
	}
}

func (wc *wsConn) listen(req WSRequest) {
	s := wc.s
	q := url.Values{"scope": req.Scopes}
	if req.Listener != "" {
		q.Set("listener", req.Listener)
	}
	if req.Type != "" {
		q.Set("type", req.Type)
	}
	q.Set("client", req.Client)
	if req.Start != "" {
		q.Set("start", req.Start)
	}
	spec, err := parseListen(q)
	if err != nil {
		wc.sendError(req.Ref, err)
		return
	}
	since, err := parseSince(string(req.Since))
	if err != nil {
		wc.sendError(req.Ref, err)
		return
	}
	wc.mu.Lock()
	dup := wc.subLocked(req.Ref) != nil
	n := len(wc.subs)
	wc.mu.Unlock()
	switch {
	case dup:
		wc.sendError(req.Ref, fmt.Errorf("%w: ref %.32q is already listening", ErrBadRequest, req.Ref))
		return
	case n >= s.cfg.MaxListenersPerConn:
		wc.sendError(req.Ref, fmt.Errorf("%w: at most %d", ErrTooManyListeners, s.cfg.MaxListenersPerConn))
		return
	}
	if err := s.allowJoin(wc.claims); err != nil {
		wc.sendError(req.Ref, err)
		return
	}
	// The listen's own context, which stop cancels, serves the join and
	// the ack as well as the listen: a store's client may watch the context
	// of each statement (pgx does, with context.AfterFunc), which gives
	// that context a map of children for as long as it lives, and the
	// connection's own context has none (see serveWS).
	ctx, cancel := context.WithCancel(context.Background())
	running := false // once running, the listen's own goroutine ends ctx
	defer func() {
		if !running {
			cancel()
		}
	}()
	if !wc.startJoin(&cancel) {
		return
	}
	defer wc.endJoin(&cancel)
	l, info, err := s.openListener(ctx, wc.claims, spec)
	if err != nil {
		wc.sendError(req.Ref, err)
		return
	}
	since, reset := startCursor(since, info.Head)
	if since != moitessier.Resume && since != sinceHead && since > 0 {
		// The client shows that it received everything up to since.
		if err := l.Ack(ctx, since); err != nil {
			wc.sendError(req.Ref, err)
			return
		}
	}
	refJSON, _ := json.Marshal(req.Ref)
	sub := &wsSub{wc: wc, ref: req.Ref, refJSON: refJSON, l: l, cancel: cancel}
	wc.mu.Lock()
	if wc.ctx.Err() != nil {
		// The connection is ending: stop has cancelled the listens. l is
		// dropped, as the handle of a listen that ends with its connection
		// is: a handle holds nothing to release, and l.Close would remove
		// the subscriber (and, if it was the last, the listener and its
		// messages), which a connection's end must not do.
		wc.mu.Unlock()
		return
	}
	if wc.subLocked(req.Ref) != nil || len(wc.subs) >= s.cfg.MaxListenersPerConn {
		wc.mu.Unlock()
		wc.sendError(req.Ref, fmt.Errorf("%w: at most %d", ErrTooManyListeners, s.cfg.MaxListenersPerConn))
		return
	}
	wc.subs = append(wc.subs, sub)
	// Counted before stop can see sub (under wc.mu, as stop cancels the
	// listens), so that finish's Wait, which may have no read to wait
	// for (a listen from the query), waits for it.
	wc.wg.Add(1)
	wc.mu.Unlock()
	wi := wireInfo(info)
	wc.send(WSFrame{Type: "listening", Ref: req.Ref, Listener: &wi, Reset: reset})
	running = true
	go sub.run(ctx, since)
}

// run runs the listen until it ends. Its goroutine waits while the
// connection is idle: what it holds is in sub, not in closures.
func (sub *wsSub) run(ctx context.Context, since moitessier.Cursor) {
	wc, s := sub.wc, sub.wc.s
	defer wc.wg.Done()
	defer sub.cancel()
	_, err := sub.l.ListenUntil(ctx, nil, sub.respond, since, 0, 0)
	wc.mu.Lock()
	wc.dropLocked(sub)
	wc.mu.Unlock()
	var we *writeError
	switch {
	case errors.As(err, &we):
		if errors.Is(err, ErrSlowConsumer) || isTimeout(err) {
			s.metrics.slowDrops.Add(1)
			s.log.Debug("moitessierhttp: slow consumer dropped", "transport", "websocket", "listener", sub.l.ID(), "person", wc.claims.Subject)
		}
		wc.abort()
	case wc.ctx.Err() != nil:
		// The connection is ending.
	case ctx.Err() != nil:
		wc.send(WSFrame{Type: "unlistened", Ref: sub.ref})
	default:
		wc.sendError(sub.ref, err)
	}
}

// respond writes msgs in messages frames: one per chunkBytes or so, each
// within the write timeout (a client is slow when it does not take a
// chunk in time); then waits Config.SSEBatchInterval, so that what comes
// meanwhile goes in the next frame.
func (sub *wsSub) respond(ctx context.Context, msgs []moitessier.Message) error {
	wc, s := sub.wc, sub.wc.s
	for len(msgs) > 0 {
		buf := append(sub.buf[:0], make([]byte, wsHeadroom)...)
		buf = append(buf, `{"type":"messages","ref":`...)
		buf = append(buf, sub.refJSON...)
		buf = append(buf, `,"messages":[`...)
		n := 0
		for n < len(msgs) && (n == 0 || len(buf) < chunkBytes) {
			if n > 0 {
				buf = append(buf, ',')
			}
			buf = append(buf, s.enc.json(&msgs[n])...)
			n++
		}
		buf = append(buf, "]}"...)
		err := wc.writeFrame(buf)
		sub.buf = buf
		if cap(buf) > 4*chunkBytes {
			sub.buf = nil
		}
		if err != nil {
			return err
		}
		s.metrics.delivered(transportWS, msgs[:n], s.cfg.Now())
		msgs = msgs[n:]
	}
	s.batchWait(ctx, &sub.pause)
	// Acknowledged when the client's ack frame says so.
	return moitessier.AckLater
}

// ack acknowledges what the client says it has of a ref.
func (wc *wsConn) ack(req WSRequest) {
	wc.mu.Lock()
	sub := wc.subLocked(req.Ref)
	wc.mu.Unlock()
	if sub == nil {
		wc.sendError(req.Ref, fmt.Errorf("ref %.32q: %w: not listening", req.Ref, moitessier.ErrNotFound))
		return
	}
	if err := sub.l.AckDelivered(moitessier.Cursor(req.Seq)); err != nil {
		wc.sendError(req.Ref, err)
	}
}

func (wc *wsConn) unlisten(req WSRequest) {
	wc.mu.Lock()
	sub := wc.subLocked(req.Ref)
	if sub != nil {
		wc.dropLocked(sub)
	}
	wc.mu.Unlock()
	if sub == nil {
		wc.sendError(req.Ref, fmt.Errorf("ref %.32q: %w: not listening", req.Ref, moitessier.ErrNotFound))
		return
	}
	sub.cancel()
	if req.Leave {
		// Stop being a subscriber: the last one out deletes the listener.
		err := wc.s.allowJoin(wc.claims)
		if err == nil {
			err = sub.l.Close(wc.ctx)
		}
		if err != nil {
			wc.sendError(req.Ref, err)
		}
	}
}
