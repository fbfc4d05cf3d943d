package moitessierhttp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/memstore"
	"github.com/likestripes/moitessier/moitessierhttp"
)

type wsClient struct {
	tb   testing.TB
	conn *websocket.Conn
}

func dialWS(tb testing.TB, e *env, tok, query string) *wsClient {
	tb.Helper()
	u := "ws" + strings.TrimPrefix(e.ts.URL, "http") + "/v1/ws" + query
	conn, resp, err := websocket.Dial(ctxT(tb), u, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}})
	if err != nil {
		if resp != nil {
			tb.Fatalf("dial: %v (status %d)", err, resp.StatusCode)
		}
		tb.Fatalf("dial: %v", err)
	}
	conn.SetReadLimit(1 << 20)
	tb.Cleanup(func() { _ = conn.CloseNow() })
	return &wsClient{tb: tb, conn: conn}
}

func (c *wsClient) send(req moitessierhttp.WSRequest) {
	c.tb.Helper()
	b, _ := json.Marshal(req)
	if err := c.conn.Write(ctxT(c.tb), websocket.MessageText, b); err != nil {
		c.tb.Fatal(err)
	}
}

func (c *wsClient) read() moitessierhttp.WSFrame {
	c.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, b, err := c.conn.Read(ctx)
	if err != nil {
		c.tb.Fatalf("read frame: %v", err)
	}
	var f moitessierhttp.WSFrame
	if err := json.Unmarshal(b, &f); err != nil {
		c.tb.Fatalf("frame %s: %v", b, err)
	}
	return f
}

// expect reads frames until one of the type and ref.
func (c *wsClient) expect(typ, ref string) moitessierhttp.WSFrame {
	c.tb.Helper()
	for {
		f := c.read()
		if f.Type == typ && f.Ref == ref {
			return f
		}
		if f.Type == "error" && typ != "error" {
			c.tb.Fatalf("want %s %q, got error %+v", typ, ref, f.Error)
		}
	}
}

func TestWebSocket(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{MaxListenersPerConn: 2, Heartbeat: 20 * time.Millisecond})

	t.Run("ListenAndDispatch", func(t *testing.T) {
		c := dialWS(t, e, all(t, "alice"), "")
		c.send(moitessierhttp.WSRequest{Op: "listen", Ref: "chat", Scopes: []string{"ws.room"}})
		f := c.expect("listening", "chat")
		if f.Listener == nil || f.Listener.Type != "shared" {
			t.Fatalf("listening frame %+v", f)
		}
		c.send(moitessierhttp.WSRequest{Op: "dispatch", Ref: "d1", DispatchRequest: moitessierhttp.DispatchRequest{Scope: "ws.room", Text: "hello"}})
		var got []moitessierhttp.Message
		var res *moitessierhttp.DispatchResult
		for res == nil || len(got) == 0 {
			f := c.read()
			switch f.Type {
			case "dispatched":
				res = f.Result
			case "messages":
				got = append(got, f.Messages...)
			default:
				t.Fatalf("frame %+v", f)
			}
		}
		if res.Stored != 1 || got[0].Text != "hello" || got[0].Seq != 1 {
			t.Fatalf("result %+v, messages %+v", res, got)
		}
		// Pings every 20 ms are answered by the client's reader; the
		// connection stays up well past several of them.
		time.Sleep(100 * time.Millisecond)
		dispatch(t, e.client(all(t, "bob")), "ws.room", "again")
		if f := c.expect("messages", "chat"); f.Messages[0].Text != "again" {
			t.Fatalf("after pings: %+v", f)
		}
		c.send(moitessierhttp.WSRequest{Op: "unlisten", Ref: "chat"})
		c.expect("unlistened", "chat")
		if err := c.conn.Close(websocket.StatusNormalClosure, ""); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("Resume", func(t *testing.T) {
		alice := e.client(all(t, "alice"))
		c := dialWS(t, e, all(t, "alice"), "?scope=ws.resume&since=0")
		c.expect("listening", "")
		dispatch(t, alice, "ws.resume", "m1")
		if f := c.expect("messages", ""); f.Messages[0].Seq != 1 {
			t.Fatalf("%+v", f)
		}
		_ = c.conn.CloseNow()
		dispatch(t, alice, "ws.resume", "m2")
		c = dialWS(t, e, all(t, "alice"), "")
		c.send(moitessierhttp.WSRequest{Op: "listen", Ref: "r", Scopes: []string{"ws.resume"}, Since: "1"})
		c.expect("listening", "r")
		if f := c.expect("messages", "r"); f.Messages[0].Text != "m2" {
			t.Fatalf("resumed with %+v", f.Messages)
		}
	})

	t.Run("TooManyListeners", func(t *testing.T) {
		c := dialWS(t, e, all(t, "alice"), "")
		for i := range 2 {
			c.send(moitessierhttp.WSRequest{Op: "listen", Ref: fmt.Sprint(i), Scopes: []string{fmt.Sprint("ws.many.", i)}})
			c.expect("listening", fmt.Sprint(i))
		}
		c.send(moitessierhttp.WSRequest{Op: "listen", Ref: "2", Scopes: []string{"ws.many.2"}})
		f := c.expect("error", "2")
		if f.Error.Status != http.StatusTooManyRequests || f.Error.Code != "too_many_listeners" {
			t.Fatalf("error %+v", f.Error)
		}
	})

	t.Run("Forbidden", func(t *testing.T) {
		c := dialWS(t, e, token(t, "alice", []string{"ws.ok.>"}, []string{"ws.ok.>"}), "")
		c.send(moitessierhttp.WSRequest{Op: "listen", Ref: "x", Scopes: []string{"ws.other"}})
		if f := c.expect("error", "x"); f.Error.Status != http.StatusForbidden {
			t.Fatalf("listen out of scope: %+v", f.Error)
		}
		c.send(moitessierhttp.WSRequest{Op: "dispatch", Ref: "d", DispatchRequest: moitessierhttp.DispatchRequest{Scope: "ws.other", Text: "x"}})
		if f := c.expect("error", "d"); f.Error.Status != http.StatusForbidden {
			t.Fatalf("dispatch out of scope: %+v", f.Error)
		}
	})

	t.Run("Unauthenticated", func(t *testing.T) {
		u := "ws" + strings.TrimPrefix(e.ts.URL, "http") + "/v1/ws"
		_, resp, err := websocket.Dial(ctxT(t), u, nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("dial without token: %v, %v", err, resp)
		}
	})

	t.Run("BadFrame", func(t *testing.T) {
		c := dialWS(t, e, all(t, "alice"), "")
		_ = c.conn.Write(ctxT(t), websocket.MessageText, []byte("{nope"))
		if f := c.expect("error", ""); f.Error.Code != "bad_request" {
			t.Fatalf("%+v", f.Error)
		}
	})
}

func TestWebSocketShutdown(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{})
	c := dialWS(t, e, all(t, "alice"), "?scope=ws.shut")
	c.expect("listening", "")
	done := make(chan error, 1)
	go func() {
		_, _, err := c.conn.Read(context.Background())
		done <- err
	}()
	if err := e.srv.Shutdown(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	err := <-done
	if got, want := websocket.CloseStatus(err), websocket.StatusGoingAway; got != want {
		t.Fatalf("close status %v (%v), want %v", got, err, want)
	}
}

func TestWebSocketTokenExpiry(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{})
	tok, err := moitessierhttp.Sign(secret, moitessierhttp.Claims{Subject: "alice", Listen: []string{">"}, ExpiresAt: time.Now().Add(1500 * time.Millisecond).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	c := dialWS(t, e, tok, "?scope=ws.exp")
	c.expect("listening", "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _, err = c.conn.Read(ctx)
	if got, want := websocket.CloseStatus(err), moitessierhttp.StatusTokenExpired; got != want {
		t.Fatalf("close status %v (%v), want %v", got, err, want)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatal("connection not closed at token expiry")
	}
}

// TestWebSocketIdleGoroutines: an idle connection with one listen holds
// one goroutine of the hub, its listen: the Server's close watcher says
// when the client sends something (on Linux; elsewhere a reader waits), pings and
// the close run on timers, and net/http's goroutine is gone once the
// connection is upgraded.
func TestWebSocketIdleGoroutines(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{Heartbeat: 50 * time.Millisecond, WriteTimeout: 100 * time.Millisecond})
	const n = 8
	for i := range n {
		c := dialWS(t, e, all(t, "alice"), fmt.Sprintf("?scope=ws.idle.%d", i))
		c.expect("listening", "")
		// The client reads, as a client does, so that pings are answered.
		go func() {
			for {
				if _, _, err := c.conn.Read(context.Background()); err != nil {
					return
				}
			}
		}()
	}
	waitFor(t, "the connections", func() bool { return e.srv.Metrics().Snapshot().Open["websocket"] == n })
	// Past a few pings, so that a ping in flight settles.
	time.Sleep(200 * time.Millisecond)
	var got int
	// And the Server's close watcher, on Linux; elsewhere a reader each.
	most := n + 1
	if runtime.GOOS != "linux" {
		most = 2 * n
	}
	waitFor(t, "the hub goroutines of idle connections", func() bool {
		got = hubGoroutines()
		return got <= most
	})
	if got < n {
		t.Fatalf("%d hub goroutines for %d connections: fewer than their listens", got, n)
	}
}

// hubGoroutines counts the goroutines running the hub's code, not a test's.
func hubGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		k := runtime.Stack(buf, true)
		if k < len(buf) {
			buf = buf[:k]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "moitessierhttp.") && !strings.Contains(g, "moitessierhttp_test.") && !strings.Contains(g, "testing.tRunner") {
			n++
		}
	}
	return n
}

// TestWebSocketBatch: the messages that come while a listen waits after a
// write (Config.SSEBatchInterval) go out together in one messages frame,
// in order; frames of every length encoding (7-, 16- and 64-bit) arrive
// whole.
func TestWebSocketBatch(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{SSEBatchInterval: 2 * time.Second})
	alice := e.client(all(t, "alice"))
	c := dialWS(t, e, all(t, "bob"), "?scope=ws.batch")
	c.expect("listening", "")
	dispatch(t, alice, "ws.batch", "first")
	if f := c.expect("messages", ""); len(f.Messages) != 1 || f.Messages[0].Text != "first" {
		t.Fatalf("first frame %+v", f.Messages)
	}
	// The listen now waits 2 s before its next write.
	// "<" is 6 bytes in JSON (\u003c): the third makes a frame of more
	// than 64 KiB.
	texts := []string{"a", strings.Repeat("b", 300), strings.Repeat("<", 20<<10), "d"}
	for _, text := range texts {
		dispatch(t, alice, "ws.batch", text)
	}
	var got []moitessierhttp.Message
	frames := 0
	for len(got) < len(texts) {
		f := c.expect("messages", "")
		frames++
		got = append(got, f.Messages...)
	}
	for i, m := range got {
		if m.Text != texts[i] || m.Seq != uint64(i+2) {
			t.Fatalf("message %d: seq %d, text %.10q (%d bytes); want seq %d, %.10q", i, m.Seq, m.Text, len(m.Text), i+2, texts[i])
		}
	}
	// At most chunkBytes (32 KiB) or so of messages go in one frame: the
	// large one ends a frame of its own.
	if frames > 2 {
		t.Fatalf("%d messages that came during the wait took %d frames", len(texts), frames)
	}
}

// TestWebSocketFrames: the hub reads what RFC 6455 lets a client send: a
// message in fragments, with a ping between them, answered; a close,
// answered with a close; a message over the read limit closes with 1009.
func TestWebSocketFrames(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{MaxMessageBytes: 1 << 10})
	c := dialWS(t, e, all(t, "alice"), "")
	frames := make(chan moitessierhttp.WSFrame, 4)
	readErr := make(chan error, 1)
	go func() {
		for {
			_, b, err := c.conn.Read(context.Background())
			if err != nil {
				readErr <- err
				return
			}
			var f moitessierhttp.WSFrame
			_ = json.Unmarshal(b, &f)
			frames <- f
		}
	}()
	req, _ := json.Marshal(moitessierhttp.WSRequest{Op: "listen", Ref: "frag", Scopes: []string{"ws.frag"}})
	w, err := c.conn.Writer(ctxT(t), websocket.MessageText)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(req[:5]); err != nil {
		t.Fatal(err)
	}
	if err := c.conn.Ping(ctxT(t)); err != nil {
		t.Fatalf("ping within a fragmented message: %v", err)
	}
	if _, err := w.Write(req[5:]); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case f := <-frames:
		if f.Type != "listening" || f.Ref != "frag" {
			t.Fatalf("after a fragmented listen: %+v", f)
		}
	case err := <-readErr:
		t.Fatal(err)
	}
	if err := c.conn.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Fatalf("close handshake: %v", err)
	}
	waitFor(t, "the connection to end", func() bool { return e.srv.Metrics().Snapshot().Open["websocket"] == 0 })

	big := dialWS(t, e, all(t, "alice"), "")
	_ = big.conn.Write(ctxT(t), websocket.MessageText, bytes.Repeat([]byte(" "), 6<<10+64<<10+1))
	_, _, err = big.conn.Read(ctxT(t))
	if got := websocket.CloseStatus(err); got != websocket.StatusMessageTooBig {
		t.Fatalf("message over the limit: close status %v (%v)", got, err)
	}
}

// TestWebSocketUnansweredPing: a client that does not answer a ping within
// WriteTimeout is gone: its connection ends. (The client library answers
// pings only while it reads, and this client never reads.)
func TestWebSocketUnansweredPing(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{Heartbeat: 20 * time.Millisecond, WriteTimeout: 200 * time.Millisecond})
	dialWS(t, e, all(t, "alice"), "?scope=ws.deaf")
	waitFor(t, "the connection", func() bool { return e.srv.Metrics().Snapshot().Open["websocket"] == 1 })
	waitFor(t, "the deaf connection to end", func() bool { return e.srv.Metrics().Snapshot().Open["websocket"] == 0 })
}

// TestWebSocketInvalidUTF8: a text message that is not UTF-8 fails the
// connection with 1007 (RFC 6455, 8.1).
func TestWebSocketInvalidUTF8(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{})
	c := dialWS(t, e, all(t, "alice"), "")
	if err := c.conn.Write(ctxT(t), websocket.MessageText, []byte("{\"op\":\"ack\",\"ref\":\"\xff\"}")); err != nil {
		t.Fatal(err)
	}
	_, b, err := c.conn.Read(ctxT(t))
	if got := websocket.CloseStatus(err); got != websocket.StatusInvalidFramePayloadData {
		t.Fatalf("a text message not UTF-8: close status %v (%v, %s)", got, err, b)
	}
}

// joinBlocker is a memory store whose Join waits for its context to end,
// and says when a join has begun and when its context ended.
type joinBlocker struct {
	moitessier.Store
	began, ended chan struct{}
}

func (s *joinBlocker) Join(ctx context.Context, l moitessier.ListenerInfo, sub moitessier.Subscriber, q moitessier.Quota) (moitessier.ListenerInfo, moitessier.Subscriber, bool, error) {
	s.began <- struct{}{}
	<-ctx.Done()
	close(s.ended)
	return moitessier.ListenerInfo{}, moitessier.Subscriber{}, false, ctx.Err()
}

// TestWebSocketEndEndsJoin: a connection that ends while a listen is being
// set up ends the store call under way, as it ends its listens. Requests
// are served one at a time with the reads, so the reading does not see the
// client leave while the store call lasts: the connection ends here when
// the pong to its heartbeat is late.
func TestWebSocketEndEndsJoin(t *testing.T) {
	st := &joinBlocker{Store: memstore.New(), began: make(chan struct{}, 1), ended: make(chan struct{})}
	e := newEnvOn(t, st, moitessier.Options{}, moitessierhttp.Config{Heartbeat: 50 * time.Millisecond, WriteTimeout: 100 * time.Millisecond})
	c := dialWS(t, e, token(t, "ann", []string{"ws.>"}, nil), "")
	c.send(moitessierhttp.WSRequest{Op: "listen", Ref: "r", Scopes: []string{"ws.blocked"}})
	select {
	case <-st.began:
	case <-time.After(10 * time.Second):
		t.Fatal("the listen did not reach the store's Join")
	}
	_ = c.conn.CloseNow()
	select {
	case <-st.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the Join's context did not end with the connection")
	}
}

// TestWebSocketRefBytes: a ref is at most MaxRefBytes, as long as a name;
// a longer one, which a listen would keep and repeat in every frame, gets
// a bad_request error frame without it, for every op, and the connection
// goes on.
func TestWebSocketRefBytes(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{})
	c := dialWS(t, e, all(t, "alice"), "")
	long := strings.Repeat("r", moitessierhttp.MaxRefBytes+1)
	for _, req := range []moitessierhttp.WSRequest{
		{Op: "listen", Ref: long, Scopes: []string{"ref.room"}},
		{Op: "dispatch", Ref: long, DispatchRequest: moitessierhttp.DispatchRequest{Scope: "ref.room", Text: "x"}},
		{Op: "ack", Ref: long, Seq: 1},
		{Op: "unlisten", Ref: long},
	} {
		c.send(req)
		f := c.read()
		if f.Type != "error" || f.Ref != "" || f.Error == nil || f.Error.Code != "bad_request" || f.Error.Status != http.StatusBadRequest {
			t.Fatalf("%s with a ref of %d bytes: frame %+v, want a bad_request error without the ref", req.Op, len(long), f)
		}
	}
	// The longest ref allowed listens, and comes back in its frames.
	ref := long[1:]
	c.send(moitessierhttp.WSRequest{Op: "listen", Ref: ref, Scopes: []string{"ref.room"}})
	c.expect("listening", ref)
	dispatch(t, e.client(all(t, "alice")), "ref.room", "hi")
	if f := c.expect("messages", ref); f.Messages[0].Text != "hi" {
		t.Fatalf("messages %+v", f.Messages)
	}
}
