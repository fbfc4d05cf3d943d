package wake_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/clouddatastore/wake"
	"github.com/likestripes/moitessier/internal/gcpemu"
)

// The tests in this file count goroutines; they come first (this file
// sorts before wake_test.go) so that no other test's Pub/Sub stream is
// still winding down.

// TestClose: Close ends running Watch calls with ErrClosed, later calls fail
// with ErrClosed, a second Close is harmless, and no goroutine is left.
func TestClose(t *testing.T) {
	gcpemu.PubSub(t)
	before := baseline(t)
	w, err := wake.Open(context.Background(), wake.Config{Project: "test", Topic: freshTopic(t)})
	if err != nil {
		t.Fatal(err)
	}
	c := newCollector()
	errc := make(chan error, 1)
	go func() { errc <- w.Watch(context.Background(), c.fn) }()
	publishUntilSeen(t, w, c, "a", 1)

	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, moitessier.ErrClosed) {
			t.Fatalf("running Watch after Close = %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watch still running 5 s after Close")
	}
	if err := w.Watch(context.Background(), c.fn); !errors.Is(err, moitessier.ErrClosed) {
		t.Fatalf("Watch after Close = %v, want ErrClosed", err)
	}
	if err := w.Publish([]moitessier.Head{{Listener: "a", Seq: 2}}); !errors.Is(err, moitessier.ErrClosed) {
		t.Fatalf("Publish after Close = %v, want ErrClosed", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	checkGoroutines(t, before)
}

// TestOpenEmulatorDown: Open against an address where no emulator answers
// fails within OpenTimeout with an error naming the topic, and leaves no
// goroutine behind.
func TestOpenEmulatorDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	before := baseline(t)
	start := time.Now()
	w, err := wake.Open(context.Background(), wake.Config{
		Project:     "test",
		Topic:       "down-topic",
		OpenTimeout: 2 * time.Second,
		ClientOptions: []option.ClientOption{
			option.WithEndpoint(dead),
			option.WithoutAuthentication(),
			option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
		},
	})
	if err == nil {
		w.Close()
		t.Fatal("Open with no emulator succeeded")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Open took %v to fail, want about OpenTimeout", d)
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "projects/test/topics/down-topic") {
		t.Fatalf("Open = %v, want a deadline error naming the topic", err)
	}
	t.Logf("Open: %v", err)
	checkGoroutines(t, before)
}
