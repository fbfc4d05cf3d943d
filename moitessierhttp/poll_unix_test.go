//go:build unix

package moitessierhttp_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/likestripes/moitessier/moitessierhttp"
)

// stuckPoll asks for a long-poll answer of more than the socket buffers
// hold (MaxPollBytes raised for it) on a socket with a small receive
// buffer, and never reads it. It returns once the poll has begun.
func stuckPoll(t *testing.T, e *env) net.Conn {
	t.Helper()
	ctx := ctxT(t)
	tok := all(t, "alice")
	if _, err := e.client(tok).Join(ctx, moitessierhttp.Query{Scopes: []string{"stuck"}, Client: "p"}); err != nil {
		t.Fatal(err)
	}
	// 64 messages of 64 KiB of '<': 24 MiB of JSON.
	text := strings.Repeat("<", 64<<10)
	for range 64 {
		if _, err := e.hub.Dispatch(ctx, "alice", "stuck", text); err != nil {
			t.Fatal(err)
		}
	}
	conn := dialSmallBuffer(t, ctx, e.ts.Listener.Addr().String())
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "GET /v1/poll?scope=stuck&client=p&since=0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", tok)
	waitFor(t, "the poll", func() bool { return e.srv.Metrics().Snapshot().Open["poll"] == 1 })
	return conn
}

// TestPollAnswerWriteDeadline: a client that asks for a long-poll answer
// and never reads it holds the answer and the handler for
// Config.ResponseTimeout at most, not for as long as its connection lasts.
func TestPollAnswerWriteDeadline(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{MaxPollBytes: 64 << 20, ResponseTimeout: 300 * time.Millisecond})
	stuckPoll(t, e)
	start := time.Now()
	deadline := start.Add(10 * time.Second)
	for e.srv.Metrics().Snapshot().Open["poll"] != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the answer to a client that does not read is still being written after %v", time.Since(start))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPollAnswerShutdown: a long-poll answer being written to a client
// that does not read does not hold up the Server's Shutdown.
func TestPollAnswerShutdown(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{MaxPollBytes: 64 << 20})
	stuckPoll(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown with a client that does not read its poll answer: %v after %v", err, time.Since(start))
	}
}
