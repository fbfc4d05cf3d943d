package moitessierhttp

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"

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

// allowHandlers refuses, with a *RateLimitError wrapping ErrHandlerBudget,
// a dispatch naming handlers while the person's handler time
// (Config.HandlerTimeRate) is used up. What the handlers take is charged
// after the dispatch, from Dispatched.HandlerTime.
func (s *Server) allowHandlers(c *Claims) error {
	if s.handlerTime == nil {
		return nil
	}
	if ok, wait := s.handlerTime.positive(c.Subject, s.cfg.Now()); !ok {
		s.metrics.rateLimited.Add(1)
		return &RateLimitError{RetryAfter: wait, Limit: ErrHandlerBudget}
	}
	return nil
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
	if len(req.Handlers) > 0 {
		if err := s.allowHandlers(c); err != nil {
			return DispatchResult{}, err
		}
	}
	d, err := s.hub.Dispatch(ctx, c.Subject, req.Scope, req.Text, opts...)
	if s.handlerTime != nil {
		s.handlerTime.charge(c.Subject, d.HandlerTime.Seconds(), s.cfg.Now())
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
	visible := make(map[string]bool, len(d.Reached))
	for i, id := range d.Reached {
		owner := ""
		if i < len(d.Owners) {
			owner = d.Owners[i]
		} else if !strings.HasPrefix(id, "s") {
			continue // a replay: owners unknown
		}
		if owner == c.Subject || owner == "" && shared {
			visible[id] = true
			res.Reached++
		}
	}
	for i := range d.Messages {
		if visible[d.Messages[i].Listener] {
			res.Stored++
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
	writeJSON(w, http.StatusOK, res)
}

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

// JoinResult answers POST /v1/listeners: the listener, and the caller's
// server-held cursor on it.
//
//	{"listener":{…ListenerInfo},"cursor":0}
type JoinResult struct {
	Listener ListenerInfo `json:"listener"`
	Cursor   uint64       `json:"cursor"`
}

// serveJoin handles POST /v1/listeners: it creates (or joins) the listener
// that the query or a JSON body {"type":"shared","scopes":["room.1"],"client":"tab1"}
// names, for the token's person ("start" as in the query: see ParseStart).
func (s *Server) serveJoin(w http.ResponseWriter, r *http.Request) {
	c, err := s.authenticate(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "application/json" {
		var body struct {
			Type     string   `json:"type"`
			Scopes   []string `json:"scopes"`
			Client   string   `json:"client"`
			Listener string   `json:"listener"`
			Start    string   `json:"start"`
		}
		b, err := s.readBody(w, r, 256<<10)
		if err == nil {
			err = decodeJSON("body", b, &body)
		}
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		q = map[string][]string{"type": {body.Type}, "scope": body.Scopes, "client": {body.Client}, "listener": {body.Listener}, "start": {body.Start}}
	}
	spec, err := parseListen(q)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	l, info, err := s.openListener(r.Context(), c, spec)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	cur, err := l.Cursor(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, JoinResult{Listener: wireInfo(info), Cursor: uint64(cur)})
}

func listenerParam(r *http.Request) string {
	if id := r.PathValue("id"); id != "" {
		return id
	}
	return r.URL.Query().Get("listener")
}

// readable returns the listener named by the request if the token may read it.
func (s *Server) readable(r *http.Request) (*Claims, moitessier.ListenerInfo, error) {
	c, err := s.authenticate(r)
	if err != nil {
		return nil, moitessier.ListenerInfo{}, err
	}
	id := listenerParam(r)
	if id == "" {
		return nil, moitessier.ListenerInfo{}, fmt.Errorf("%w: no listener", ErrBadRequest)
	}
	info, err := s.lookup(r.Context(), c, id)
	if err != nil {
		return nil, info, err
	}
	return c, info, nil
}

func (s *Server) serveInfo(w http.ResponseWriter, r *http.Request) {
	_, info, err := s.readable(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, wireInfo(info))
}

// ReadState answers GET /v1/listeners/{id}/subscribers: a page of the
// subscribers' acknowledged cursors, in (person, client) byte order, so "who
// has not seen message 12" is the subscribers whose cursor is below 12 (or
// ask for them with ?unseen=12).
//
//	{"listener":{…ListenerInfo},"subscribers":[{"person":"bob","cursor":11,…}],"next":"Ym9i"}
//
// A page holds at most ?limit= subscribers (default DefaultReadStateLimit,
// at most MaxReadStateLimit; a larger limit is lowered to it). When more
// follow, Next is set: pass it as ?after= for the next page. With unseen, a
// page may hold fewer than limit (even none) while Next is set; the pages
// together hold every subscriber once.
type ReadState struct {
	Listener    ListenerInfo `json:"listener"`
	Subscribers []Subscriber `json:"subscribers"`
	// Next is the ?after= of the next page; empty on the last page.
	Next string `json:"next,omitempty"`
}

// Read-state pages (GET /v1/listeners/{id}/subscribers?limit=&after=).
const (
	// DefaultReadStateLimit is the page size when the request gives no limit.
	DefaultReadStateLimit = 100
	// MaxReadStateLimit is the largest page; a larger limit is lowered to it.
	MaxReadStateLimit = 1000
)

// readStateAfter encodes the position of a subscriber for ?after=: its
// person and client, which hold no control character, joined by a NUL.
func readStateAfter(person, client string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(person + "\x00" + client))
}

func parseReadStateAfter(v string) (person, client string, err error) {
	b, err := base64.RawURLEncoding.Strict().DecodeString(v)
	if err != nil {
		return "", "", fmt.Errorf("%w: after %.64q: not a position from next", ErrBadRequest, v)
	}
	person, client, ok := strings.Cut(string(b), "\x00")
	if !ok || person == "" || strings.ContainsRune(client, 0) {
		return "", "", fmt.Errorf("%w: after %.64q: not a position from next", ErrBadRequest, v)
	}
	return person, client, nil
}

func (s *Server) serveReadState(w http.ResponseWriter, r *http.Request) {
	_, info, err := s.readable(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	var unseen uint64
	if v := q.Get("unseen"); v != "" {
		if unseen, err = strconv.ParseUint(v, 10, 64); err != nil {
			s.writeError(w, r, fmt.Errorf("%w: unseen %.32q: want a sequence number", ErrBadRequest, v))
			return
		}
	}
	limit := DefaultReadStateLimit
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 {
			s.writeError(w, r, fmt.Errorf("%w: limit %.32q: want a positive number", ErrBadRequest, v))
			return
		}
		limit = min(limit, MaxReadStateLimit)
	}
	// The page starts at the subscriber after ?after=: read from it
	// (inclusive), skip it, and read one more to know whether a next page
	// exists.
	var rg moitessier.SubscriberRange
	if v := q.Get("after"); v != "" {
		if rg.Person, rg.Client, err = parseReadStateAfter(v); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	rg.Limit = limit + 2
	subs, err := s.hub.SubscriberPage(r.Context(), info.ID, rg)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if rg.Person != "" && len(subs) > 0 && subs[0].Person == rg.Person && subs[0].Client == rg.Client {
		subs = subs[1:]
	}
	rs := ReadState{Listener: wireInfo(info), Subscribers: make([]Subscriber, 0, min(len(subs), limit))}
	if len(subs) > limit {
		subs = subs[:limit]
		last := subs[limit-1]
		rs.Next = readStateAfter(last.Person, last.Client)
	}
	for _, sub := range subs {
		if unseen > 0 && uint64(sub.Cursor) >= unseen {
			continue
		}
		rs.Subscribers = append(rs.Subscribers, Subscriber{Person: sub.Person, Client: sub.Client, Cursor: uint64(sub.Cursor), Joined: sub.Joined.UTC(), LeaseExpires: sub.LeaseExpires.UTC()})
	}
	writeJSON(w, http.StatusOK, rs)
}

// serveLeave handles DELETE /v1/listeners/{id}?client=…: the caller stops
// being a subscriber; the last subscriber out deletes the listener.
func (s *Server) serveLeave(w http.ResponseWriter, r *http.Request) {
	c, info, err := s.readable(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	client := r.URL.Query().Get("client")
	// One row: the first subscriber at or after the caller is the caller,
	// if it is a subscriber.
	subs, err := s.hub.SubscriberPage(r.Context(), info.ID, moitessier.SubscriberRange{Person: c.Subject, Client: client, Limit: 1})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if len(subs) == 0 || subs[0].Person != c.Subject || subs[0].Client != client {
		s.writeError(w, r, fmt.Errorf("listener %s: subscriber %q: %w", info.ID, c.Subject, moitessier.ErrNotFound))
		return
	}
	l, err := s.hub.Open(r.Context(), info.ID, c.Subject, client)
	if err == nil {
		err = l.Close(r.Context())
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// serveWhoami answers GET /v1/whoami: the caller's token claims.
func (s *Server) serveWhoami(w http.ResponseWriter, r *http.Request) {
	c, err := s.authenticate(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}
