package moitessierhttp

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/likestripes/moitessier"
)

// Message is a message as the endpoints send it, in SSE data, WebSocket
// frames and long-poll answers:
//
//	{"listener":"s3f…","seq":12,"dispatch":"18a…","scope":"room.1","sender":"alice","text":"hi","created":"2026-01-02T03:04:05.123456789Z"}
type Message struct {
	Listener string    `json:"listener"`
	Seq      uint64    `json:"seq"`
	Dispatch string    `json:"dispatch"`
	Scope    string    `json:"scope"`
	Sender   string    `json:"sender"`
	Text     string    `json:"text"`
	Created  time.Time `json:"created"`
}

func wireMessage(m *moitessier.Message) Message {
	return Message{Listener: m.Listener, Seq: uint64(m.Seq), Dispatch: m.Dispatch, Scope: m.Scope, Sender: m.Sender, Text: m.Text, Created: m.Created.UTC()}
}

// ListenerInfo describes a listener:
//
//	{"id":"s3f…","type":"shared","person":"alice","scopes":["room.1"],"created":"…","head":12}
type ListenerInfo struct {
	ID      string    `json:"id"`
	Type    string    `json:"type"`
	Person  string    `json:"person"`
	Client  string    `json:"client,omitempty"`
	Scopes  []string  `json:"scopes"`
	Created time.Time `json:"created"`
	// Head is the sequence number of the listener's newest message.
	Head uint64 `json:"head"`
}

func wireInfo(l moitessier.ListenerInfo) ListenerInfo {
	return ListenerInfo{ID: l.ID, Type: l.Type.String(), Person: l.Person, Client: l.Client, Scopes: l.Scopes, Created: l.Created.UTC(), Head: uint64(l.Head)}
}

// Subscriber is one subscriber's read state: its acknowledged cursor.
//
//	{"person":"bob","client":"phone","cursor":11,"joined":"…","lease_expires":"…"}
type Subscriber struct {
	Person       string    `json:"person"`
	Client       string    `json:"client,omitempty"`
	Cursor       uint64    `json:"cursor"`
	Joined       time.Time `json:"joined"`
	LeaseExpires time.Time `json:"lease_expires"`
}

// listenSpec is what a listen request names: an existing listener by ID, or
// the conditions of one (the person comes from the token).
type listenSpec struct {
	id     string
	typ    moitessier.ListenerType
	scopes []string
	client string
	start  moitessier.Start
}

// parseListen reads a listen request's query: listener=ID, or
// scope=…(repeated) with type=shared|private|handler (default shared); and
// client.
func parseListen(q url.Values) (listenSpec, error) {
	spec := listenSpec{id: q.Get("listener"), scopes: q["scope"], client: q.Get("client"), typ: moitessier.Shared}
	if t := q.Get("type"); t != "" {
		typ, err := moitessier.ParseListenerType(t)
		if err != nil {
			return spec, err
		}
		spec.typ = typ
	}
	if spec.id != "" && len(spec.scopes) > 0 {
		return spec, fmt.Errorf("%w: give either listener or scope, not both", ErrBadRequest)
	}
	if spec.id == "" && len(spec.scopes) == 0 {
		return spec, fmt.Errorf("%w: no scope", moitessier.ErrInvalidScope)
	}
	if v := q.Get("start"); v != "" {
		if spec.id != "" {
			return spec, fmt.Errorf("%w: start applies to a listener named by its scopes, not by ID", ErrBadRequest)
		}
		start, err := ParseStart(v, time.Now())
		if err != nil {
			return spec, err
		}
		spec.start = start
	}
	return spec, nil
}

// ParseStart parses where a new subscriber starts, as the endpoints take it
// in start=…: "newest" (or "", the default: what is dispatched after it
// joined), "oldest" (the oldest message kept), a time in RFC 3339
// ("2026-01-02T15:04:05Z": the messages created since), or a duration
// before now ("24h", "90m": the messages of that last while). It applies
// only when the request makes the subscriber; see moitessier.Conditions.Start.
func ParseStart(s string, now time.Time) (moitessier.Start, error) {
	switch s {
	case "", "newest":
		return moitessier.Start{}, nil
	case "oldest":
		return moitessier.StartOldest, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return moitessier.StartSince(t), nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return moitessier.StartSince(now.Add(-d)), nil
	}
	return moitessier.Start{}, fmt.Errorf("%w: start %.40q: want newest, oldest, an RFC 3339 time or a duration like 24h", ErrBadRequest, s)
}

// sinceHead is the cursor spelled "head": only messages dispatched from now on.
const sinceHead = moitessier.Resume - 1

// ParseCursor parses a cursor as the endpoints take it: a decimal sequence
// number (0 is the beginning of what is kept), "resume" or "" (the
// subscriber's server-held cursor, [moitessier.Resume]). "head" (only what
// is dispatched from now on) is accepted by the endpoints but not here.
func ParseCursor(s string) (moitessier.Cursor, error) {
	if s == "" || s == "resume" {
		return moitessier.Resume, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || moitessier.Cursor(n) >= sinceHead {
		return 0, fmt.Errorf("%w: cursor %.32q: want a sequence number, \"resume\" or \"head\"", ErrBadRequest, s)
	}
	return moitessier.Cursor(n), nil
}

func parseSince(s string) (moitessier.Cursor, error) {
	if s == "head" {
		return sinceHead, nil
	}
	return ParseCursor(strings.TrimSpace(s))
}
