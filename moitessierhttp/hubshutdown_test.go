package moitessierhttp_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/likestripes/moitessier/moitessierhttp"
)

// TestHubShutdownFirst: a program that shuts its hub down before its HTTP
// server ends the streams as the server's own shutdown does, not as a
// deleted listener: over SSE with a close event whose reason is
// shutting_down, after which Client.Listen reconnects rather than give up;
// over WebSocket with an error frame of code shutting_down, not gone, and
// then a close with 1001 (going away); and a long poll with an answer with
// nothing, after which its client polls again.
func TestHubShutdownFirst(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{})
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()

	ended := make(chan error, 1)
	reconnects := make(chan error, 16)
	got := make(chan string, 1)
	c := e.client(all(t, "alice"))
	c.OnReconnect = func(err error, wait time.Duration) {
		select {
		case reconnects <- err:
		default:
		}
	}
	go func() {
		ended <- c.Listen(ctx, moitessierhttp.Query{Scopes: []string{"sd.room"}}, func(m moitessierhttp.Message) error {
			select { // never blocks the stream, which must go on to its end
			case got <- m.Text:
			default:
			}
			return nil
		})
	}()
	ws := dialWS(t, e, all(t, "bob"), "")
	ws.send(moitessierhttp.WSRequest{Op: "listen", Ref: "r", Scopes: []string{"sd.room"}})
	ws.expect("listening", "r")
	// The SSE stream is up once a dispatch reaches it.
	for text := ""; text == ""; {
		dispatch(t, e.client(all(t, "carol")), "sd.room", "hello")
		select {
		case text = <-got:
		case <-time.After(50 * time.Millisecond):
		}
	}
	ws.expect("messages", "r")
	// A long poll waits past the hub's shutdown.
	dave := e.client(all(t, "dave"))
	if _, err := dave.Poll(ctx, moitessierhttp.Query{Scopes: []string{"sd.room"}, Since: "head"}, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	polled := make(chan error, 1)
	go func() {
		res, err := dave.Poll(ctx, moitessierhttp.Query{Scopes: []string{"sd.room"}}, 30*time.Second)
		if err == nil && len(res.Messages) > 0 {
			err = fmt.Errorf("messages %+v", res.Messages)
		}
		polled <- err
	}()
	// The poll waits in ListenUntil, as the SSE and WebSocket listens do.
	for e.hub.Stats().Listening < 3 {
		time.Sleep(time.Millisecond)
	}

	if err := e.hub.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-polled; err != nil {
		t.Fatalf("a long poll at the hub's shutdown: %v; want an answer with nothing, to poll again", err)
	}
	for {
		f := ws.read()
		if f.Type != "error" {
			continue
		}
		if f.Ref != "r" || f.Error == nil || f.Error.Code != "shutting_down" {
			t.Fatalf("WebSocket frame at the hub's shutdown %+v, error %+v; want error shutting_down for r", f, f.Error)
		}
		break
	}
	// Then the connection closes as at the server's shutdown.
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	if _, _, err := ws.conn.Read(rctx); websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Fatalf("WebSocket after the hub's shutdown: %v; want a close with 1001 (going away)", err)
	}
	select {
	case err := <-reconnects:
		var he *moitessierhttp.Error
		if errors.As(err, &he) || !strings.Contains(err.Error(), "server closed the stream: shutting_down") {
			t.Fatalf("Listen reconnects after %v; want the stream closed by a close event for shutting_down", err)
		}
	case err := <-ended:
		t.Fatalf("Listen gave up at the hub's shutdown: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the SSE stream did not end at the hub's shutdown")
	}
	cancel()
	if err := <-ended; err != nil {
		t.Fatalf("Listen after its context ended: %v", err)
	}
}
