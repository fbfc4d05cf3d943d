package moitessierhttp_test

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/likestripes/moitessier/moitessierhttp"
)

// TestJoinRate: joins and leaves (POST and DELETE /v1/listeners, SSE
// streams, long-polls, WebSocket listens and unlistens with leave, each a
// write to the store) come from one bucket per person, Config.JoinRate a
// second up to JoinBurst; past it they get 429 rate_limited with
// Retry-After, an error frame on a WebSocket, and another person is not
// affected.
func TestJoinRate(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Unix(1_800_000_000, 0).UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	e := newEnv(t, moitessierhttp.Config{JoinRate: 1, JoinBurst: 4, Now: clock})
	sign := func(person string) string {
		tok, err := moitessierhttp.Sign(secret, moitessierhttp.Claims{Subject: person, Listen: []string{">"}, Dispatch: []string{">"}, ExpiresAt: clock().Add(time.Hour).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tok := sign("alice")
	alice := e.client(tok)
	ctx := ctxT(t)

	// The burst: a join, a long-poll, an SSE stream and a leave.
	j, err := alice.Join(ctx, moitessierhttp.Query{Scopes: []string{"j.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Poll(ctx, moitessierhttp.Query{Scopes: []string{"j.1"}}, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	st, err := alice.Events(ctx, moitessierhttp.Query{Scopes: []string{"j.1"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	readyEvent(t, st)
	st.Close()
	if code, _, body := do(t, "DELETE", e.ts.URL+"/v1/listeners/"+j.Listener.ID, tok, ""); code != http.StatusNoContent {
		t.Fatalf("leave: %d %s", code, body)
	}

	// Past it, each of them is refused.
	limited := func(what string, code int, h http.Header, body []byte) {
		t.Helper()
		if code != http.StatusTooManyRequests || errorCode(t, body) != "rate_limited" {
			t.Fatalf("%s past the rate: %d %s, want 429 rate_limited", what, code, body)
		}
		if ra, err := strconv.Atoi(h.Get("Retry-After")); err != nil || ra < 1 {
			t.Fatalf("%s past the rate: Retry-After %q", what, h.Get("Retry-After"))
		}
	}
	code, h, body := do(t, "POST", e.ts.URL+"/v1/listeners?scope=j.2", tok, "")
	limited("a join", code, h, body)
	code, h, body = do(t, "GET", e.ts.URL+"/v1/poll?scope=j.2&timeout=0.01", tok, "")
	limited("a long-poll", code, h, body)
	code, h, body = do(t, "GET", e.ts.URL+"/v1/events?scope=j.2", tok, "")
	limited("an SSE stream", code, h, body)
	code, h, body = do(t, "DELETE", e.ts.URL+"/v1/listeners/"+j.Listener.ID, tok, "")
	limited("a leave", code, h, body)
	if _, err := alice.Join(ctx, moitessierhttp.Query{Scopes: []string{"j.2"}}); !errors.Is(err, moitessierhttp.ErrRateLimited) {
		t.Fatalf("a join through the Client: %v, want ErrRateLimited", err)
	}
	c := dialWS(t, e, tok, "")
	c.send(moitessierhttp.WSRequest{Op: "listen", Ref: "r", Scopes: []string{"j.2"}})
	if f := c.read(); f.Type != "error" || f.Ref != "r" || f.Error.Code != "rate_limited" || f.Error.RetryAfter < 1 {
		t.Fatalf("a WebSocket listen past the rate: %+v, want a rate_limited error", f)
	}
	// A listen named in the query of the WebSocket too.
	u := "ws" + strings.TrimPrefix(e.ts.URL, "http") + "/v1/ws?scope=j.2"
	q, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}})
	if err != nil {
		t.Fatal(err)
	}
	defer q.CloseNow()
	if f := (&wsClient{tb: t, conn: q}).read(); f.Type != "error" || f.Error.Code != "rate_limited" {
		t.Fatalf("a WebSocket listen in the query past the rate: %+v", f)
	}

	// Another person has a bucket of their own.
	if _, err := e.client(sign("bob")).Join(ctx, moitessierhttp.Query{Scopes: []string{"j.1"}}); err != nil {
		t.Fatalf("bob: %v", err)
	}

	// A second later, one more: a WebSocket listen; its unlisten with
	// leave is then past the rate, and the subscriber stays.
	now.Add(int64(time.Second))
	c.send(moitessierhttp.WSRequest{Op: "listen", Ref: "r", Scopes: []string{"j.3"}})
	f := c.expect("listening", "r")
	c.send(moitessierhttp.WSRequest{Op: "unlisten", Ref: "r", Leave: true})
	// The listen ends (unlistened), and the leave is refused (error), in
	// either order.
	var unlistened, refused bool
	for !unlistened || !refused {
		switch f := c.read(); {
		case f.Type == "unlistened" && f.Ref == "r":
			unlistened = true
		case f.Type == "error" && f.Ref == "r" && f.Error.Code == "rate_limited":
			refused = true
		default:
			t.Fatalf("an unlisten with leave past the rate: frame %+v", f)
		}
	}
	subs, err := e.hub.Subscribers(context.Background(), f.Listener.ID)
	if err != nil || len(subs) != 1 {
		t.Fatalf("after a refused leave: subscribers %+v, %v; want alice still", subs, err)
	}
	now.Add(int64(time.Second))
	c.send(moitessierhttp.WSRequest{Op: "listen", Ref: "r", Listener: f.Listener.ID})
	c.expect("listening", "r")
	now.Add(int64(time.Second))
	c.send(moitessierhttp.WSRequest{Op: "unlisten", Ref: "r", Leave: true})
	c.expect("unlistened", "r")
	waitFor(t, "the leave", func() bool {
		subs, err := e.hub.Subscribers(context.Background(), f.Listener.ID)
		return err != nil || len(subs) == 0
	})
}

// TestPollWaitsForJoinRate: a long-poll client that polls again after
// every answer, faster than the join rate (messages are always there), is
// slowed to the rate, not refused: each poll past the burst waits for its
// token, and every poll answers with messages.
func TestPollWaitsForJoinRate(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{JoinRate: 50, JoinBurst: 5})
	alice := e.client(all(t, "alice"))
	ctx := ctxT(t)
	q := moitessierhttp.Query{Scopes: []string{"busy"}, Since: "head"}
	if _, err := alice.Poll(ctx, q, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	const polls = 30
	for i := range polls {
		if _, err := e.hub.Dispatch(ctx, "bob", "busy", strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	for i := range polls {
		q.Since = strconv.Itoa(i)
		res, err := alice.Poll(ctx, q, 5*time.Second)
		if err != nil {
			t.Fatalf("poll %d: %v", i, err)
		}
		if len(res.Messages) == 0 {
			t.Fatalf("poll %d answered nothing", i)
		}
	}
	// The burst, then a token every 20 ms.
	if el := time.Since(start); el < (polls-5-2)*20*time.Millisecond {
		t.Fatalf("%d polls took %v: faster than the rate", polls, el)
	}
}

// TestWaitJoinClose: a long-poll waiting for its join token is answered
// when the Server closes, as a waiting long-poll is, not held until its
// token comes.
func TestWaitJoinClose(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{JoinRate: 0.1, JoinBurst: 1})
	alice := e.client(all(t, "alice"))
	ctx := ctxT(t)
	q := moitessierhttp.Query{Scopes: []string{"busy"}, Since: "head"}
	if _, err := alice.Poll(ctx, q, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := alice.Poll(ctx, q, 20*time.Second) // its token comes in 10 s: it waits
		done <- err
	}()
	waitFor(t, "the poll to wait", func() bool { return e.srv.Metrics().Snapshot().Open["poll"] == 0 })
	time.Sleep(100 * time.Millisecond)
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "503") {
			t.Fatalf("the waiting poll after Shutdown: %v, want a 503", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("a poll waiting for its join token still waits after Shutdown returned")
	}
}
