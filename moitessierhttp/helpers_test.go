package moitessierhttp_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/memstore"
	"github.com/likestripes/moitessier/moitessierhttp"
)

var secret = []byte("test-secret-of-enough-length-1234")

// env is a hub served over a real loopback socket.
type env struct {
	hub *moitessier.Hub
	srv *moitessierhttp.Server
	ts  *httptest.Server
}

func newEnv(tb testing.TB, cfg moitessierhttp.Config) *env {
	tb.Helper()
	return newEnvOn(tb, memstore.New(), moitessier.Options{}, cfg)
}

// newEnvOn is newEnv on a given store and options: GCInterval and
// AckInterval, if zero, are set for tests (no GC, 10 ms), and Secret to
// secret if neither it nor Authenticate is set.
func newEnvOn(tb testing.TB, store moitessier.Store, opts moitessier.Options, cfg moitessierhttp.Config) *env {
	tb.Helper()
	if opts.GCInterval == 0 {
		opts.GCInterval = -1
	}
	if opts.AckInterval == 0 {
		opts.AckInterval = 10 * time.Millisecond
	}
	hub, err := moitessier.New(store, opts)
	if err != nil {
		tb.Fatal(err)
	}
	if cfg.Secret == nil && cfg.Authenticate == nil {
		cfg.Secret = secret
	}
	srv, err := moitessierhttp.New(hub, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			tb.Errorf("shutdown: %v", err)
		}
		ts.Close()
		_ = hub.Close()
	})
	return &env{hub: hub, srv: srv, ts: ts}
}

// dial opens a raw TCP connection to the server, closed when the test ends.
func (e *env) dial(tb testing.TB) net.Conn {
	tb.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.ts.URL, "http://"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

// token mints a token for person with the given grants, valid for an hour.
func token(tb testing.TB, person string, listen, dispatch []string) string {
	tb.Helper()
	t, err := moitessierhttp.Sign(secret, moitessierhttp.Claims{Subject: person, Listen: listen, Dispatch: dispatch, ExpiresAt: time.Now().Add(time.Hour).Unix()})
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

// all grants everything.
func all(tb testing.TB, person string) string {
	return token(tb, person, []string{">"}, []string{">"})
}

func (e *env) client(tok string) *moitessierhttp.Client {
	return &moitessierhttp.Client{BaseURL: e.ts.URL, Token: tok}
}

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// do makes a request and returns the status and body.
func do(tb testing.TB, method, url, tok string, body string, hdr ...string) (int, http.Header, []byte) {
	tb.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		tb.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

func errorCode(tb testing.TB, body []byte) string {
	tb.Helper()
	var e moitessierhttp.ErrorBody
	if err := json.Unmarshal(body, &e); err != nil {
		tb.Fatalf("error body %q: %v", body, err)
	}
	return e.Code
}

// nextMessage reads events until a message and decodes it.
func nextMessage(tb testing.TB, st *moitessierhttp.Stream) (moitessierhttp.Event, moitessierhttp.Message) {
	tb.Helper()
	for {
		ev, err := st.Next()
		if err != nil {
			tb.Fatalf("next event: %v", err)
		}
		if ev.Type != "message" {
			if ev.Type == "error" || ev.Type == "close" {
				tb.Fatalf("got %s event %s", ev.Type, ev.Data)
			}
			continue
		}
		var m moitessierhttp.Message
		if err := json.Unmarshal(ev.Data, &m); err != nil {
			tb.Fatal(err)
		}
		return ev, m
	}
}

// readyEvent reads the first event of a stream, which must be "ready".
func readyEvent(tb testing.TB, st *moitessierhttp.Stream) moitessierhttp.ListenerInfo {
	tb.Helper()
	ev, err := st.Next()
	if err != nil {
		tb.Fatal(err)
	}
	if ev.Type != "ready" {
		tb.Fatalf("first event %q %s, want ready", ev.Type, ev.Data)
	}
	var r struct {
		Listener moitessierhttp.ListenerInfo `json:"listener"`
	}
	if err := json.Unmarshal(ev.Data, &r); err != nil {
		tb.Fatal(err)
	}
	return r.Listener
}

// waitFor polls cond until it holds or the test times out.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func dispatch(tb testing.TB, c *moitessierhttp.Client, scope, text string) moitessierhttp.DispatchResult {
	tb.Helper()
	res, err := c.Dispatch(context.Background(), moitessierhttp.DispatchRequest{Scope: scope, Text: text})
	if err != nil {
		tb.Fatalf("dispatch %q to %s: %v", text, scope, err)
	}
	return res
}
