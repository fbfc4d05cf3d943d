package moitessierhttp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

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
// since is a sequence number, "resume" (the default: the server-held
// cursor) or "head" (only new messages). A listen with since=N
// acknowledges N. start, as in the query of the other endpoints (see
// [ParseStart]), is where a subscriber that the listen makes starts.
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
// The connection closes with 1001 (going away) when the server shuts down,
// with 4001 when the token expires, and abruptly when the client is too
// slow to take its messages; in every case it reconnects and listens again
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
// then the hub's, read by one goroutine of its own (the WebSocket library
// needs one blocked in a read), with small buffers; pings and the close
// run on timers, so that an idle connection holds two goroutines, its
// reader and its listen, and no buffer of net/http's.
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodHead {
		s.serveHead(w, r, "application/json")
		return
	}
	c, err := s.authenticate(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.drainBody(w, r); err != nil {
		s.writeError(w, r, err)
		return
	}
	// The connection outlives the request: its context ends with the
	// Server or with the connection, not with the handler.
	ctx, end, err := s.beginStream(context.Background())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	hj := &wsHijack{ResponseWriter: w}
	conn, err := websocket.Accept(hj, r, &websocket.AcceptOptions{OriginPatterns: s.origins, InsecureSkipVerify: s.anyOrigin})
	if err != nil || hj.sock == nil {
		if conn != nil {
			_ = conn.CloseNow()
		}
		end()
		return // Accept answered the request
	}
	conn.SetReadLimit(int64(6*s.cfg.MaxMessageBytes + 64<<10))
	s.metrics.open[transportWS].Add(1)

	ctx, cancel := context.WithCancelCause(ctx)
	wc := &wsConn{s: s, conn: conn, nc: hj.sock.Conn, claims: c, ctx: ctx, subs: map[string]*wsSub{}, closed: make(chan struct{})}
	hj.sock.wc = wc
	var expiry *time.Timer
	if life := s.tokenLife(c); life > 0 {
		expiry = time.AfterFunc(life, func() { cancel(errTokenExpired) })
	}
	// When ctx ends, the connection closes cleanly; the reader then returns.
	context.AfterFunc(ctx, wc.close)
	wc.pinger = time.AfterFunc(s.cfg.Heartbeat, wc.ping)
	if q := r.URL.Query(); len(q["scope"]) > 0 || q.Get("listener") != "" {
		// On this goroutine, which ends next, rather than on the reader,
		// whose stack stays while the connection lasts.
		wc.listen(WSRequest{Op: "listen", Listener: q.Get("listener"), Type: q.Get("type"), Scopes: q["scope"], Client: q.Get("client"), Since: CursorParam(q.Get("since")), Start: q.Get("start")})
	}
	go func() {
		defer end()
		defer s.metrics.open[transportWS].Add(-1)
		wc.read()
		cancel(nil)
		if expiry != nil {
			expiry.Stop()
		}
		wc.stopPings()
		wc.wg.Wait()
		<-wc.closed
		_ = conn.CloseNow()
	}()
}

// read serves the client's frames until the connection ends. It runs
// listens and dispatches, which go deep into the store, on a goroutine of
// their own and waits for them: its own stack, which stays while the
// connection is idle, then stays small.
func (wc *wsConn) read() {
	s, conn := wc.s, wc.conn
	for {
		typ, data, err := conn.Read(context.Background())
		if err != nil {
			return
		}
		if typ != websocket.MessageText {
			wc.sendError("", fmt.Errorf("%w: binary frame", ErrBadRequest))
			continue
		}
		var req WSRequest
		if err := decodeJSON("frame", data, &req); err != nil {
			wc.sendError("", err)
			continue
		}
		switch req.Op {
		case "listen":
			apart(func() { wc.listen(req) })
		case "ack":
			wc.ack(req)
		case "unlisten":
			apart(func() { wc.unlisten(req) })
		case "dispatch":
			apart(func() {
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
	}
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

// The buffers the WebSocket library gets for a connection. It reads frame
// headers and small frames through the first (larger frames go straight
// into the message), and writes only control frames (ping, pong, close:
// at most 129 bytes each, so each is one write) through the second: the
// hub writes its data frames itself, each in one write.
const (
	wsReadBuffer  = 512
	wsWriteBuffer = 256
)

// wsHijack hands websocket.Accept the connection with small buffers of its
// own instead of net/http's 4 KiB ones, and keeps the connection, which
// the hub writes its data frames to.
type wsHijack struct {
	http.ResponseWriter
	sock *wsSocket
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
	// What the client sent after its request, if anything, stays first.
	var r io.Reader = conn
	left := brw.Reader.Buffered()
	if left > 0 {
		b, _ := brw.Reader.Peek(left)
		r = io.MultiReader(bytes.NewReader(bytes.Clone(b)), conn)
	}
	br := bufio.NewReaderSize(r, max(wsReadBuffer, left))
	if left > 0 {
		_, _ = br.Peek(left)
	}
	h.sock = &wsSocket{Conn: conn}
	return h.sock, bufio.NewReadWriter(br, bufio.NewWriterSize(h.sock, wsWriteBuffer)), nil
}

// wsSocket is the connection as the WebSocket library has it. Its writes
// (control frames: pongs, pings, closes) take the connection's write lock
// and a fresh write deadline, as the hub's data frames do, so that the
// deadline the data frames leave set (see writeFrame) never cuts them.
type wsSocket struct {
	net.Conn
	wc *wsConn // set before any write
}

// Write implements io.Writer.
func (s *wsSocket) Write(p []byte) (int, error) {
	wc := s.wc
	wc.wmu.Lock()
	defer wc.wmu.Unlock()
	wc.deadline = time.Now().Add(wc.s.cfg.WriteTimeout)
	_ = s.Conn.SetWriteDeadline(wc.deadline)
	return s.Conn.Write(p)
}

type wsConn struct {
	s      *Server
	conn   *websocket.Conn
	nc     net.Conn // the socket under conn, for data frames
	claims *Claims
	ctx    context.Context
	wg     sync.WaitGroup
	pinger *time.Timer
	closed chan struct{} // closed once close has run

	wmu      sync.Mutex // held while writing to the socket
	closing  bool       // a close frame may have gone: no more data frames
	deadline time.Time  // the socket's write deadline

	mu    sync.Mutex
	subs  map[string]*wsSub // by ref
	ended bool              // no more pings
}

// wsSub is one listen of a connection.
type wsSub struct {
	l      *moitessier.Listener
	cancel context.CancelFunc
}

// ping pings the client, every Heartbeat, on the pinger's timer; a client
// that does not answer within WriteTimeout is gone.
func (wc *wsConn) ping() {
	ctx, cancel := context.WithTimeout(wc.ctx, wc.s.cfg.WriteTimeout)
	err := wc.conn.Ping(ctx)
	cancel()
	if err != nil {
		if wc.ctx.Err() == nil {
			_ = wc.conn.CloseNow()
		}
		return
	}
	wc.mu.Lock()
	if !wc.ended {
		wc.pinger.Reset(wc.s.cfg.Heartbeat)
	}
	wc.mu.Unlock()
}

func (wc *wsConn) stopPings() {
	wc.mu.Lock()
	wc.ended = true
	wc.pinger.Stop()
	wc.mu.Unlock()
}

// close ends the connection when its context ends: with a close frame
// that says why, or at once when the client left.
func (wc *wsConn) close() {
	defer close(wc.closed)
	wc.wmu.Lock()
	wc.closing = true
	wc.wmu.Unlock()
	switch {
	case errors.Is(context.Cause(wc.ctx), errTokenExpired):
		_ = wc.conn.Close(StatusTokenExpired, "token expired")
	case wc.s.closing.Load():
		_ = wc.conn.Close(websocket.StatusGoingAway, "server shutting down")
	default:
		_ = wc.conn.CloseNow()
	}
}

// wsHeadroom is the room a data frame's buffer keeps in front of its
// payload for the frame header (at most 10 bytes from a server).
const wsHeadroom = 10

// writeFrame writes buf[wsHeadroom:] as one text frame, in one write
// within the write timeout (at least half of it, as on SSE). The timeout does not depend on the
// connection's context, so that a shutdown closes cleanly instead of
// cutting writes short. Frames go straight to the socket, not through the
// library's writer: a write to a file descriptor is not interleaved with
// another (the library's control frames are each one write too).
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
	// The deadline moves only once half of it has passed: setting it
	// costs more than the clock.
	if now := time.Now(); wc.deadline.Sub(now) < wc.s.cfg.WriteTimeout/2 {
		wc.deadline = now.Add(wc.s.cfg.WriteTimeout)
		_ = wc.nc.SetWriteDeadline(wc.deadline)
	}
	_, err := wc.nc.Write(buf[wsHeadroom-h:])
	if err != nil {
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

func (wc *wsConn) sendError(ref string, err error) {
	body := wc.s.errorBody(&http.Request{Method: "WS", URL: &url.URL{Path: "/v1/ws"}}, err)
	if body.Status == 499 {
		return
	}
	wc.send(WSFrame{Type: "error", Ref: ref, Error: &body})
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
	_, dup := wc.subs[req.Ref]
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
	l, info, err := s.openListener(wc.ctx, wc.claims, spec)
	if err != nil {
		wc.sendError(req.Ref, err)
		return
	}
	since, reset := startCursor(since, info.Head)
	if since != moitessier.Resume && since != sinceHead && since > 0 {
		// The client shows that it received everything up to since.
		if err := l.Ack(wc.ctx, since); err != nil {
			wc.sendError(req.Ref, err)
			return
		}
	}
	ctx, cancel := context.WithCancel(wc.ctx)
	wc.mu.Lock()
	if _, dup := wc.subs[req.Ref]; dup || len(wc.subs) >= s.cfg.MaxListenersPerConn {
		wc.mu.Unlock()
		cancel()
		wc.sendError(req.Ref, fmt.Errorf("%w: at most %d", ErrTooManyListeners, s.cfg.MaxListenersPerConn))
		return
	}
	sub := &wsSub{l: l, cancel: cancel}
	wc.subs[req.Ref] = sub
	wc.mu.Unlock()
	wi := wireInfo(info)
	wc.send(WSFrame{Type: "listening", Ref: req.Ref, Listener: &wi, Reset: reset})

	refJSON, _ := json.Marshal(req.Ref)
	wc.wg.Add(1)
	go func() {
		defer wc.wg.Done()
		defer cancel()
		var (
			buf   []byte
			pause *time.Timer
		)
		respond := func(ctx context.Context, msgs []moitessier.Message) error {
			// One frame per chunkBytes or so, each within the write
			// timeout: a client is slow when it does not take a chunk in time.
			for len(msgs) > 0 {
				buf = append(buf[:0], make([]byte, wsHeadroom)...)
				buf = append(buf, `{"type":"messages","ref":`...)
				buf = append(buf, refJSON...)
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
				if cap(buf) > 4*chunkBytes {
					buf = nil
				}
				if err != nil {
					return err
				}
				s.metrics.delivered(transportWS, msgs[:n], s.cfg.Now())
				msgs = msgs[n:]
			}
			// What comes during the wait goes in the next frame.
			s.batchWait(ctx, &pause)
			// Acknowledged when the client's ack frame says so.
			return moitessier.AckLater
		}
		_, err := l.ListenUntil(ctx, nil, respond, since, 0, 0)
		wc.mu.Lock()
		if wc.subs[req.Ref] == sub {
			delete(wc.subs, req.Ref)
		}
		wc.mu.Unlock()
		var we *writeError
		switch {
		case errors.As(err, &we):
			if errors.Is(err, ErrSlowConsumer) || isTimeout(err) {
				s.metrics.slowDrops.Add(1)
				s.log.Debug("moitessierhttp: slow consumer dropped", "transport", "websocket", "listener", info.ID, "person", wc.claims.Subject)
			}
			_ = wc.conn.CloseNow()
		case wc.ctx.Err() != nil:
			// The connection is ending.
		case ctx.Err() != nil:
			wc.send(WSFrame{Type: "unlistened", Ref: req.Ref})
		default:
			wc.sendError(req.Ref, err)
		}
	}()
}

// ack acknowledges what the client says it has of a ref.
func (wc *wsConn) ack(req WSRequest) {
	wc.mu.Lock()
	sub := wc.subs[req.Ref]
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
	sub := wc.subs[req.Ref]
	delete(wc.subs, req.Ref)
	wc.mu.Unlock()
	if sub == nil {
		wc.sendError(req.Ref, fmt.Errorf("ref %.32q: %w: not listening", req.Ref, moitessier.ErrNotFound))
		return
	}
	sub.cancel()
	if req.Leave {
		// Stop being a subscriber: the last one out deletes the listener.
		if err := sub.l.Close(wc.ctx); err != nil {
			wc.sendError(req.Ref, err)
		}
	}
}
