package clouddatastore_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/clouddatastore"
)

func newHub(tb testing.TB, s moitessier.Store, opts moitessier.Options) *moitessier.Hub {
	tb.Helper()
	if opts.GCInterval == 0 {
		opts.GCInterval = -1
	}
	hub, err := moitessier.New(s, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = hub.Close() })
	return hub
}

func listeners(tb testing.TB, hub *moitessier.Hub, scope string, n int) []*moitessier.Listener {
	tb.Helper()
	ls := make([]*moitessier.Listener, n)
	for i := range ls {
		l, err := hub.NewListener(ctxT(tb), moitessier.Conditions{Person: fmt.Sprint("p", i), Type: moitessier.Private, Scope: scope})
		if err != nil {
			tb.Fatal(err)
		}
		ls[i] = l
	}
	return ls
}

func count(tb testing.TB, l *moitessier.Listener) int {
	tb.Helper()
	msgs, err := l.Messages(ctxT(tb), 0, 1000)
	if err != nil {
		tb.Fatal(err)
	}
	return len(msgs)
}

// TestCommitLimits: a dispatch that one commit cannot hold fails with a
// *LimitError and writes nothing, whichever limit it passes; concurrent
// dispatches that together pass a limit are split over several commits,
// each whole.
func TestCommitLimits(t *testing.T) {
	ctx := ctxT(t)
	t.Run("Entities", func(t *testing.T) {
		s := mustStore(t, func(c *clouddatastore.Config) { c.MaxMutations = 20 })
		hub := newHub(t, s, moitessier.Options{})
		ls := listeners(t, hub, "lim.e", 11)
		// 11 listeners: 11 messages and 11 heads, more than 20 entities.
		_, err := hub.Dispatch(ctx, "p0", "lim.e", "x", moitessier.To("p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9", "p10"))
		var le *clouddatastore.LimitError
		if !errors.Is(err, clouddatastore.ErrCommitLimit) || !errors.Is(err, moitessier.ErrTooLarge) || !errors.As(err, &le) {
			t.Fatalf("dispatch to 11 listeners with MaxMutations 20: %v, want a *LimitError", err)
		}
		if le.What != "entities" || le.Need != 22 || le.Max != 20 {
			t.Fatalf("LimitError %+v, want 22 entities of 20", *le)
		}
		for _, l := range ls {
			if n := count(t, l); n != 0 {
				t.Fatalf("listener %s holds %d messages after a refused dispatch", l.ID(), n)
			}
		}
		// Ten fit: 20 entities.
		d, err := hub.Dispatch(ctx, "p0", "lim.e", "y", moitessier.To("p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9"))
		if err != nil || len(d.Messages) != 10 {
			t.Fatalf("dispatch to 10 listeners: %d messages, %v", len(d.Messages), err)
		}
	})
	t.Run("EntityBytes", func(t *testing.T) {
		s := mustStore(t)
		hub := newHub(t, s, moitessier.Options{MaxMessageBytes: 2 << 20})
		ls := listeners(t, hub, "lim.b", 1)
		_, err := hub.Dispatch(ctx, "p0", "lim.b", strings.Repeat("x", 1<<20))
		var le *clouddatastore.LimitError
		if !errors.As(err, &le) || le.What != "entity bytes" {
			t.Fatalf("a 1 MiB message: %v, want a *LimitError for the entity", err)
		}
		if n := count(t, ls[0]); n != 0 {
			t.Fatalf("listener holds %d messages after a refused dispatch", n)
		}
	})
	t.Run("CommitBytes", func(t *testing.T) {
		s := mustStore(t, func(c *clouddatastore.Config) { c.MaxCommitBytes = 1 << 20 })
		hub := newHub(t, s, moitessier.Options{MaxMessageBytes: 512 << 10})
		ls := listeners(t, hub, "lim.c", 3)
		_, err := hub.Dispatch(ctx, "p0", "lim.c", strings.Repeat("x", 400<<10), moitessier.To("p1", "p2"))
		var le *clouddatastore.LimitError
		if !errors.As(err, &le) || le.What != "bytes" {
			t.Fatalf("1.2 MB to 3 listeners with MaxCommitBytes 1 MiB: %v, want a *LimitError for bytes", err)
		}
		for _, l := range ls {
			if n := count(t, l); n != 0 {
				t.Fatalf("listener holds %d messages after a refused dispatch", n)
			}
		}
	})
	t.Run("SplitWhenCombined", func(t *testing.T) {
		// Each dispatch writes 6 entities (3 messages, 3 heads); 40 at once
		// cannot share one commit of 20, so they are split, each whole.
		s := mustStore(t, func(c *clouddatastore.Config) { c.MaxMutations = 20; c.Writers = 1 })
		hub := newHub(t, s, moitessier.Options{})
		ls := listeners(t, hub, "lim.s", 3)
		var wg sync.WaitGroup
		for i := range 40 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d, err := hub.Dispatch(context.Background(), "p0", "lim.s", fmt.Sprint(i), moitessier.To("p1", "p2"))
				if err != nil || len(d.Messages) != 3 {
					t.Errorf("dispatch %d: %d messages, %v", i, len(d.Messages), err)
				}
			}()
		}
		wg.Wait()
		for _, l := range ls {
			if n := count(t, l); n != 40 {
				t.Fatalf("listener holds %d messages, want 40", n)
			}
		}
		if st := s.Stats(); st.Commits < 6 {
			t.Fatalf("%d commits for 40 dispatches of 6 entities with 20 per commit, want at least 12 / 20 * 40 / 4", st.Commits)
		}
	})
}

// TestNewErrors: a config that cannot work fails in New with a clear
// error and writes nothing.
func TestNewErrors(t *testing.T) {
	needDatastore(t)
	ctx := ctxT(t)
	for _, tc := range []struct {
		name string
		cfg  clouddatastore.Config
	}{
		{"NoProject", clouddatastore.Config{}},
		{"BadProject", clouddatastore.Config{Project: "Not A Project"}},
		{"BadDatabase", clouddatastore.Config{Project: "test", Database: "DB!"}},
		{"BadNamespace", clouddatastore.Config{Project: "test", Namespace: "a/b"}},
		{"ReservedNamespace", clouddatastore.Config{Project: "test", Namespace: "__kind__"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := clouddatastore.New(ctx, tc.cfg)
			if !errors.Is(err, clouddatastore.ErrConfig) {
				if s != nil {
					_ = s.Close()
				}
				t.Fatalf("New(%+v): %v, want ErrConfig", tc.cfg, err)
			}
		})
	}
	t.Run("NoCreate", func(t *testing.T) {
		ns := newNamespace(t)
		for range 2 {
			_, err := clouddatastore.New(ctx, clouddatastore.Config{Project: "test", Namespace: ns, NoCreate: true})
			if !errors.Is(err, moitessier.ErrNotFound) || !strings.Contains(err.Error(), ns) {
				t.Fatalf("New with NoCreate on an empty namespace: %v, want ErrNotFound naming it", err)
			}
		}
		openStore(t, ns) // creates it
		s, err := clouddatastore.New(ctx, clouddatastore.Config{Project: "test", Namespace: ns, NoCreate: true, NoPubSub: true})
		if err != nil {
			t.Fatalf("New with NoCreate on a namespace with a store: %v", err)
		}
		_ = s.Close()
	})
	t.Run("EmulatorDown", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		_ = l.Close()
		t.Setenv("DATASTORE_EMULATOR_HOST", addr)
		start := time.Now()
		_, err = clouddatastore.New(ctx, clouddatastore.Config{Project: "test", Namespace: "x", NoPubSub: true})
		if err == nil || !strings.Contains(err.Error(), "does not answer") || !strings.Contains(err.Error(), addr) {
			t.Fatalf("New with the emulator down: %v, want an error naming %s", err, addr)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("New took %v to say the emulator is down", d)
		}
	})
}
