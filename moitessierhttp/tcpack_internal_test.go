//go:build linux

package moitessierhttp

import (
	"net"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(tb testing.TB) (server, client net.Conn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		server.Close()
		client.Close()
	})
	return server, client
}

// TestTCPConn: the kernel's view of a connection, as the SSE evidence
// reads it: bytes written and not yet acknowledged, and whether the peer
// closed cleanly (a FIN, no reset).
func TestTCPConn(t *testing.T) {
	server, client := tcpPair(t)
	tc, ok := newTCPConn(server)
	if !ok {
		t.Fatal("newTCPConn: not a TCP socket?")
	}
	if _, err := server.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1000)
	if _, err := client.Read(b); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the peer to acknowledge every byte", func() bool {
		n, err := tc.unacked()
		return err == nil && n == 0
	})
	if tc.finished() {
		t.Fatal("finished before the peer closed")
	}
	client.Close() // everything read: a FIN
	eventually(t, "finished after a clean close", tc.finished)

	// A peer that closes with bytes unread sends a reset: not finished.
	server, client = tcpPair(t)
	tc, _ = newTCPConn(server)
	if _, err := server.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the peer to acknowledge every byte", func() bool {
		n, err := tc.unacked()
		return err == nil && n == 0
	})
	client.Close()
	if _, err := server.Read(b); err == nil {
		t.Fatal("read after the peer's reset succeeded")
	}
	if tc.finished() {
		t.Fatal("finished after a reset")
	}
	if _, ok := newTCPConn(&net.UnixConn{}); ok {
		t.Fatal("newTCPConn took a Unix socket")
	}
}

func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkTCPUnacked is the cost of one poll of one stream by the SSE
// evidence: one SIOCOUTQ ioctl.
func BenchmarkTCPUnacked(b *testing.B) {
	server, _ := tcpPair(b)
	tc, _ := newTCPConn(server)
	for b.Loop() {
		if _, err := tc.unacked(); err != nil {
			b.Fatal(err)
		}
	}
}
