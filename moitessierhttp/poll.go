package moitessierhttp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/likestripes/moitessier"
)

// PollResult answers GET /v1/poll: the messages after the asked cursor (none
// at a timeout), and the cursor to ask from next.
//
//	{"listener":"s3f…","cursor":14,"messages":[{…Message},…],"reset":false}
type PollResult struct {
	Listener string `json:"listener"`
	// Cursor is where the next poll continues: the last message's seq, or
	// the asked cursor when there was none. An answer holds at most
	// Config.MaxPollBytes of messages (and the hub's BatchLimit of them),
	// and at least one: a listener with more continues from Cursor.
	Cursor   uint64    `json:"cursor"`
	Messages []Message `json:"messages"`
	// Reset is true when the asked cursor was past the listener's newest
	// message (the listener was made anew) and the server-held cursor was
	// used instead.
	Reset bool `json:"reset,omitempty"`
}

// errGot ends a long-poll's ListenUntil once it has messages.
var errGot = errors.New("got messages")

// servePoll handles GET /v1/poll?scope=…|listener=…&since=N&timeout=25s.
// It answers as soon as there are messages after since, or with none at
// the timeout. since defaults to the subscriber's server-held cursor
// ("resume"). Polling with since=N acknowledges N: the server-held cursor
// moves to N, so the messages of a poll whose answer was lost are not
// skipped by a client that resumes.
func (s *Server) servePoll(w http.ResponseWriter, r *http.Request) {
	c, ok := s.openListen(w, r, "application/json")
	if !ok {
		return
	}
	q := r.URL.Query()
	spec, err := parseListen(q)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	since, err := parseSince(q.Get("since"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	timeout := s.cfg.PollTimeout
	if v := q.Get("timeout"); v != "" {
		if timeout, err = parseTimeout(v); err != nil {
			s.writeError(w, r, err)
			return
		}
		timeout = min(timeout, s.cfg.MaxPollTimeout)
	}
	if life := s.tokenLife(c); life > 0 && life < timeout {
		timeout = life
	}
	timeout = max(timeout, time.Millisecond) // 0 would mean no timeout at all
	if err := s.holdStream(c.Subject); err != nil {
		s.writeError(w, r, err)
		return
	}
	defer s.releaseStream(c.Subject)
	waited := time.Now()
	if err := s.waitJoin(r.Context(), c, timeout); err != nil {
		s.writeError(w, r, err)
		return
	}
	// The wait for the rate is part of the poll's time (and of the
	// token's life).
	timeout = max(timeout-time.Since(waited), time.Millisecond)
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
	if since != moitessier.Resume && since > 0 {
		if err := l.Ack(ctx, since); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	s.metrics.open[transportPoll].Add(1)
	defer s.metrics.open[transportPoll].Add(-1)

	var (
		enc  [][]byte // the answer's messages, encoded
		last moitessier.Cursor
	)
	cur, err := l.ListenUntil(ctx, nil, func(ctx context.Context, msgs []moitessier.Message) error {
		// As many as fit in MaxPollBytes, and at least one; the rest come
		// with the next poll, which continues from the last one taken.
		size := 0
		for i := range msgs {
			b := s.enc.json(&msgs[i])
			if i > 0 && size+len(b) > s.cfg.MaxPollBytes {
				break
			}
			size += len(b)
			enc = append(enc, b)
		}
		last = msgs[len(enc)-1].Seq
		s.metrics.delivered(transportPoll, msgs[:len(enc)], s.cfg.Now())
		// Not acknowledged: the next poll's since=N says the client has them.
		return errGot
	}, since, 0, timeout)
	switch {
	case err == nil, errors.Is(err, errGot):
	case (s.streams.isClosing() || errors.Is(err, moitessier.ErrHubClosed)) && r.Context().Err() == nil:
		// Shutting down (the server, or its hub first): answer with
		// nothing; the client polls again.
	default:
		s.writeError(w, r, err)
		return
	}
	if len(enc) > 0 {
		cur = last
	}
	s.writePoll(w, PollResult{Listener: info.ID, Cursor: uint64(cur), Reset: reset}, enc)
}

// writePoll writes a long-poll answer, res with the messages enc (their
// JSON), as json.Marshal would, without building it whole in memory: the
// messages are written as they are, from the encoding cache. It is written
// within Config.ResponseTimeout, and cut short once the Server closes
// (closeGrace later), so that a client that does not read holds up
// neither the answer nor a shutdown; an answer cut short acknowledges
// nothing, and the client polls again from the same cursor.
func (s *Server) writePoll(w http.ResponseWriter, res PollResult, enc [][]byte) {
	head := make([]byte, 0, 64+len(res.Listener))
	head = append(head, `{"listener":`...)
	head = appendJSONString(head, res.Listener)
	head = append(head, `,"cursor":`...)
	head = strconv.AppendUint(head, res.Cursor, 10)
	head = append(head, `,"messages":[`...)
	tail := "]}\n"
	if res.Reset {
		tail = `],"reset":true}` + "\n"
	}
	n := len(head) + max(len(enc)-1, 0) + len(tail)
	for _, b := range enc {
		n += len(b)
	}
	rc := s.answerDeadline(w)
	cut := make(chan struct{})
	stop := context.AfterFunc(s.ctx, func() {
		defer close(cut)
		_ = rc.SetWriteDeadline(time.Now().Add(min(closeGrace, s.cfg.ResponseTimeout)))
	})
	defer func() {
		if !stop() {
			<-cut // the ResponseWriter is not to be used once the handler returns
		}
	}()
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(n))
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(head); err != nil {
		return
	}
	for i, b := range enc {
		if i > 0 {
			if _, err := io.WriteString(w, ","); err != nil {
				return
			}
		}
		if _, err := w.Write(b); err != nil {
			return
		}
	}
	_, _ = io.WriteString(w, tail)
}

// closeGrace is how long an answer being written when the Server closes
// may still take.
const closeGrace = time.Second

// parseTimeout reads a duration as seconds ("25", "0.5") or Go syntax ("25s").
func parseTimeout(v string) (time.Duration, error) {
	if f, err := strconv.ParseFloat(v, 64); err == nil && f >= 0 && f < 1e6 {
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%w: timeout %.32q: want seconds or a duration like 25s", ErrBadRequest, v)
	}
	return d, nil
}
