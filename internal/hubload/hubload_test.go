package hubload_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/internal/hubload"
	"github.com/likestripes/moitessier/memstore"
	"github.com/likestripes/moitessier/moitessierhttp"
)

var secret = []byte("hubload-test-secret-of-enough-length")

// TestClient runs clients of both transports against a hub over real
// sockets, with a heartbeat short enough that a WebSocket client which did
// not answer the hub's pings would be dropped, and checks that every
// message arrives once, in order, with its latency.
func TestClient(t *testing.T) {
	hub, err := moitessier.New(memstore.New(), moitessier.Options{GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	srv, err := moitessierhttp.New(hub, moitessierhttp.Config{Secret: secret, Heartbeat: 20 * time.Millisecond, WriteTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ts := httptest.NewServer(srv)
	defer ts.Close()
	tok, err := moitessierhttp.Sign(secret, moitessierhttp.Claims{Subject: "t", Listen: []string{">"}, Dispatch: []string{">"}, ExpiresAt: time.Now().Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addr := strings.TrimPrefix(ts.URL, "http://")
	const n = 50
	for _, tr := range []hubload.Transport{hubload.SSE, hubload.WebSocket} {
		t.Run(string(tr), func(t *testing.T) {
			scope := "load." + string(tr)
			cs := make([]*hubload.Client, 3)
			for i := range cs {
				if cs[i], err = hubload.Dial(ctx, tr, addr, tok, scope, "c"+string(rune('0'+i)), n); err != nil {
					t.Fatal(err)
				}
				defer cs[i].Close()
				go cs[i].Run()
			}
			for i := range n {
				if _, err := hub.Dispatch(ctx, "t", scope, hubload.Text(time.Now())); err != nil {
					t.Fatal(err)
				}
				if i == n/2 {
					time.Sleep(150 * time.Millisecond) // several heartbeats: pings unanswered would close a WebSocket
				}
			}
			for _, c := range cs {
				select {
				case <-c.Done:
				case <-ctx.Done():
					t.Fatalf("got %d of %d", c.Got, n)
				}
				if c.Err != nil {
					t.Fatal(c.Err)
				}
				if c.Got != n || len(c.Lat) != n || c.Bad != 0 {
					t.Fatalf("got %d, %d latencies, %d out of order; want %d, %d, 0", c.Got, len(c.Lat), c.Bad, n, n)
				}
				for _, l := range c.Lat {
					if l <= 0 || l > 10*time.Second {
						t.Fatalf("latency %v", l)
					}
				}
			}
		})
	}
	if _, err := hubload.Dial(ctx, "poll", addr, tok, "x", "c", 1); !errors.Is(err, hubload.ErrTransport) {
		t.Fatalf("Dial poll: %v, want ErrTransport", err)
	}
}

func TestText(t *testing.T) {
	at := time.Unix(1700000000, 123456789)
	s := hubload.Text(at)
	if len(s) != hubload.TextBytes || !hubload.SentAt(s).Equal(at) {
		t.Fatalf("Text %q (%d bytes) carries %v, want %v", s, len(s), hubload.SentAt(s), at)
	}
	if !hubload.SentAt("no time").IsZero() {
		t.Fatal("SentAt of a text without a time is not zero")
	}
}
