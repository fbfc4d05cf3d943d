package moitessierhttp

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/likestripes/moitessier"
)

// DispatchRequest is the JSON body of POST /v1/dispatch and of a WebSocket
// "dispatch" frame:
//
//	{"scope":"room.1","text":"hello","to":["bob"],"handlers":["greet"]}
//
// Over HTTP the Idempotency-Key header gives the idempotency key; over
// WebSocket the "idempotency_key" field does.
type DispatchRequest struct {
	// Scope is the concrete scope to dispatch to. Required.
	Scope string `json:"scope"`
	// Text is the message.
	Text string `json:"text"`
	// To addresses the dispatch to persons' Private listeners only (see [moitessier.To]).
	To []string `json:"to,omitempty"`
	// Handlers name functions of Config.Handlers that compute the
	// messages of Handler listeners, in order.
	Handlers []string `json:"handlers,omitempty"`
	// IdempotencyKey makes a retry a no-op (see [moitessier.IdempotencyKey]).
	// Reusing it for another request (another scope, text, to or handlers)
	// is refused with 422, code idempotency_mismatch.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
}

// DispatchResult is the answer to a dispatch:
//
//	{"id":"18a…","scope":"room.1","reached":3,"stored":3,"replayed":false}
type DispatchResult struct {
	// ID identifies the dispatch; every message it stored carries it.
	ID    string `json:"id"`
	Scope string `json:"scope"`
	// Reached counts the listeners the dispatch reached and Stored the
	// messages it stored (an empty text stores nothing), of the listeners
	// the caller could see for itself: its own Private and Handler
	// listeners, and the Shared ones when the token may listen to the
	// scope. Other people's listeners are never counted, so that the
	// answer tells nobody whether the persons a dispatch addresses have a
	// listener. On a replay, only Shared listeners are counted.
	Reached int `json:"reached"`
	Stored  int `json:"stored"`
	// Replayed is true when the idempotency key matched an earlier
	// dispatch: nothing was stored this time, and ID is the earlier one's.
	Replayed bool `json:"replayed"`
}

// dispatch runs a dispatch for the token's person: rate limit, checks, hub.
func (s *Server) dispatch(ctx context.Context, c *Claims, req DispatchRequest) (DispatchResult, error) {
	if err := s.allowDispatch(c); err != nil {
		s.metrics.dispatchErrs.Add(1)
		return DispatchResult{}, err
	}
	return s.dispatchAllowed(ctx, c, req)
}

// allowDispatch takes one dispatch from the person's rate limit, or
// returns a *RateLimitError. It runs before anything of the dispatch is
// read or checked, so that a person over the limit costs the server no
// body to read or decode.
func (s *Server) allowDispatch(c *Claims) error {
	if s.limiter == nil {
		return nil
	}
	if ok, wait := s.limiter.allow(c.Subject, s.cfg.Now()); !ok {
		s.metrics.rateLimited.Add(1)
		return &RateLimitError{RetryAfter: wait}
	}
	return nil
}

// allowJoin takes one listener operation (a join or a leave, each a write
// to the store) from the person's bucket (Config.JoinRate), or returns an
// error wrapping a *RateLimitError. Callers run it before they read or
// write anything of the operation.
func (s *Server) allowJoin(c *Claims) error {
	if s.joins == nil {
		return nil
	}
	if ok, wait := s.joins.allow(c.Subject, s.cfg.Now()); !ok {
		return s.joinLimited(wait)
	}
	return nil
}

// joinLimited counts a refused listener operation and returns its error.
func (s *Server) joinLimited(wait time.Duration) error {
	s.metrics.rateLimited.Add(1)
	return fmt.Errorf("joins and leaves: %w", &RateLimitError{RetryAfter: wait})
}

// waitJoin is allowJoin for a request that may as well wait for its turn:
// a long-poll or an SSE stream, which holds one of the person's streams
// (Config.MaxStreamsPerPerson) while it waits. If the next token comes
// within max, it waits for it (once; if another request of the person
// took it meanwhile, it is refused), so that a client that polls again
// after every answer in a busy room is slowed to the rate, its next answer
// holding more messages, rather than refused.
func (s *Server) waitJoin(ctx context.Context, c *Claims, max time.Duration) error {
	if s.joins == nil {
		return nil
	}
	ok, wait := s.joins.allow(c.Subject, s.cfg.Now())
	if ok {
		return nil
	}
	if wait <= max {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-s.ctx.Done(): // Close: answer now, as waiting polls are
			t.Stop()
			return errServerClosing
		case <-t.C:
		}
		if ok, wait = s.joins.allow(c.Subject, s.cfg.Now()); ok {
			return nil
		}
	}
	return s.joinLimited(wait)
}

// minHandlerShare is the least handler time a dispatch naming handlers is
// given; a person whose bucket cannot give it is refused.
const minHandlerShare = 10 * time.Millisecond

// reserveHandlerTime takes the handler time a dispatch naming handlers may
// use from its sender's bucket (Config.HandlerTimeRate): half of what the
// bucket holds, at most the hub's HandlerBudget. Below minHandlerShare (or
// the HandlerBudget, if smaller) it refuses with a *RateLimitError
// wrapping ErrHandlerBudget.
func (s *Server) reserveHandlerTime(c *Claims) (time.Duration, error) {
	most := s.hub.Options().HandlerBudget
	if most < 0 {
		most = s.cfg.HandlerTimeBurst
	}
	got, wait := s.handlerTime.reserve(c.Subject, s.cfg.Now(), most.Seconds(), min(minHandlerShare, most).Seconds())
	if got == 0 {
		s.metrics.rateLimited.Add(1)
		return 0, &RateLimitError{RetryAfter: wait, Limit: ErrHandlerBudget}
	}
	return time.Duration(got * float64(time.Second)), nil
}

// settleHandlerTime gives back to the sender's bucket what the dispatch
// did not use of its share (a handler that overran it costs the excess),
// and turns a dispatch that ran out of a share smaller than the hub's
// HandlerBudget into a *RateLimitError wrapping ErrHandlerBudget: with
// the whole budget it might have succeeded, so it is one to retry later,
// when the bucket holds enough for it.
func (s *Server) settleHandlerTime(c *Claims, share, used time.Duration, err error) error {
	now := s.cfg.Now()
	s.handlerTime.give(c.Subject, (share - used).Seconds(), now)
	full := s.hub.Options().HandlerBudget
	if err == nil || !errors.Is(err, moitessier.ErrBudgetExceeded) || (full >= 0 && share >= full) {
		return err
	}
	need := min(2*full, s.cfg.HandlerTimeBurst)
	if full < 0 {
		need = s.cfg.HandlerTimeBurst
	}
	s.metrics.rateLimited.Add(1)
	return fmt.Errorf("%w: %w", &RateLimitError{RetryAfter: s.handlerTime.waitFor(c.Subject, need.Seconds(), now), Limit: ErrHandlerBudget}, err)
}

// dispatchAllowed is dispatch once allowDispatch let it through.
func (s *Server) dispatchAllowed(ctx context.Context, c *Claims, req DispatchRequest) (DispatchResult, error) {
	res, err := s.doDispatch(ctx, c, req)
	if err != nil {
		s.metrics.dispatchErrs.Add(1)
	}
	return res, err
}

func (s *Server) doDispatch(ctx context.Context, c *Claims, req DispatchRequest) (DispatchResult, error) {
	if len(req.Text) > s.cfg.MaxMessageBytes {
		return DispatchResult{}, fmt.Errorf("dispatch: %w: %d bytes, more than %d", moitessier.ErrTooLarge, len(req.Text), s.cfg.MaxMessageBytes)
	}
	// The hub's limits on the lists, before any name is looked up.
	if lim := s.hub.Options(); len(req.Handlers) > lim.MaxHandlers || len(req.To) > lim.MaxRecipients {
		return DispatchResult{}, fmt.Errorf("dispatch: %w: %d handlers and %d recipients; at most %d handlers (Options.MaxHandlers) and %d recipients (Options.MaxRecipients)",
			moitessier.ErrInvalidArgument, len(req.Handlers), len(req.To), lim.MaxHandlers, lim.MaxRecipients)
	}
	if err := moitessier.ValidateScope(req.Scope); err != nil {
		return DispatchResult{}, fmt.Errorf("dispatch: %w", err)
	}
	if !c.CanDispatch(req.Scope) {
		return DispatchResult{}, fmt.Errorf("dispatch to %q: %w: the token does not grant it", req.Scope, ErrForbidden)
	}
	opts := make([]moitessier.DispatchOption, 0, 2+len(req.Handlers))
	for _, name := range req.Handlers {
		hf := s.cfg.Handlers[name]
		if hf == nil {
			return DispatchResult{}, fmt.Errorf("dispatch: %w: no handler %.64q", ErrBadRequest, name)
		}
		opts = append(opts, moitessier.NamedHandler(name, hf))
	}
	if req.To != nil {
		opts = append(opts, moitessier.To(req.To...))
	}
	if req.IdempotencyKey != "" {
		opts = append(opts, moitessier.IdempotencyKey(req.IdempotencyKey))
	}
	var share time.Duration
	if len(req.Handlers) > 0 && s.handlerTime != nil {
		var err error
		if share, err = s.reserveHandlerTime(c); err != nil {
			return DispatchResult{}, err
		}
		opts = append(opts, moitessier.Budget(share))
	}
	d, err := s.hub.Dispatch(ctx, c.Subject, req.Scope, req.Text, opts...)
	if share > 0 {
		err = s.settleHandlerTime(c, share, d.HandlerTime, err)
	}
	if err != nil {
		return DispatchResult{}, err
	}
	if d.Replayed {
		s.metrics.replayed.Add(1)
	} else {
		s.metrics.dispatches.Add(1)
		s.metrics.stored.Add(uint64(len(d.Messages)))
	}
	res := DispatchResult{ID: d.ID, Scope: req.Scope, Replayed: d.Replayed}
	// Count only what the token could see for itself: its own Private and
	// Handler listeners, and the Shared listeners if it may listen to the
	// scope. Counting other people's would tell the sender whether the
	// persons it addresses have a listener.
	shared := c.CanListen(req.Scope)
	see := func(i int) bool {
		owner := ""
		if i < len(d.Owners) {
			owner = d.Owners[i]
		} else if !strings.HasPrefix(d.Reached[i], "s") {
			return false // a replay: owners unknown
		}
		return owner == c.Subject || owner == "" && shared
	}
	for i := range d.Reached {
		if see(i) {
			res.Reached++
		}
	}
	switch res.Reached {
	case 0:
		// Every message is for a listener of d.Reached: none to count.
	case len(d.Reached):
		res.Stored = len(d.Messages)
	default:
		visible := make(map[string]bool, res.Reached)
		for i, id := range d.Reached {
			if see(i) {
				visible[id] = true
			}
		}
		for i := range d.Messages {
			if visible[d.Messages[i].Listener] {
				res.Stored++
			}
		}
	}
	return res, nil
}

// serveDispatch handles POST /v1/dispatch. The body is a DispatchRequest
// (Content-Type application/json), or else the message text itself, with
// scope, to (repeated) and handler (repeated) in the query:
//
//	curl -H "Authorization: Bearer $TOKEN" -d 'hello' 'http://127.0.0.1:8080/v1/dispatch?scope=room.1'
func (s *Server) serveDispatch(w http.ResponseWriter, r *http.Request) {
	c, err := s.authenticate(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.allowDispatch(c); err != nil {
		// Before the body: over the limit, it is neither read nor decoded.
		s.metrics.dispatchErrs.Add(1)
		s.writeError(w, r, err)
		return
	}
	var req DispatchRequest
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct == "application/json" {
		// JSON may spell each byte of text as \u00XX: allow for that.
		b, err := s.readBody(w, r, int64(6*s.cfg.MaxMessageBytes+64<<10))
		if err == nil {
			err = decodeJSON("body", b, &req)
		}
		if err != nil {
			s.writeError(w, r, err)
			return
		}
	} else {
		b, err := s.readBody(w, r, int64(s.cfg.MaxMessageBytes))
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		q := r.URL.Query()
		req = DispatchRequest{Scope: q.Get("scope"), Text: string(b), To: q["to"], Handlers: q["handler"]}
	}
	if k := r.Header.Get("Idempotency-Key"); k != "" {
		req.IdempotencyKey = k
	}
	res, err := s.dispatchAllowed(r.Context(), c, req)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if res.Replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	s.writeJSON(w, http.StatusOK, res)
}
