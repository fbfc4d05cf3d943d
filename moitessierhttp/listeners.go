package moitessierhttp

import (
	"encoding/base64"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/likestripes/moitessier"
)

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
	if err == nil {
		err = s.allowJoin(c)
	}
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
	s.writeJSON(w, http.StatusOK, JoinResult{Listener: wireInfo(info), Cursor: uint64(cur)})
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
	info, err := s.readableBy(r, c)
	if err != nil {
		return nil, info, err
	}
	return c, info, nil
}

// readableBy is readable for claims already authenticated.
func (s *Server) readableBy(r *http.Request, c *Claims) (moitessier.ListenerInfo, error) {
	id := listenerParam(r)
	if id == "" {
		return moitessier.ListenerInfo{}, fmt.Errorf("%w: no listener", ErrBadRequest)
	}
	return s.lookup(r.Context(), c, id)
}

func (s *Server) serveInfo(w http.ResponseWriter, r *http.Request) {
	_, info, err := s.readable(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeJSON(w, http.StatusOK, wireInfo(info))
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
	s.writeJSON(w, http.StatusOK, rs)
}

// serveLeave handles DELETE /v1/listeners/{id}?client=…: the caller stops
// being a subscriber; the last subscriber out deletes the listener.
func (s *Server) serveLeave(w http.ResponseWriter, r *http.Request) {
	c, err := s.authenticate(r)
	if err == nil {
		err = s.allowJoin(c)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	info, err := s.readableBy(r, c)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// A caller that is not a subscriber gets Leave's ErrNotFound, told in
	// the API's words rather than the store's.
	err = s.hub.Leave(r.Context(), info.ID, c.Subject, r.URL.Query().Get("client"))
	if errors.Is(err, moitessier.ErrNotFound) {
		err = fmt.Errorf("listener %s: subscriber %q: %w", info.ID, c.Subject, moitessier.ErrNotFound)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
