package moitessierhttp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
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
	// the asked cursor when there was none.
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

	var got []moitessier.Message
	cur, err := l.ListenUntil(ctx, nil, func(ctx context.Context, msgs []moitessier.Message) error {
		got = slices.Clone(msgs)
		return errGot
	}, since, 0, timeout)
	switch {
	case err == nil, errors.Is(err, errGot):
	case s.closing.Load() && r.Context().Err() == nil:
		// Shutting down: answer with nothing; the client polls again.
	default:
		s.writeError(w, r, err)
		return
	}
	res := PollResult{Listener: info.ID, Cursor: uint64(cur), Messages: make([]Message, len(got)), Reset: reset}
	for i := range got {
		res.Messages[i] = wireMessage(&got[i])
	}
	if n := len(got); n > 0 {
		res.Cursor = uint64(got[n-1].Seq)
		s.metrics.delivered(transportPoll, got, s.cfg.Now())
	}
	writeJSON(w, http.StatusOK, res)
}

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
