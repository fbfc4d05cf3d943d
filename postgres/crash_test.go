package postgres_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/postgres"
)

// TestCrash crashes the database server right after creating listeners one
// after the other, and checks what the asynchronous creations cost: some of
// the last may be gone, and their handles then report ErrClosed; every
// other listener, and every message dispatched before, are there; a
// dispatch reaches exactly the listeners that are; joining again creates a
// lost one. With DurableJoins none is lost. It runs only when
// MOITESSIER_POSTGRES_CRASH holds a shell command that crashes the server
// and starts it again (for example "pg_ctlcluster 15 main stop -m
// immediate && pg_ctlcluster 15 main start"), since it takes the server
// down for every other test.
func TestCrash(t *testing.T) {
	crash := os.Getenv("MOITESSIER_POSTGRES_CRASH")
	if crash == "" {
		t.Skip("set MOITESSIER_POSTGRES_CRASH to a command that crashes and restarts the test server to run this test")
	}
	for _, durable := range []bool{false, true} {
		t.Run(fmt.Sprintf("DurableJoins=%v", durable), func(t *testing.T) {
			s := openStoreWith(t, postgres.Config{Schema: newSchema(t), DurableJoins: durable})
			ctx := ctxT(t)
			hub := newHub(t, s, moitessier.Options{Quota: moitessier.Quota{Listeners: -1, Shared: -1, Subscriptions: -1}})
			kept, err := hub.NewListener(ctx, moitessier.Conditions{Person: "p", Type: moitessier.Shared, Scope: "kept"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := hub.Dispatch(ctx, "p", "kept", "durable"); err != nil {
				t.Fatal(err)
			}
			const n = 2000
			ls := make([]*moitessier.Listener, n)
			for i := range ls {
				if ls[i], err = hub.NewListener(ctx, moitessier.Conditions{Person: "p", Type: moitessier.Shared, Scopes: []string{"c", fmt.Sprint("c.", i)}}); err != nil {
					t.Fatal(err)
				}
				if i%500 == 0 { // the hub's cached match of "c", read only
					if _, _, err := s.MatchCached(ctx, "c"); err != nil {
						t.Fatal(err)
					}
				}
			}
			if out, err := exec.Command("sh", "-c", crash).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", crash, err, out)
			}
			var alive, gone int
			for _, l := range ls {
				var err error
				for range 50 { // until the pool has reconnected
					if _, err = l.Messages(ctx, 0, 0); err == nil || errors.Is(err, moitessier.ErrClosed) {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				switch {
				case err == nil:
					alive++
				case errors.Is(err, moitessier.ErrClosed):
					gone++
				default:
					t.Fatalf("Messages after the crash: %v", err)
				}
			}
			t.Logf("after the crash: %d of %d listeners created one after the other are gone", gone, n)
			if durable && gone > 0 {
				t.Fatalf("%d listeners gone with DurableJoins", gone)
			}
			if msgs, err := kept.Messages(ctx, 0, 0); err != nil || len(msgs) != 1 {
				t.Fatalf("the message dispatched before the crash: %v, %v", msgs, err)
			}
			d, err := hub.Dispatch(ctx, "p", "c", "after")
			if err != nil {
				t.Fatal(err)
			}
			if len(d.Reached) != alive {
				t.Fatalf("a dispatch reached %d listeners; %d are there", len(d.Reached), alive)
			}
			if _, err := hub.NewListener(ctx, moitessier.Conditions{Person: "p", Type: moitessier.Shared, Scopes: []string{"c", "c.0"}}); err != nil {
				t.Fatal(err)
			}
		})
	}
}
