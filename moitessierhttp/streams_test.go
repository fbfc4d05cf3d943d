package moitessierhttp_test

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/moitessierhttp"
)

// TestStreamsPerPerson: one person holds at most MaxStreamsPerPerson open
// streams, SSE, WebSocket and long-poll together; one more gets 429
// too_many_streams (ErrTooManyStreams through the Client), another person
// is not affected, and every way a stream ends or fails to begin gives its
// room back: the person can open as many again.
func TestStreamsPerPerson(t *testing.T) {
	const most = 3
	e := newEnv(t, moitessierhttp.Config{MaxStreamsPerPerson: most})
	tok := all(t, "alice")
	alice := e.client(tok)
	ctx := ctxT(t)
	sse := func(scope string) (*moitessierhttp.Stream, error) {
		return alice.Events(ctx, moitessierhttp.Query{Scopes: []string{scope}}, "")
	}
	wsURL := "ws" + strings.TrimPrefix(e.ts.URL, "http") + "/v1/ws"
	dialWSErr := func(tok string) (*websocket.Conn, int, error) {
		conn, resp, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}})
		if err != nil {
			status := 0
			if resp != nil {
				status = resp.StatusCode
			}
			return nil, status, err
		}
		return conn, 0, nil
	}
	refused := func(what string) {
		t.Helper()
		st, err := sse("x.refused")
		if !errors.Is(err, moitessierhttp.ErrTooManyStreams) {
			if st != nil {
				st.Close()
			}
			t.Fatalf("%s: a stream past the most: %v, want ErrTooManyStreams", what, err)
		}
		var he *moitessierhttp.Error
		if !errors.As(err, &he) || he.Status != http.StatusTooManyRequests || he.Code != "too_many_streams" {
			t.Fatalf("%s: %v, want 429 too_many_streams", what, err)
		}
		if _, err := alice.Poll(ctx, moitessierhttp.Query{Scopes: []string{"x.refused"}}, 10*time.Millisecond); !errors.Is(err, moitessierhttp.ErrTooManyStreams) {
			t.Fatalf("%s: a long-poll past the most: %v, want ErrTooManyStreams", what, err)
		}
		if c, status, _ := dialWSErr(tok); c != nil || status != http.StatusTooManyRequests {
			if c != nil {
				c.CloseNow()
			}
			t.Fatalf("%s: a WebSocket past the most: status %d, want 429", what, status)
		}
	}
	// eventually opens an SSE stream once room has come back.
	eventually := func(what string) *moitessierhttp.Stream {
		t.Helper()
		var st *moitessierhttp.Stream
		waitFor(t, what, func() bool {
			var err error
			st, err = sse("x.again")
			if err != nil && !errors.Is(err, moitessierhttp.ErrTooManyStreams) {
				t.Fatal(err)
			}
			return err == nil
		})
		readyEvent(t, st)
		return st
	}

	s1, err := sse("x.1")
	if err != nil {
		t.Fatal(err)
	}
	readyEvent(t, s1)
	s2, err := sse("x.2")
	if err != nil {
		t.Fatal(err)
	}
	readyEvent(t, s2)
	ws, status, err := dialWSErr(tok)
	if err != nil {
		t.Fatalf("WebSocket: %v (status %d)", err, status)
	}
	refused("2 SSE and 1 WebSocket")

	// Another person has room of their own.
	bob, err := e.client(all(t, "bob")).Events(ctx, moitessierhttp.Query{Scopes: []string{"x.1"}}, "")
	if err != nil {
		t.Fatalf("bob: %v", err)
	}
	bob.Close()

	// A stream the client closes gives its room back.
	s1.Close()
	s1 = eventually("room after an SSE stream closed")
	refused("after reopening")
	// So does a WebSocket the client closes.
	ws.Close(websocket.StatusNormalClosure, "")
	s3 := eventually("room after a WebSocket closed")
	refused("after reopening")

	// A long-poll holds room while it waits, and gives it back when it answers.
	s3.Close()
	waitFor(t, "room after the third stream closed", func() bool {
		_, err := alice.Poll(ctx, moitessierhttp.Query{Scopes: []string{"x.poll"}}, 10*time.Millisecond)
		return err == nil
	})
	pollDone := make(chan error, 1)
	go func() {
		_, err := alice.Poll(ctx, moitessierhttp.Query{Scopes: []string{"x.poll"}}, 500*time.Millisecond)
		pollDone <- err
	}()
	waitFor(t, "the poll", func() bool { return e.srv.Metrics().Snapshot().Open["poll"] == 1 })
	refused("2 SSE and a waiting long-poll")
	if err := <-pollDone; err != nil {
		t.Fatal(err)
	}
	s3 = eventually("room after the long-poll answered")

	// Requests that fail after their stream was counted give it back too:
	// a scope the token does not grant, a listener that does not exist, a
	// WebSocket handshake that is not one. Carol then still opens as many
	// streams as anyone.
	carolTok := token(t, "carol", []string{"x.>"}, nil)
	carol := e.client(carolTok)
	for range 2 * most {
		if _, err := carol.Events(ctx, moitessierhttp.Query{Scopes: []string{"y.1"}}, ""); !errors.Is(err, moitessierhttp.ErrForbidden) {
			t.Fatalf("SSE out of scope: %v", err)
		}
		if _, err := carol.Poll(ctx, moitessierhttp.Query{Listener: "s0123"}, time.Millisecond); !errors.Is(err, moitessier.ErrNotFound) {
			t.Fatalf("a poll of a listener that does not exist: %v", err)
		}
		if code, _, body := do(t, "GET", "http"+wsURL[len("ws"):], carolTok, ""); code == http.StatusSwitchingProtocols || code == http.StatusTooManyRequests {
			t.Fatalf("a GET of /v1/ws without an upgrade: %d %s", code, body)
		}
	}
	var carols []*moitessierhttp.Stream
	for i := range most {
		var st *moitessierhttp.Stream
		waitFor(t, "carol's streams", func() bool {
			var err error
			st, err = carol.Events(ctx, moitessierhttp.Query{Scopes: []string{"x.carol"}, Client: strconv.Itoa(i)}, "")
			if err != nil && !errors.Is(err, moitessierhttp.ErrTooManyStreams) {
				t.Fatal(err)
			}
			return err == nil
		})
		readyEvent(t, st)
		carols = append(carols, st)
	}
	if _, err := carol.Events(ctx, moitessierhttp.Query{Scopes: []string{"x.carol"}}, ""); !errors.Is(err, moitessierhttp.ErrTooManyStreams) {
		t.Fatalf("carol past the most: %v", err)
	}
	for _, st := range carols {
		st.Close()
	}

	// Shutting down ends them all.
	s1.Close()
	s2.Close()
	s3.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
}
