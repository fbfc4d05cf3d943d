package moitessierhttp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client calls a Server's endpoints. The zero value is not usable: set BaseURL.
type Client struct {
	// BaseURL is where the Server is mounted, e.g. "http://127.0.0.1:8080".
	BaseURL string
	// Token is the bearer token sent with every request.
	Token string
	// HTTPClient makes the requests. Default http.DefaultClient. It must
	// have no overall Timeout for Listen, whose streams do not end.
	HTTPClient *http.Client
	// OnReconnect, if set, is called by Listen before each reconnection,
	// with the error that ended the stream and the wait before the next try.
	OnReconnect func(err error, wait time.Duration)
	// RefreshToken, if set, is called when the server refuses Token (401:
	// expired, or signed with a secret the server no longer has) to get a
	// new one; Dispatch and Listen then try again once with it.
	RefreshToken func(ctx context.Context) (string, error)
}

// refresh replaces the token after a 401, if it can.
func (c *Client) refresh(ctx context.Context, err error) bool {
	var e *Error
	if c.RefreshToken == nil || !errors.As(err, &e) || e.Status != http.StatusUnauthorized {
		return false
	}
	tok, rerr := c.RefreshToken(ctx)
	if rerr != nil || tok == "" {
		return false
	}
	c.Token = tok
	return true
}

// Error is an error answer of the Server. errors.Is matches it against the
// sentinel of its code: ErrForbidden, moitessier.ErrNotFound, ErrRateLimited…
type Error struct {
	ErrorBody
	// RetryAfter is the Retry-After of a 429 answer.
	RetryAfter time.Duration
}

// Error says the answer's status, code and message.
func (e *Error) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.ErrorBody.Error)
}

// Unwrap returns the sentinel error of the code, if any.
func (e *Error) Unwrap() error { return sentinelFor(e.Code) }

// Query names a listener to listen to, as the endpoints take it.
type Query struct {
	// Scopes and Type (shared, private or handler; default shared) name a
	// listener by its conditions; Listener names one by ID instead.
	Scopes   []string
	Type     string
	Listener string
	// Client names the caller's client (device, tab): a subscriber of its own.
	Client string
	// Since is where to start: a sequence number, "resume" (default) or "head".
	Since string
	// Start is where the subscriber starts if the request makes it one:
	// "newest" (default), "oldest", a time or a duration (see ParseStart).
	Start string
}

func (q Query) values() url.Values {
	v := url.Values{}
	for _, s := range q.Scopes {
		v.Add("scope", s)
	}
	for k, s := range map[string]string{"type": q.Type, "listener": q.Listener, "client": q.Client, "since": q.Since, "start": q.Start} {
		if s != "" {
			v.Set(k, s)
		}
	}
	return v
}

func (c *Client) httpClient() *http.Client {
	if c.HTTPClient != nil {
		return c.HTTPClient
	}
	return http.DefaultClient
}

func (c *Client) newRequest(ctx context.Context, method, path string, q url.Values, body io.Reader) (*http.Request, error) {
	u := strings.TrimRight(c.BaseURL, "/") + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	return req, nil
}

// do sends req and decodes a JSON answer into out, or returns an *Error.
func (c *Client) do(req *http.Request, out any) error {
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return readError(resp)
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", req.Method, req.URL.Path, err)
	}
	return nil
}

func readError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &Error{}
	if json.Unmarshal(b, &e.ErrorBody) != nil || e.Code == "" {
		e.ErrorBody = ErrorBody{Status: resp.StatusCode, Code: "http_" + strconv.Itoa(resp.StatusCode), Error: strings.TrimSpace(string(b))}
	}
	e.Status = resp.StatusCode
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	return e
}

// Dispatch sends a dispatch. req.IdempotencyKey goes in the Idempotency-Key header.
func (c *Client) Dispatch(ctx context.Context, req DispatchRequest) (DispatchResult, error) {
	res, err := c.dispatch(ctx, req)
	if err != nil && c.refresh(ctx, err) {
		return c.dispatch(ctx, req)
	}
	return res, err
}

func (c *Client) dispatch(ctx context.Context, req DispatchRequest) (DispatchResult, error) {
	key := req.IdempotencyKey
	req.IdempotencyKey = ""
	body, err := json.Marshal(req)
	if err != nil {
		return DispatchResult{}, err
	}
	r, err := c.newRequest(ctx, http.MethodPost, "/v1/dispatch", nil, bytes.NewReader(body))
	if err != nil {
		return DispatchResult{}, err
	}
	r.Header.Set("Content-Type", "application/json")
	if key != "" {
		r.Header.Set("Idempotency-Key", key)
	}
	var res DispatchResult
	return res, c.do(r, &res)
}

// Join creates or joins the listener q names and returns it with the
// caller's server-held cursor.
func (c *Client) Join(ctx context.Context, q Query) (JoinResult, error) {
	r, err := c.newRequest(ctx, http.MethodPost, "/v1/listeners", q.values(), nil)
	if err != nil {
		return JoinResult{}, err
	}
	var res JoinResult
	return res, c.do(r, &res)
}

// ReadState returns the first page of the subscribers' acknowledged cursors
// on a listener (DefaultReadStateLimit of them); ReadStatePage reads others.
func (c *Client) ReadState(ctx context.Context, listenerID string) (ReadState, error) {
	return c.ReadStatePage(ctx, listenerID, "", 0)
}

// ReadStatePage returns a page of at most limit (0: the server's default)
// subscribers' acknowledged cursors on a listener, after the position
// after (a ReadState.Next; "" for the first page).
func (c *Client) ReadStatePage(ctx context.Context, listenerID, after string, limit int) (ReadState, error) {
	v := url.Values{}
	if after != "" {
		v.Set("after", after)
	}
	if limit > 0 {
		v.Set("limit", strconv.Itoa(limit))
	}
	r, err := c.newRequest(ctx, http.MethodGet, "/v1/listeners/"+url.PathEscape(listenerID)+"/subscribers", v, nil)
	if err != nil {
		return ReadState{}, err
	}
	var res ReadState
	return res, c.do(r, &res)
}

// Poll waits up to timeout (0: the server's default) for messages after q.Since.
func (c *Client) Poll(ctx context.Context, q Query, timeout time.Duration) (PollResult, error) {
	v := q.values()
	if timeout > 0 {
		v.Set("timeout", timeout.String())
	}
	r, err := c.newRequest(ctx, http.MethodGet, "/v1/poll", v, nil)
	if err != nil {
		return PollResult{}, err
	}
	var res PollResult
	return res, c.do(r, &res)
}

// Event is one Server-Sent Event.
type Event struct {
	// ID is the event's id: a message's cursor, or "" for other events.
	ID string
	// Type is "message" for messages, else "ready", "close" or "error".
	Type string
	Data []byte
}

// Stream is one SSE connection. Close it when done.
type Stream struct {
	body io.ReadCloser
	sc   *bufio.Scanner
}

// Events opens one SSE connection; lastEventID, if not "", is sent as the
// Last-Event-ID header. A refused request returns an *Error.
func (c *Client) Events(ctx context.Context, q Query, lastEventID string) (*Stream, error) {
	r, err := c.newRequest(ctx, http.MethodGet, "/v1/events", q.values(), nil)
	if err != nil {
		return nil, err
	}
	r.Header.Set("Accept", "text/event-stream")
	if lastEventID != "" {
		r.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := c.httpClient().Do(r)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, readError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 4096), 8<<20)
	return &Stream{body: resp.Body, sc: sc}, nil
}

// Next returns the next event (comments, such as heartbeats, are skipped).
// It returns io.EOF when the server ended the stream.
func (s *Stream) Next() (Event, error) {
	var ev Event
	var data []byte
	hasData := false
	for s.sc.Scan() {
		line := s.sc.Bytes()
		if len(line) == 0 {
			if !hasData {
				ev = Event{}
				continue
			}
			if ev.Type == "" {
				ev.Type = "message"
			}
			ev.Data = data
			return ev, nil
		}
		if line[0] == ':' {
			continue
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "id":
			ev.ID = string(value)
		case "event":
			ev.Type = string(value)
		case "data":
			if hasData {
				data = append(data, '\n')
			}
			data = append(data, value...)
			hasData = true
		}
	}
	if err := s.sc.Err(); err != nil {
		return Event{}, err
	}
	return Event{}, io.EOF
}

// Close ends the stream.
func (s *Stream) Close() error { return s.body.Close() }

// Listen follows a listener over SSE like tail -f: it calls fn for every
// message, in order, and reconnects after a dropped connection with the
// Last-Event-ID of the last message it saw, so that nothing is missed. It
// returns when ctx is done (nil), fn returns an error (that error), or the
// server refuses the request for good (an *Error: bad token, forbidden…).
func (c *Client) Listen(ctx context.Context, q Query, fn func(Message) error) error {
	last := ""
	if _, err := strconv.ParseUint(q.Since, 10, 64); err == nil {
		last = q.Since
	}
	wait := 100 * time.Millisecond
	refreshed := false
	for {
		err := c.listenOnce(ctx, q, &last, fn)
		if ctx.Err() != nil {
			return nil
		}
		var fe *fnError
		if errors.As(err, &fe) {
			return fe.err
		}
		if !refreshed && c.refresh(ctx, err) {
			refreshed = true
			continue
		}
		refreshed = false
		var se *Error
		if errors.As(err, &se) && se.Status != http.StatusTooManyRequests && se.Status < 500 {
			return err
		}
		if se != nil && se.RetryAfter > wait {
			wait = se.RetryAfter
		}
		if c.OnReconnect != nil {
			c.OnReconnect(err, wait)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

type fnError struct{ err error }

func (e *fnError) Error() string { return e.err.Error() }

func (c *Client) listenOnce(ctx context.Context, q Query, last *string, fn func(Message) error) error {
	st, err := c.Events(ctx, q, *last)
	if err != nil {
		return err
	}
	defer st.Close()
	for {
		ev, err := st.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("stream ended")
			}
			return err
		}
		switch ev.Type {
		case "message":
			var m Message
			if err := json.Unmarshal(ev.Data, &m); err != nil {
				return fmt.Errorf("decode message: %w", err)
			}
			if err := fn(m); err != nil {
				return &fnError{err}
			}
			*last = ev.ID
		case "error":
			e := &Error{}
			if err := json.Unmarshal(ev.Data, &e.ErrorBody); err != nil {
				return fmt.Errorf("decode error event: %w", err)
			}
			return e
		case "close":
			var cl struct {
				Reason string `json:"reason"`
			}
			_ = json.Unmarshal(ev.Data, &cl)
			if cl.Reason == "token_expired" {
				return &Error{ErrorBody: ErrorBody{Status: http.StatusUnauthorized, Code: "token_expired", Error: "token expired"}}
			}
			return fmt.Errorf("server closed the stream: %s", cl.Reason)
		}
	}
}
