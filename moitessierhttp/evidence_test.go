package moitessierhttp_test

import (
	"bufio"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/moitessierhttp"
)

// TestSSEEvidence: an SSE stream acknowledges on the evidence of the
// client's TCP stack only where that stack is the client's (HTTP/1.1 on a
// socket of its own, no proxy), and on the proof of the client's next
// request everywhere.
func TestSSEEvidence(t *testing.T) {
	const every = 10 * time.Millisecond
	ctx := ctxT(t)
	// read opens a stream for alice's client and reads n messages; close
	// ends the stream.
	read := func(t *testing.T, e *env, c *http.Client, base, client string, n int, hdr http.Header) (l *moitessier.Listener, close func()) {
		t.Helper()
		l, err := e.hub.NewListener(ctx, moitessier.Conditions{Person: "alice", Client: client, Type: moitessier.Shared, Scope: "ev.room"})
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/v1/events?scope=ev.room&client="+client, nil)
		if hdr != nil {
			req.Header = hdr.Clone()
		}
		req.Header.Set("Authorization", "Bearer "+all(t, "alice"))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(resp.Body)
		for i := 1; i <= n; i++ {
			dispatch(t, e.client(all(t, "bob")), "ev.room", fmt.Sprint("m", i))
		}
		for got := 0; got < n; {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(line, "id: ") {
				got++
			}
		}
		return l, func() {
			resp.Body.Close()
			waitFor(t, "the stream to end on the server", func() bool { return e.srv.Metrics().Snapshot().Open["sse"] == 0 })
		}
	}

	t.Run("Direct", func(t *testing.T) {
		e := newEnv(t, moitessierhttp.Config{TCPAckInterval: every})
		l, done := read(t, e, http.DefaultClient, e.ts.URL, "d", 3, nil)
		defer done()
		// With the connection open: the client's TCP stack acknowledged them.
		waitFor(t, "the server-held cursor to reach 3", func() bool {
			c, err := l.Cursor(ctx)
			return err == nil && c == 3
		})
	})

	for _, tc := range []struct {
		name string
		cfg  moitessierhttp.Config
		hdr  http.Header
	}{
		{"ForwardedFor", moitessierhttp.Config{}, http.Header{"X-Forwarded-For": {"203.0.113.7"}}},
		{"Via", moitessierhttp.Config{}, http.Header{"Via": {"1.1 proxy"}}},
		{"NoTCPAcks", moitessierhttp.Config{NoTCPAcks: true}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.TCPAckInterval = every
			e := newEnv(t, tc.cfg)
			l, done := read(t, e, http.DefaultClient, e.ts.URL, "p", 3, tc.hdr)
			time.Sleep(20 * every) // many intervals, the connection open
			c, err := l.Cursor(ctx)
			done()
			if err != nil || c != 0 {
				t.Fatalf("cursor %d, want 0: no evidence but the client's next request", c)
			}
			if c, err := l.Cursor(ctx); err != nil || c != 0 {
				t.Fatalf("cursor after the stream ended: %d, %v; want 0", c, err)
			}
		})
	}

	t.Run("HTTP2", func(t *testing.T) {
		e := newEnv(t, moitessierhttp.Config{TCPAckInterval: every})
		ts := httptest.NewUnstartedServer(e.srv)
		ts.EnableHTTP2 = true
		ts.StartTLS()
		defer ts.Close()
		l, done := read(t, e, ts.Client(), ts.URL, "h2", 3, nil)
		time.Sleep(20 * every)
		c, err := l.Cursor(ctx)
		done()
		if err != nil || c != 0 {
			t.Fatalf("cursor %d over HTTP/2, want 0", c)
		}
		// The next request proves what the client has.
		cl := &moitessierhttp.Client{BaseURL: ts.URL, Token: all(t, "alice"), HTTPClient: ts.Client()}
		st, err := cl.Events(ctx, moitessierhttp.Query{Scopes: []string{"ev.room"}, Client: "h2"}, "2")
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		readyEvent(t, st)
		if c, err := l.Cursor(ctx); err != nil || c != 2 {
			t.Fatalf("cursor after a reconnect with Last-Event-ID 2: %d, %v; want 2", c, err)
		}
	})
}
