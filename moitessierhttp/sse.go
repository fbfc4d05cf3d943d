package moitessierhttp

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/likestripes/moitessier"
)

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
// after the last message it saw. A cursor past the listener's newest message
// (the listener was deleted and made anew) resumes from the server-held
// cursor instead, with "reset":true in the ready event.
func (s *Server) serveSSE(w http.ResponseWriter, r *http.Request) {
	c, err := s.authenticate(r)
	if err != nil {
		s.writeError(w, r, err)
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
	ctx, end, err := s.beginStream(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer end()
	l, info, err := s.openListener(ctx, c, spec)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	since, reset := startCursor(since, info.Head)

	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	st := &sseStream{s: s, w: w, rc: rc}
	defer func() { _ = rc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout)) }()

	ready, _ := json.Marshal(struct {
		Listener ListenerInfo `json:"listener"`
		Reset    bool         `json:"reset"`
	}{wireInfo(info), reset})
	st.buf = append(st.buf, "retry: 2000\nevent: ready\ndata: "...)
	st.buf = append(append(st.buf, ready...), "\n\n"...)
	if err := st.write(); err != nil {
		return
	}
	s.metrics.open[transportSSE].Add(1)
	defer s.metrics.open[transportSSE].Add(-1)

	_, err = l.ListenUntil(ctx, st.heartbeat, st.respond, since, s.cfg.Heartbeat, s.tokenLife(c))
	var we *writeError
	switch {
	case errors.As(err, &we):
		if isTimeout(we.err) {
			s.metrics.slowDrops.Add(1)
			s.log.Debug("moitessierhttp: slow consumer dropped", "transport", "sse", "listener", info.ID, "person", c.Subject)
		}
	case r.Context().Err() != nil:
		// The client went away.
	case err == nil:
		st.event("close", []byte(`{"reason":"token_expired"}`))
	case s.closing.Load():
		st.event("close", []byte(`{"reason":"shutting_down"}`))
	default:
		b, _ := json.Marshal(s.errorBody(r, err))
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

type sseStream struct {
	s        *Server
	w        http.ResponseWriter
	rc       *http.ResponseController
	buf      []byte
	deadline time.Time
}

// extend moves the write deadline to WriteTimeout from now, unless more
// than half of that is still left: setting it costs a system call.
func (st *sseStream) extend() {
	now := time.Now()
	if st.deadline.Sub(now) > st.s.cfg.WriteTimeout/2 {
		return
	}
	st.deadline = now.Add(st.s.cfg.WriteTimeout)
	_ = st.rc.SetWriteDeadline(st.deadline)
}

// writeError is a failed write to a client.
type writeError struct{ err error }

func (e *writeError) Error() string { return "write to client: " + e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// chunkBytes is how much a stream writes under one write deadline: a client
// is slow when it does not take this much within Config.WriteTimeout.
const chunkBytes = 32 << 10

// write sends st.buf and flushes, each chunkBytes within the write timeout.
func (st *sseStream) write() error {
	if err := st.send(); err != nil {
		return err
	}
	st.extend()
	if err := st.rc.Flush(); err != nil {
		return &writeError{err}
	}
	return nil
}

// send writes st.buf without flushing.
func (st *sseStream) send() error {
	b := st.buf
	for len(b) > 0 {
		n := min(len(b), chunkBytes)
		st.extend()
		if _, err := st.w.Write(b[:n]); err != nil {
			return &writeError{err}
		}
		b = b[n:]
	}
	st.buf = st.buf[:0]
	if cap(st.buf) > 4*chunkBytes {
		st.buf = nil // an idle stream keeps no large buffer
	}
	return nil
}

func (st *sseStream) respond(ctx context.Context, msgs []moitessier.Message) error {
	for i := range msgs {
		st.buf = append(st.buf, "id: "...)
		st.buf = strconv.AppendUint(st.buf, uint64(msgs[i].Seq), 10)
		st.buf = append(st.buf, "\ndata: "...)
		st.buf = append(st.buf, st.s.enc.json(&msgs[i])...)
		st.buf = append(st.buf, "\n\n"...)
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
	return nil
}

func (st *sseStream) heartbeat(ctx context.Context) error {
	st.buf = append(st.buf, ": ping\n\n"...)
	return st.write()
}

// event writes a final event, best effort.
func (st *sseStream) event(name string, data []byte) {
	st.buf = append(st.buf, "event: "...)
	st.buf = append(st.buf, name...)
	st.buf = append(st.buf, "\ndata: "...)
	st.buf = append(st.buf, data...)
	st.buf = append(st.buf, "\n\n"...)
	_ = st.write()
}
