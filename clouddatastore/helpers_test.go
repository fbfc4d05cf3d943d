package clouddatastore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/likestripes/moitessier/clouddatastore"
	"github.com/likestripes/moitessier/internal/gcpemu"
)

// TestMain runs the tests, stops the emulators, and fails if a goroutine
// outlives them: every goroutine the store starts has an owner that stops it.
func TestMain(m *testing.M) {
	code := m.Run()
	gcpemu.Stop()
	if code == 0 {
		if err := goleak.Find(
			// Started by a dependency's init, for the life of the process.
			goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
			// The Pub/Sub client's stream keep-alive: it winds down on its
			// own some seconds after the stream (and the client) closed; the
			// wake package's TestClose waits for it.
			goleak.IgnoreTopFunction("cloud.google.com/go/pubsub/v2.(*messageIterator).streamKeepAliveHandler"),
		); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// needDatastore makes sure a Datastore emulator answers (starting one if
// DATASTORE_EMULATOR_HOST is unset), or skips the test saying why (fails it
// under MOITESSIER_REQUIRE_DATASTORE=1).
func needDatastore(tb testing.TB) {
	tb.Helper()
	gcpemu.Datastore(tb)
	gcpemu.PubSub(tb)
}

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	tb.Cleanup(cancel)
	return ctx
}

// newNamespace returns a fresh namespace name.
func newNamespace(tb testing.TB) string {
	tb.Helper()
	needDatastore(tb)
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "t" + hex.EncodeToString(b[:])
}

// openStore opens a store on namespace ns, closed when the test ends.
func openStore(tb testing.TB, ns string, opts ...func(*clouddatastore.Config)) *clouddatastore.Store {
	tb.Helper()
	cfg := clouddatastore.Config{Project: "test", Namespace: ns}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := clouddatastore.New(ctxT(tb), cfg)
	if err != nil {
		tb.Fatalf("clouddatastore.New(namespace %s): %v", ns, err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// mustStore opens a store on a fresh namespace.
func mustStore(tb testing.TB, opts ...func(*clouddatastore.Config)) *clouddatastore.Store {
	tb.Helper()
	return openStore(tb, newNamespace(tb), opts...)
}
