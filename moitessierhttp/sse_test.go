package moitessierhttp_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/likestripes/moitessier/moitessierhttp"
)

func TestSSE(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{})
	alice := e.client(all(t, "alice"))
	ctx := ctxT(t)

	t.Run("OK", func(t *testing.T) {
		st, err := alice.Events(ctx, moitessierhttp.Query{Scopes: []string{"room.ok"}}, "")
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		info := readyEvent(t, st)
		if got, want := info.Type, "shared"; got != want {
			t.Fatalf("type=%q, want %q", got, want)
		}
		for i := 1; i <= 3; i++ {
			dispatch(t, alice, "room.ok", fmt.Sprint("m", i))
		}
		for i := 1; i <= 3; i++ {
			ev, m := nextMessage(t, st)
			if got, want := ev.ID, strconv.Itoa(i); got != want {
				t.Fatalf("id=%q, want %q", got, want)
			}
			if got, want := m.Text, fmt.Sprint("m", i); got != want {
				t.Fatalf("text=%q, want %q", got, want)
			}
			if m.Seq != uint64(i) || m.Listener != info.ID || m.Sender != "alice" || m.Scope != "room.ok" {
				t.Fatalf("message %+v", m)
			}
		}
	})

	t.Run("Headers", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(ctx, "GET", e.ts.URL+"/v1/events?scope=room.h&access_token="+all(t, "alice"), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if got, want := resp.Header.Get("Content-Type"), "text/event-stream"; got != want {
			t.Fatalf("content-type=%q, want %q", got, want)
		}
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		if err != nil || line != "retry: 2000\n" {
			t.Fatalf("first line %q, %v", line, err)
		}
	})

	t.Run("Heartbeat", func(t *testing.T) {
		e := newEnv(t, moitessierhttp.Config{Heartbeat: 50 * time.Millisecond})
		req, _ := http.NewRequestWithContext(ctx, "GET", e.ts.URL+"/v1/events?scope=room.hb", nil)
		req.Header.Set("Authorization", "Bearer "+all(t, "alice"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		for n := 0; n < 2; {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if line == ": ping\n" {
				n++
			}
		}
	})

	t.Run("BadCursor", func(t *testing.T) {
		code, _, body := do(t, "GET", e.ts.URL+"/v1/events?scope=room.bad", all(t, "alice"), "", "Last-Event-ID", "x12")
		if code != http.StatusBadRequest || errorCode(t, body) != "bad_request" {
			t.Fatalf("status %d %s", code, body)
		}
	})

	t.Run("NoScope", func(t *testing.T) {
		code, _, body := do(t, "GET", e.ts.URL+"/v1/events", all(t, "alice"), "")
		if code != http.StatusBadRequest || errorCode(t, body) != "invalid_scope" {
			t.Fatalf("status %d %s", code, body)
		}
	})

	t.Run("UnknownType", func(t *testing.T) {
		code, _, body := do(t, "GET", e.ts.URL+"/v1/events?scope=a&type=weird", all(t, "alice"), "")
		if code != http.StatusBadRequest || errorCode(t, body) != "unknown_type" {
			t.Fatalf("status %d %s", code, body)
		}
	})

	t.Run("ListenerGone", func(t *testing.T) {
		bob := e.client(all(t, "bob"))
		st, err := bob.Events(ctx, moitessierhttp.Query{Scopes: []string{"room.gone"}, Client: "c1"}, "")
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		info := readyEvent(t, st)
		// Once a message came through, the stream is listening.
		dispatch(t, bob, "room.gone", "hello")
		nextMessage(t, st)
		// The only subscriber leaves: the listener is deleted under the stream.
		code, _, body := do(t, "DELETE", e.ts.URL+"/v1/listeners/"+info.ID+"?client=c1", all(t, "bob"), "")
		if code != http.StatusNoContent {
			t.Fatalf("leave: %d %s", code, body)
		}
		ev, err := st.Next()
		if err != nil || ev.Type != "error" || !strings.Contains(string(ev.Data), `"gone"`) {
			t.Fatalf("event %q %s, %v; want an error event with code gone", ev.Type, ev.Data, err)
		}
	})
}

// TestSSEResume drops connections and checks that nothing is missed.
func TestSSEResume(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{})
	alice := e.client(all(t, "alice"))
	ctx := ctxT(t)
	openSSE := func() int64 { return e.srv.Metrics().Snapshot().Open["sse"] }

	t.Run("LastEventID", func(t *testing.T) {
		q := moitessierhttp.Query{Scopes: []string{"room.lei"}}
		st, err := alice.Events(ctx, q, "")
		if err != nil {
			t.Fatal(err)
		}
		readyEvent(t, st)
		for i := 1; i <= 5; i++ {
			dispatch(t, alice, "room.lei", fmt.Sprint("m", i))
		}
		var last string
		for i := 1; i <= 2; i++ {
			ev, _ := nextMessage(t, st)
			last = ev.ID
		}
		st.Close() // drop the connection having seen 2 of 5
		for i := 6; i <= 7; i++ {
			dispatch(t, alice, "room.lei", fmt.Sprint("m", i))
		}
		st, err = alice.Events(ctx, q, last)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		readyEvent(t, st)
		for i := 3; i <= 7; i++ {
			ev, m := nextMessage(t, st)
			if got, want := m.Text, fmt.Sprint("m", i); got != want {
				t.Fatalf("after reconnect: text=%q (id %s), want %q", got, ev.ID, want)
			}
		}
	})

	t.Run("ServerCursor", func(t *testing.T) {
		// No Last-Event-ID: a new tab or device of the same person resumes
		// from the server-held cursor.
		q := moitessierhttp.Query{Scopes: []string{"room.sc"}, Client: "laptop"}
		st, err := alice.Events(ctx, q, "")
		if err != nil {
			t.Fatal(err)
		}
		readyEvent(t, st)
		for i := 1; i <= 3; i++ {
			dispatch(t, alice, "room.sc", fmt.Sprint("m", i))
		}
		for i := 1; i <= 3; i++ {
			nextMessage(t, st)
		}
		st.Close()
		waitFor(t, "the stream to end on the server", func() bool { return openSSE() == 0 })
		for i := 4; i <= 5; i++ {
			dispatch(t, alice, "room.sc", fmt.Sprint("m", i))
		}
		st, err = alice.Events(ctx, q, "")
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		readyEvent(t, st)
		for i := 4; i <= 5; i++ {
			_, m := nextMessage(t, st)
			if got, want := m.Text, fmt.Sprint("m", i); got != want {
				t.Fatalf("resume from server cursor: text=%q, want %q", got, want)
			}
		}
	})

	t.Run("SinceParam", func(t *testing.T) {
		q := moitessierhttp.Query{Scopes: []string{"room.since"}, Client: "x"}
		if _, err := alice.Join(ctx, q); err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 3; i++ {
			dispatch(t, alice, "room.since", fmt.Sprint("m", i))
		}
		q.Since = "1"
		st, err := alice.Events(ctx, q, "")
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		readyEvent(t, st)
		if _, m := nextMessage(t, st); m.Seq != 2 {
			t.Fatalf("since=1: first seq %d, want 2", m.Seq)
		}
	})

	t.Run("ClientListen", func(t *testing.T) {
		// Client.Listen reconnects by itself after the connection drops.
		var got []string
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		done := make(chan error, 1)
		reconnected := make(chan struct{}, 10)
		conns := make(chan net.Conn, 10)
		c := e.client(all(t, "carol"))
		c.HTTPClient = &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				conns <- conn
			}
			return conn, err
		}}}
		c.OnReconnect = func(error, time.Duration) { reconnected <- struct{}{} }
		q := moitessierhttp.Query{Scopes: []string{"room.cl"}, Since: "0"}
		if _, err := c.Join(ctx, q); err != nil {
			t.Fatal(err)
		}
		ready := make(chan struct{})
		go func() {
			done <- c.Listen(ctx, q, func(m moitessierhttp.Message) error {
				got = append(got, m.Text)
				if m.Text == "m1" {
					close(ready)
				}
				if len(got) == 4 {
					cancel()
				}
				return nil
			})
		}()
		dispatch(t, alice, "room.cl", "m1")
		<-ready
		// Drop the stream's connection at the TCP level (Join used the
		// same one and left it to the stream).
		(<-conns).Close()
		<-reconnected
		for i := 2; i <= 4; i++ {
			dispatch(t, alice, "room.cl", fmt.Sprint("m", i))
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if got, want := strings.Join(got, ","), "m1,m2,m3,m4"; got != want {
			t.Fatalf("got %s, want %s", got, want)
		}
	})

	t.Run("Reset", func(t *testing.T) {
		// A Last-Event-ID past the head (the listener was deleted and made
		// anew) resumes from the server-held cursor, saying so.
		req, _ := http.NewRequestWithContext(ctx, "GET", e.ts.URL+"/v1/events?scope=room.reset", nil)
		req.Header.Set("Authorization", "Bearer "+all(t, "alice"))
		req.Header.Set("Last-Event-ID", "99")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		var b strings.Builder
		for !strings.Contains(b.String(), "\n\n") {
			line, err := br.ReadString('\n')
			if err != nil && err != io.EOF {
				t.Fatal(err)
			}
			b.WriteString(line)
		}
		if !strings.Contains(b.String(), `"reset":true`) {
			t.Fatalf("ready event %q, want reset true", b.String())
		}
	})
}

// TestSSEHTTP2 runs a stream over HTTP/2, where the connection cannot be
// taken from net/http: the stream stays on the request's goroutine.
func TestSSEHTTP2(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{})
	ts := httptest.NewUnstartedServer(e.srv)
	ts.EnableHTTP2 = true
	ts.StartTLS()
	defer ts.Close()
	ctx := ctxT(t)
	c := &moitessierhttp.Client{BaseURL: ts.URL, Token: all(t, "alice"), HTTPClient: ts.Client()}
	st, err := c.Events(ctx, moitessierhttp.Query{Scopes: []string{"h2.room"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	readyEvent(t, st)
	for i := 1; i <= 2; i++ {
		dispatch(t, c, "h2.room", fmt.Sprint("m", i))
	}
	_, m := nextMessage(t, st)
	st.Close()
	if m.Text != "m1" {
		t.Fatalf("%+v", m)
	}
	st, err = c.Events(ctx, moitessierhttp.Query{Scopes: []string{"h2.room"}}, "1")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	readyEvent(t, st)
	if _, m := nextMessage(t, st); m.Text != "m2" {
		t.Fatalf("resumed with %+v", m)
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/v1/whoami", nil)
	req.Header.Set("Authorization", "Bearer "+all(t, "alice"))
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("protocol %s, want HTTP/2", resp.Proto)
	}
}

// TestSSEBatchInterval: a stream that waits between writes still delivers
// every message once, in order, and its server-held cursor moves.
func TestSSEBatchInterval(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{SSEBatchInterval: 30 * time.Millisecond})
	alice := e.client(all(t, "alice"))
	ctx := ctxT(t)
	q := moitessierhttp.Query{Scopes: []string{"room.batch"}, Client: "tab"}
	st, err := alice.Events(ctx, q, "")
	if err != nil {
		t.Fatal(err)
	}
	readyEvent(t, st)
	const n = 20
	for i := 1; i <= n; i++ {
		dispatch(t, alice, "room.batch", fmt.Sprint("m", i))
	}
	for i := 1; i <= n; i++ {
		ev, m := nextMessage(t, st)
		if got, want := ev.ID, strconv.Itoa(i); got != want || m.Text != fmt.Sprint("m", i) {
			t.Fatalf("event %s %q, want id %s text m%d", ev.ID, m.Text, want, i)
		}
	}
	st.Close()
	waitFor(t, "the stream to end on the server", func() bool { return e.srv.Metrics().Snapshot().Open["sse"] == 0 })
	dispatch(t, alice, "room.batch", "after")
	st, err = alice.Events(ctx, q, "")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	readyEvent(t, st)
	if _, m := nextMessage(t, st); m.Text != "after" {
		t.Fatalf("resume from the server-held cursor: %q, want %q", m.Text, "after")
	}
}

// TestSSELeaveDuringBatchWait: a client that leaves while its stream waits
// between writes (Config.SSEBatchInterval) is not written, and not
// acknowledged, what came during the wait: it resumes from the server-held
// cursor with every message it did not read.
func TestSSELeaveDuringBatchWait(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{SSEBatchInterval: 300 * time.Millisecond})
	alice := e.client(all(t, "alice"))
	ctx := ctxT(t)
	for round := range 4 {
		q := moitessierhttp.Query{Scopes: []string{"room.wait"}, Client: fmt.Sprint("tab", round)}
		st, err := alice.Events(ctx, q, "head")
		if err != nil {
			t.Fatal(err)
		}
		readyEvent(t, st)
		dispatch(t, alice, "room.wait", "first")
		if _, m := nextMessage(t, st); m.Text != "first" {
			t.Fatalf("got %q", m.Text)
		}
		// The stream now waits 300 ms before its next write.
		for i := range 5 {
			dispatch(t, alice, "room.wait", fmt.Sprint("during ", i))
		}
		st.Close()
		waitFor(t, "the stream to end on the server", func() bool { return e.srv.Metrics().Snapshot().Open["sse"] == 0 })
		dispatch(t, alice, "room.wait", "after")
		st, err = alice.Events(ctx, q, "")
		if err != nil {
			t.Fatal(err)
		}
		readyEvent(t, st)
		if _, m := nextMessage(t, st); m.Text != "during 0" {
			t.Fatalf("round %d: resumed at %q, want %q: messages written during the wait to a client that had left were acknowledged", round, m.Text, "during 0")
		}
		st.Close()
		waitFor(t, "the stream to end on the server", func() bool { return e.srv.Metrics().Snapshot().Open["sse"] == 0 })
	}
}
