package moitessierhttp

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/likestripes/moitessier"
)

// sseJoinWait is the longest an SSE request waits for the join rate (see
// waitJoin) before it is refused.
const sseJoinWait = 5 * time.Second

// serveSSE streams one listener as Server-Sent Events.
//
// The query names the listener (scope=…&type=…&client=…, or listener=ID)
// and where to start: the Last-Event-ID header (sent by EventSource when it
// reconnects), else the lastEventId or since parameter, else the
// subscriber's server-held cursor. Events:
//
//	event: ready      data: {"listener":{…ListenerInfo},"reset":false}   (no id)
//	id: 12            data: {…Message}                                  (default event type "message")
//	event: close      data: {"reason":"shutting_down"|"token_expired"}   (then the stream ends)
//	event: error      data: {…ErrorBody}                                 (then the stream ends)
//	: ping                                                               (heartbeat comment)
//
// Each message's id is its cursor, so a reconnecting EventSource resumes
// after the last message it saw; a request that starts after N
// acknowledges N (the subscriber's server-held cursor moves to N). The
// stream itself acknowledges on the evidence of the client's TCP stack, on
// HTTP/1.1 over plain TCP on Linux and not through a proxy (see sseAck),
// and never because it wrote. A cursor past the listener's newest message
// (the listener was deleted and made anew) resumes from the server-held
// cursor instead, with "reset":true in the ready event.
func (s *Server) serveSSE(w http.ResponseWriter, r *http.Request) {
	c, ok := s.openListen(w, r, "text/event-stream")
	if !ok {
		return
	}
	q := r.URL.Query()
	spec, err := parseListen(q)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	sinceArg := q.Get("since")
	if v := q.Get("lastEventId"); v != "" {
		sinceArg = v
	}
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		sinceArg = v
	}
	since, err := parseSince(sinceArg)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.holdStream(c.Subject); err != nil {
		s.writeError(w, r, err)
		return
	}
	held := true // until a stream of its own takes it over
	defer func() {
		if held {
			s.releaseStream(c.Subject)
		}
	}()
	// An EventSource that an error answers does not reconnect: wait a
	// while for the rate rather than refuse a reconnecting tab.
	wait := sseJoinWait
	if life := s.tokenLife(c); life > 0 && life < wait {
		wait = life // not past the token's expiry
	}
	if err := s.waitJoin(r.Context(), c, wait); err != nil {
		s.writeError(w, r, err)
		return
	}
	l, info, err := s.openListener(r.Context(), c, spec)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	since, reset := startCursor(since, info.Head)
	if since != moitessier.Resume && since != sinceHead && since > 0 {
		// The client shows that it received everything up to since.
		if err := l.Ack(r.Context(), since); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	ready, _ := json.Marshal(struct {
		Listener ListenerInfo `json:"listener"`
		Reset    bool         `json:"reset"`
	}{wireInfo(info), reset})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	rc := http.NewResponseController(w)
	job := &sseJob{s: s, l: l, since: since, claims: c, method: r.Method, path: r.URL.Path}
	job.buf = append(job.buf, "retry: 2000\nevent: ready\ndata: "...)
	job.buf = append(append(job.buf, ready...), "\n\n"...)

	if r.ProtoMajor == 1 {
		// HTTP/1: take the connection from net/http and hand it to a
		// goroutine of our own, so that the request's buffers and
		// goroutine are freed: an idle stream then costs a few KiB.
		ctx, cancel, end, err := s.beginConnStream()
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		conn, brw, err := rc.Hijack()
		if err == nil {
			head := []byte("HTTP/1.1 200 OK\r\n")
			for k, vs := range h {
				for _, v := range vs {
					head = append(append(append(append(head, k...), ": "...), v...), "\r\n"...)
				}
			}
			head = append(head, "Connection: close\r\n\r\n"...)
			job.buf = append(head, job.buf...)
			_ = brw // dropped with its buffers: the client sends nothing more
			if !s.cfg.NoTCPAcks && !viaProxy(r) {
				if tc, ok := newTCPConn(conn); ok {
					job.ack = &sseAck{l: l, conn: tc, acks: s.tcpAcks}
				}
			}
			held = false
			go job.runHijacked(ctx, cancel, end, conn)
			return
		}
		end()
	}
	ctx, end, err := s.beginStream(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer end()
	w.WriteHeader(http.StatusOK)
	job.w = w
	job.flush = rc.Flush
	job.setDeadline = rc.SetWriteDeadline
	defer func() { _ = rc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout)) }()
	job.run(ctx, func() bool { return r.Context().Err() != nil })
}

// beginConnStream registers a stream that outlives its request (a
// hijacked connection); the returned context is cancelled by cancel, by
// end or when the Server closes. It is beginCancelableStream without a
// context of the request's to follow: one context, a child of the
// Server's.
func (s *Server) beginConnStream() (context.Context, context.CancelFunc, func(), error) {
	if !s.streams.begin() {
		return nil, nil, nil, errServerClosing
	}
	ctx, cancel := context.WithCancel(s.ctx)
	return ctx, cancel, func() {
		cancel()
		s.streams.done()
	}, nil
}

// sseJob is one SSE stream, on net/http's connection or on a hijacked one.
type sseJob struct {
	s            *Server
	l            *moitessier.Listener
	since        moitessier.Cursor
	claims       *Claims
	method, path string

	w           io.Writer
	flush       func() error // nil when writes go straight to the socket
	setDeadline func(time.Time) error
	buf         []byte            // what is to be written; from bufPool, held only while writing
	bufSeq      moitessier.Cursor // the last message that buf ends with, 0 if none
	box         *[]byte           // the pool's handle on buf
	ack         *sseAck           // nil without evidence from the client's TCP stack
	deadline    time.Time
	pause       batchPause // see wait
}

// bufPool holds the streams' write buffers: a stream takes one while it
// writes and puts it back after, so that idle streams hold none and busy
// ones allocate nothing.
var bufPool = sync.Pool{New: func() any { return new([]byte) }}

// maxPooled is the largest buffer put back into bufPool.
const maxPooled = 4 * chunkBytes

// grab makes st.buf a pooled buffer, unless it holds one.
func (st *sseJob) grab() {
	if st.buf == nil {
		st.box = bufPool.Get().(*[]byte)
		st.buf = (*st.box)[:0]
	}
}

// release puts st.buf back into the pool.
func (st *sseJob) release() {
	if b := st.buf; b != nil && cap(b) <= maxPooled {
		if st.box == nil {
			st.box = new([]byte) // the first buffer, made before the stream began
		}
		*st.box = b[:0]
		bufPool.Put(st.box)
	}
	st.buf, st.box = nil, nil
}

// runHijacked streams on a hijacked connection; cancel cancels ctx. It
// notices at once when the client closes it (as net/http does for its own
// connections), so that nothing is written, and acknowledged, to a
// connection that is gone: through the Server's closeWatcher where it can, else with a
// goroutine reading conn.
func (st *sseJob) runHijacked(ctx context.Context, cancel context.CancelFunc, end func(), conn net.Conn) {
	defer st.s.releaseStream(st.claims.Subject)
	defer end() // cancels ctx
	defer closeConn(conn)
	var gone atomic.Bool
	leave := func() {
		if st.ack != nil {
			st.ack.closed() // while ListenUntil runs, before it is cancelled
		}
		gone.Store(true)
		cancel()
	}
	if stop, ok := st.s.closes.watch(conn, leave); ok {
		defer stop() // before conn.Close
	} else {
		go func() {
			var b [64]byte
			for {
				if _, err := conn.Read(b[:]); err != nil {
					leave()
					return
				}
			}
		}()
	}
	st.w = conn
	st.setDeadline = conn.SetWriteDeadline
	st.run(ctx, gone.Load)
}

// closeConn closes a hijacked stream's connection without resetting it.
// Nothing reads what a client sends once its request is parsed (closes are
// watched by epoll), and a socket closed with unread bytes sends RST, on
// which the client may drop what it has not read yet, the final event
// included. So closeConn shuts the sending side, reads what the client
// sends until it closes or for closeDrain at most, then closes.
func closeConn(conn net.Conn) {
	if cw, ok := conn.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		_ = conn.SetReadDeadline(time.Now().Add(closeDrain))
		var b [256]byte
		for {
			if _, err := conn.Read(b[:]); err != nil {
				break
			}
		}
	}
	_ = conn.Close()
}

// closeDrain bounds how long closeConn waits for a client to close.
const closeDrain = 500 * time.Millisecond

// run writes the ready event (in st.buf) and streams until the end.
func (st *sseJob) run(ctx context.Context, clientGone func() bool) {
	s := st.s
	if err := st.write(); err != nil {
		return
	}
	s.metrics.open[transportSSE].Add(1)
	defer s.metrics.open[transportSSE].Add(-1)
	_, err := st.l.ListenUntil(ctx, st.heartbeat, st.respond, st.since, s.cfg.Heartbeat, s.tokenLife(st.claims))
	st.end(err, clientGone())
}

// end closes the stream after ListenUntil returned err. It is a function of
// its own so that its locals are not on the stack of every waiting stream.
//
//go:noinline
func (st *sseJob) end(err error, clientGone bool) {
	s := st.s
	var we *writeError
	switch {
	case errors.As(err, &we):
		if isTimeout(we.err) {
			s.metrics.slowDrops.Add(1)
			s.log.Debug("moitessierhttp: slow consumer dropped", "transport", "sse", "listener", st.l.ID(), "person", st.claims.Subject)
		}
	case clientGone:
		// The client went away.
	case err == nil:
		st.event("close", []byte(`{"reason":"token_expired"}`))
	case s.streams.isClosing(), errors.Is(err, moitessier.ErrHubClosed):
		st.event("close", []byte(`{"reason":"shutting_down"}`))
	default:
		b, _ := json.Marshal(s.errorBody(&http.Request{Method: st.method, URL: &url.URL{Path: st.path}}, err))
		st.event("error", b)
	}
}

// startCursor resolves "head", and replaces a cursor past the listener's
// head (a listener made anew under the same ID) by Resume.
func startCursor(since, head moitessier.Cursor) (moitessier.Cursor, bool) {
	switch {
	case since == sinceHead:
		return head, false
	case since != moitessier.Resume && since > head:
		return moitessier.Resume, true
	}
	return since, false
}

// extend moves the write deadline to WriteTimeout from now, unless more
// than half of that is still left: setting it costs a system call.
func (st *sseJob) extend() {
	now := time.Now()
	if st.deadline.Sub(now) > st.s.cfg.WriteTimeout/2 {
		return
	}
	st.deadline = now.Add(st.s.cfg.WriteTimeout)
	_ = st.setDeadline(st.deadline)
}

// writeError is a failed write to a client.
type writeError struct{ err error }

func (e *writeError) Error() string { return "write to client: " + e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// chunkBytes is how much a stream writes under one write deadline: a client
// is slow when it does not take this much within Config.WriteTimeout.
const chunkBytes = 32 << 10

// write sends st.buf and flushes, each chunkBytes within the write timeout,
// and gives the buffer back.
func (st *sseJob) write() error {
	if err := st.send(); err != nil {
		return err
	}
	st.release()
	if st.flush == nil {
		return nil
	}
	st.extend()
	if err := st.flush(); err != nil {
		return &writeError{err}
	}
	return nil
}

// send writes st.buf without flushing.
func (st *sseJob) send() error {
	b := st.buf
	for len(b) > 0 {
		n := min(len(b), chunkBytes)
		st.extend()
		if st.ack != nil {
			st.ack.writing()
		}
		if _, err := st.w.Write(b[:n]); err != nil {
			return &writeError{err}
		}
		b = b[n:]
		if st.ack != nil {
			var seq moitessier.Cursor
			if len(b) == 0 {
				seq = st.bufSeq
			}
			st.ack.wrote(n, seq)
		}
	}
	st.buf, st.bufSeq = st.buf[:0], 0
	return nil
}

func (st *sseJob) respond(ctx context.Context, msgs []moitessier.Message) error {
	st.grab()
	for i := range msgs {
		st.buf = append(st.buf, "id: "...)
		st.buf = strconv.AppendUint(st.buf, uint64(msgs[i].Seq), 10)
		st.buf = append(st.buf, "\ndata: "...)
		st.buf = append(st.buf, st.s.enc.json(&msgs[i])...)
		st.buf = append(st.buf, "\n\n"...)
		st.bufSeq = msgs[i].Seq
		if len(st.buf) >= chunkBytes && i < len(msgs)-1 {
			if err := st.send(); err != nil {
				return err
			}
		}
	}
	if err := st.write(); err != nil {
		return err
	}
	st.s.metrics.delivered(transportSSE, msgs, st.s.cfg.Now())
	st.wait(ctx)
	// Written is not received: the stream acknowledges on the evidence of
	// the client's TCP stack (see sseAck), or the client's next request.
	return moitessier.AckLater
}

// wait holds the stream for Config.SSEBatchInterval after a write, so that
// the messages that come meanwhile go out in one write (ListenUntil hands
// them over together when respond returns).
func (st *sseJob) wait(ctx context.Context) { st.s.batchWait(ctx, &st.pause) }

// batchWait holds a stream (SSE, or one listen of a WebSocket) for
// Config.SSEBatchInterval after a write. It waits parked on a timer, made
// on first use: waiting streams take no turn of the processor from the
// others, nor from the dispatches.
func (s *Server) batchWait(ctx context.Context, p *batchPause) {
	d := s.cfg.SSEBatchInterval
	if d < 0 {
		return
	}
	if d == 0 {
		if d = batchInterval(s.busy.wrote(&p.window)); d == 0 {
			return
		}
	}
	if p.timer == nil {
		p.timer = time.NewTimer(d)
	} else {
		p.timer.Reset(d)
	}
	select {
	case <-p.timer.C:
	case <-ctx.Done():
		p.timer.Stop()
	}
}

// batchPause is a stream's state for batchWait.
type batchPause struct {
	timer  *time.Timer
	window int64 // the last busyWindow the stream was counted in
}

// batchInterval is the default batch interval with busy streams (see
// Config.SSEBatchInterval): sseBatchPerStream each, at most maxSSEBatch,
// and none under a millisecond, not worth a timer.
func batchInterval(busy int64) time.Duration {
	d := min(time.Duration(busy)*sseBatchPerStream, maxSSEBatch)
	if d < time.Millisecond {
		return 0
	}
	return d
}

// busyStreams counts the streams that write, window by window of
// busyWindow: each stream once in a window in which it wrote. The streams
// that are busy now are estimated as the greater of the current window's
// count and the one before's. Idle connections never count. A stream that
// waits longer than a window (up to maxSSEBatch) may be missed in one, so
// the estimate is low by up to a third there; its interval is then
// shorter, it writes more often, and is counted again.
type busyStreams struct {
	origin time.Time // window numbers count from it, on the monotonic clock
	// slots hold, by window number modulo 2, the window's number (high
	// 32 bits) and its count (low 32), changed together by CAS: a count
	// is never added to another window's, nor reset away.
	slots [2]atomic.Uint64
}

// busyWindow is the length of busyStreams' windows.
const busyWindow = 100 * time.Millisecond

// wrote counts a write of the stream whose last counted window is *last,
// and returns the estimate of busy streams.
func (b *busyStreams) wrote(last *int64) int64 {
	w := 1 + uint64(time.Since(b.origin)/busyWindow) // from 1: a stream's zero is "never counted"
	w &= 1<<32 - 1
	if *last != int64(w) {
		*last = int64(w)
		slot := &b.slots[w%2]
		for {
			v := slot.Load()
			n := w<<32 | 1
			if v>>32 == w {
				n = v + 1
			}
			if slot.CompareAndSwap(v, n) {
				break
			}
		}
	}
	count := func(v uint64, want uint64) int64 {
		if v>>32 != want {
			return 0 // a window gone by, or none
		}
		return int64(v & (1<<32 - 1))
	}
	return max(count(b.slots[w%2].Load(), w), count(b.slots[(w+1)%2].Load(), (w-1)&(1<<32-1)))
}

// The default batch interval: sseBatchPerStream for each busy stream (SSE
// or WebSocket listen: see busyStreams), about four times the processor time of one write to one
// of them, up to maxSSEBatch: however fast messages come, the streams'
// writes take about a quarter of a core, and the rest is left to the
// dispatches and the store.
const (
	sseBatchPerStream = 40 * time.Microsecond
	maxSSEBatch       = 150 * time.Millisecond
)

func (st *sseJob) heartbeat(ctx context.Context) error {
	st.grab()
	st.buf = append(st.buf, ": ping\n\n"...)
	return st.write()
}

// event writes a final event, best effort.
func (st *sseJob) event(name string, data []byte) {
	st.grab()
	st.buf = append(st.buf, "event: "...)
	st.buf = append(st.buf, name...)
	st.buf = append(st.buf, "\ndata: "...)
	st.buf = append(st.buf, data...)
	st.buf = append(st.buf, "\n\n"...)
	_ = st.write()
}
