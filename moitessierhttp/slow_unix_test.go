//go:build unix

package moitessierhttp_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/likestripes/moitessier/moitessierhttp"
)

// TestSlowConsumer checks the slow-consumer rule: a client that stops
// reading never holds back a dispatcher or another client; its connection
// is dropped when its buffers fill, and it resumes from its cursor with
// nothing lost.
func TestSlowConsumer(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{WriteTimeout: time.Second, DispatchRate: -1})
	alice := e.client(all(t, "alice"))
	ctx := ctxT(t)
	const n, size = 300, 60 << 10

	// The slow client: a raw socket with a small receive buffer that reads
	// the response head and then nothing.
	slow := dialSmallBuffer(t, ctx, e.ts.Listener.Addr().String())
	defer slow.Close()
	fmt.Fprintf(slow, "GET /v1/events?scope=slow.room&client=slow HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", all(t, "slowpoke"))
	br := bufio.NewReaderSize(slow, 512)
	status, err := br.ReadString('\n')
	if err != nil || !strings.Contains(status, "200") {
		t.Fatalf("slow client: %q, %v", status, err)
	}

	// The fast client, on the same listener.
	var fast atomic.Int64
	fastDone := make(chan error, 1)
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if _, err := alice.Join(ctx, moitessierhttp.Query{Scopes: []string{"slow.room"}, Client: "fast"}); err != nil {
		t.Fatal(err)
	}
	go func() {
		next := uint64(1)
		fastDone <- alice.Listen(lctx, moitessierhttp.Query{Scopes: []string{"slow.room"}, Client: "fast", Since: "0"}, func(m moitessierhttp.Message) error {
			if m.Seq != next {
				return fmt.Errorf("fast client: seq %d, want %d", m.Seq, next)
			}
			next++
			if fast.Add(1) == n {
				cancel()
			}
			return nil
		})
	}()

	text := strings.Repeat("x", size)
	var slowest time.Duration
	for i := range n {
		start := time.Now()
		if _, err := alice.Dispatch(ctx, moitessierhttp.DispatchRequest{Scope: "slow.room", Text: fmt.Sprintf("%04d%s", i, text[4:])}); err != nil {
			t.Fatal(err)
		}
		slowest = max(slowest, time.Since(start))
	}
	if err := <-fastDone; err != nil {
		t.Fatal(err)
	}
	if got := fast.Load(); got != n {
		t.Fatalf("fast client got %d of %d", got, n)
	}
	// 18 MB is more than the socket buffers hold: the slow stream must
	// have been dropped, not waited for.
	waitFor(t, "the slow stream to be dropped", func() bool { return e.srv.Metrics().Snapshot().SlowDrops == 1 })
	t.Logf("slowest of %d dispatches: %v", n, slowest)
	if slowest > 2*time.Second {
		t.Fatalf("a dispatch took %v: the slow consumer held back the dispatcher", slowest)
	}

	// The slow client comes back from the last event it saw (none) and
	// gets everything.
	st, err := e.client(all(t, "slowpoke")).Events(ctx, moitessierhttp.Query{Scopes: []string{"slow.room"}, Client: "slow"}, "0")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	readyEvent(t, st)
	for i := 1; i <= n; i++ {
		_, m := nextMessage(t, st)
		if m.Seq != uint64(i) || m.Text[:4] != fmt.Sprintf("%04d", i-1) {
			t.Fatalf("resumed slow client: seq %d text %.4s, want %d", m.Seq, m.Text, i)
		}
	}
}

// TestSlowConsumerWebSocket is the same rule over WebSocket.
func TestSlowConsumerWebSocket(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{WriteTimeout: 300 * time.Millisecond, DispatchRate: -1})
	alice := e.client(all(t, "alice"))
	c := dialWS(t, e, all(t, "slowpoke"), "?scope=slow.ws")
	c.expect("listening", "")
	// Stop reading; dispatch more than the buffers hold.
	text := strings.Repeat("y", 60<<10)
	start := time.Now()
	for range 300 {
		dispatch(t, alice, "slow.ws", text)
	}
	if el := time.Since(start); el > 20*time.Second {
		t.Fatalf("300 dispatches took %v", el)
	}
	waitFor(t, "the slow connection to be dropped", func() bool { return e.srv.Metrics().Snapshot().SlowDrops == 1 })
	waitFor(t, "the connection to close", func() bool { return e.srv.Metrics().Snapshot().Open["websocket"] == 0 })
}

func TestSSEShutdown(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{})
	st, err := e.client(all(t, "alice")).Events(ctxT(t), moitessierhttp.Query{Scopes: []string{"shut"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	readyEvent(t, st)
	waitFor(t, "the stream", func() bool { return e.srv.Metrics().Snapshot().Open["sse"] == 1 })
	if err := e.srv.Shutdown(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	ev, err := st.Next()
	if err != nil || ev.Type != "close" || !strings.Contains(string(ev.Data), "shutting_down") {
		t.Fatalf("event %q %s, %v; want close shutting_down", ev.Type, ev.Data, err)
	}
	code, _, body := do(t, "GET", e.ts.URL+"/v1/events?scope=shut", all(t, "alice"), "")
	if code != 503 || errorCode(t, body) != "shutting_down" {
		t.Fatalf("after shutdown: %d %s", code, body)
	}
}

// dialSmallBuffer connects to addr with a 4 KiB receive buffer: a client
// that reads nothing soon stops the server's writes.
func dialSmallBuffer(t *testing.T, ctx context.Context, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		if err != nil {
			return err
		}
		return serr
	}}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}
