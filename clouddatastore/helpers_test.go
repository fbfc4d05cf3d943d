package clouddatastore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/likestripes/moitessier/clouddatastore"
	"github.com/likestripes/moitessier/internal/gcpemu"
)

func TestMain(m *testing.M) { gcpemu.Main(m) }

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
