package storetest

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/likestripes/moitessier"
)

// wantQuota checks that err is a *QuotaError of kind for person.
func wantQuota(tb testing.TB, err error, person string, kind moitessier.QuotaKind, limit int) {
	tb.Helper()
	var qe *moitessier.QuotaError
	if !errors.Is(err, moitessier.ErrQuotaExceeded) || !errors.As(err, &qe) {
		tb.Fatalf("error %v, want a *QuotaError wrapping ErrQuotaExceeded", err)
	}
	if qe.Person != person || qe.Kind != kind || qe.Limit != limit {
		tb.Fatalf("quota error %+v, want %q past %d %s", *qe, person, limit, kind)
	}
}

// wantNoListener checks that conditions name no stored listener, and that a
// dispatch to scope reaches none of them.
func wantNoListener(tb testing.TB, hub *moitessier.Hub, c moitessier.Conditions, scope string) {
	tb.Helper()
	id, err := moitessier.ListenerID(c)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := hub.Info(ctxT(tb), id); !errors.Is(err, moitessier.ErrNotFound) {
		tb.Fatalf("listener %+v after a refused join: %v, want ErrNotFound", c, err)
	}
	if d := mustDispatch(tb, hub, "probe", scope, "probe"); len(d.Reached) != 0 {
		tb.Fatalf("a dispatch to %q after a refused join reached %d listeners", scope, len(d.Reached))
	}
}

// testQuota checks Quota: what each bound counts, that a refused join
// writes nothing, that renewing what one holds is never refused, and that
// leaving frees room.
func testQuota(t *testing.T, h Harness) {
	ctx := ctxT(t)
	t.Run("Listeners", func(t *testing.T) {
		hub := newHub(t, newStore(t, h), moitessier.Options{Quota: moitessier.Quota{Listeners: 3, Handlers: -1, Subscriptions: -1}})
		var held []*moitessier.Listener
		for _, c := range []moitessier.Conditions{
			{Person: "alice", Type: moitessier.Private, Scope: "q.a"},
			{Person: "alice", Type: moitessier.Shared, Scope: "q.b"},
			{Person: "alice", Type: moitessier.Handler, Scope: "q.c", Client: "tab"},
		} {
			held = append(held, mustListener(t, hub, c))
		}
		// A fourth of any type is refused, and stores nothing.
		for _, c := range []moitessier.Conditions{
			{Person: "alice", Type: moitessier.Shared, Scope: "q.d"},
			{Person: "alice", Type: moitessier.Private, Scope: "q.d"},
			{Person: "alice", Type: moitessier.Shared, Scopes: []string{"q.b", "q.d"}},
		} {
			_, err := hub.NewListener(ctx, c)
			wantQuota(t, err, "alice", moitessier.QuotaListeners, 3)
			wantNoListener(t, hub, c, "q.d")
		}
		// What she holds she may join again, from any client.
		mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Private, Scope: "q.a"})
		mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "q.b", Client: "phone"})
		if _, err := held[0].Messages(ctx, moitessier.Resume, 0); err != nil {
			t.Fatal(err)
		}
		// Joining a Shared listener someone else created is no creation.
		mustListener(t, hub, moitessier.Conditions{Person: "bob", Type: moitessier.Shared, Scope: "q.e"})
		mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "q.e"})
		// Another person has a quota of their own.
		for i := range 3 {
			mustListener(t, hub, moitessier.Conditions{Person: "carol", Type: moitessier.Private, Scope: fmt.Sprint("q.c", i)})
		}
		// A listener deleted (its last subscriber left) frees room.
		if err := held[0].Close(ctx); err != nil {
			t.Fatal(err)
		}
		mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "q.d"})
		// A Shared listener counts for its creator while it exists, even
		// after the creator left it.
		b2 := mustListener(t, hub, moitessier.Conditions{Person: "bob", Type: moitessier.Shared, Scope: "q.b"})
		if err := held[1].Close(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := hub.Open(ctx, held[1].ID(), "alice", "phone"); err != nil {
			t.Fatal(err)
		}
		_, err := hub.NewListener(ctx, moitessier.Conditions{Person: "alice", Type: moitessier.Private, Scope: "q.f"})
		wantQuota(t, err, "alice", moitessier.QuotaListeners, 3)
		_ = b2
	})
	t.Run("Handlers", func(t *testing.T) {
		hub := newHub(t, newStore(t, h), moitessier.Options{Quota: moitessier.Quota{Listeners: 10, Handlers: 2, Subscriptions: -1}})
		mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Handler, Scope: "h.1"})
		mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Handler, Scope: "h.1", Client: "tab"})
		c := moitessier.Conditions{Person: "alice", Type: moitessier.Handler, Scope: "h.>"}
		_, err := hub.NewListener(ctx, c)
		wantQuota(t, err, "alice", moitessier.QuotaHandlers, 2)
		wantNoListener(t, hub, c, "h.2")
		// Other types still fit under Listeners.
		mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Private, Scope: "h.>"})
		mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "h.>"})
		mustListener(t, hub, moitessier.Conditions{Person: "bob", Type: moitessier.Handler, Scope: "h.>"})
	})
	t.Run("Shared", func(t *testing.T) {
		// Each Shared listener that matches a scope stores a copy of
		// everyone's dispatches to it: the ones a person creates are
		// bounded on their own, below Listeners.
		hub := newHub(t, newStore(t, h), moitessier.Options{Quota: moitessier.Quota{Listeners: 10, Handlers: -1, Shared: 2, Subscriptions: -1}})
		first := mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scopes: []string{"sh.1", "sh.x.1"}})
		mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scopes: []string{"sh.1", "sh.x.2"}})
		c := moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scopes: []string{"sh.1", "sh.x.3"}}
		_, err := hub.NewListener(ctx, c)
		wantQuota(t, err, "alice", moitessier.QuotaShared, 2)
		wantNoListener(t, hub, c, "sh.x.3")
		if d := mustDispatch(t, hub, "bob", "sh.1", "hi"); len(d.Reached) != 2 {
			t.Fatalf("bob's dispatch reached %d of alice's Shared listeners, want the quota, 2", len(d.Reached))
		}
		// Private and Handler listeners still fit under Listeners.
		mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Private, Scope: "sh.1"})
		mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Handler, Scope: "sh.1"})
		// Joining a Shared listener someone else created creates nothing.
		mustListener(t, hub, moitessier.Conditions{Person: "bob", Type: moitessier.Shared, Scope: "sh.b"})
		mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "sh.b"})
		// Bob has a quota of his own.
		mustListener(t, hub, moitessier.Conditions{Person: "bob", Type: moitessier.Shared, Scopes: []string{"sh.1", "sh.y.1"}})
		// A Shared listener deleted (its last subscriber left) frees room.
		if err := first.Close(ctx); err != nil {
			t.Fatal(err)
		}
		mustListener(t, hub, c)
	})
	t.Run("Subscriptions", func(t *testing.T) {
		hub := newHub(t, newStore(t, h), moitessier.Options{Quota: moitessier.Quota{Listeners: -1, Handlers: -1, Subscriptions: 2}})
		for _, p := range []string{"bob", "carol", "dave"} {
			mustListener(t, hub, moitessier.Conditions{Person: p, Type: moitessier.Shared, Scope: "s." + p})
		}
		r1 := mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "s.bob"})
		mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "s.carol"})
		for _, c := range []moitessier.Conditions{
			{Person: "alice", Type: moitessier.Shared, Scope: "s.dave"},
			{Person: "alice", Type: moitessier.Shared, Scope: "s.bob", Client: "tab"},
		} {
			_, err := hub.NewListener(ctx, c)
			wantQuota(t, err, "alice", moitessier.QuotaSubscriptions, 2)
			subs, err := hub.Subscribers(ctx, mustID(t, c))
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range subs {
				if s.Person == "alice" && s.Client == c.Client {
					t.Fatalf("a refused join left subscriber %+v", s)
				}
			}
		}
		// A new listener whose creator is at the quota is not created.
		c := moitessier.Conditions{Person: "alice", Type: moitessier.Private, Scope: "s.alice"}
		_, err := hub.NewListener(ctx, c)
		wantQuota(t, err, "alice", moitessier.QuotaSubscriptions, 2)
		wantNoListener(t, hub, c, "s.alice")
		// Renewing is never refused; leaving frees room.
		mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "s.bob"})
		if err := r1.Close(ctx); err != nil {
			t.Fatal(err)
		}
		mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "s.dave"})
	})
	t.Run("Defaults", func(t *testing.T) {
		// The default Handler quota is the lowest; reach it.
		hub := newHub(t, newStore(t, h), moitessier.Options{})
		for i := range moitessier.DefaultQuotaHandlers {
			mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Handler, Scope: fmt.Sprint("d.", i)})
		}
		_, err := hub.NewListener(ctx, moitessier.Conditions{Person: "alice", Type: moitessier.Handler, Scope: "d.x"})
		wantQuota(t, err, "alice", moitessier.QuotaHandlers, moitessier.DefaultQuotaHandlers)
		// So is the default Shared quota.
		for i := range moitessier.DefaultQuotaShared {
			mustListener(t, hub, moitessier.Conditions{Person: "bob", Type: moitessier.Shared, Scopes: []string{"d.1", fmt.Sprint("d.s.", i)}})
		}
		_, err = hub.NewListener(ctx, moitessier.Conditions{Person: "bob", Type: moitessier.Shared, Scopes: []string{"d.1", "d.s.x"}})
		wantQuota(t, err, "bob", moitessier.QuotaShared, moitessier.DefaultQuotaShared)
		// Negative quotas are no limit.
		free := newHub(t, newStore(t, h), moitessier.Options{Quota: moitessier.Quota{Listeners: 1, Handlers: -1, Shared: -1, Subscriptions: -1}})
		mustListener(t, free, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "n.0"})
		for i := range 5 {
			mustListener(t, free, moitessier.Conditions{Person: fmt.Sprint("p", i), Type: moitessier.Shared, Scope: "n.0"})
			mustListener(t, free, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "n.0", Client: fmt.Sprint(i)})
		}
	})
	t.Run("MaxScopes", func(t *testing.T) {
		hub := newHub(t, newStore(t, h), moitessier.Options{MaxScopesPerListener: 3})
		_, err := hub.NewListener(ctx, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scopes: []string{"a", "b", "c", "d"}})
		wantErr(t, err, moitessier.ErrInvalidScope)
		mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scopes: []string{"a", "b", "c"}})
		def := newHub(t, newStore(t, h), moitessier.Options{})
		scopes := make([]string, moitessier.MaxScopesPerListener+1)
		for i := range scopes {
			scopes[i] = fmt.Sprint("m.", i)
		}
		_, err = def.NewListener(ctx, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scopes: scopes})
		wantErr(t, err, moitessier.ErrInvalidScope)
		mustListener(t, def, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scopes: scopes[1:]})
	})
	t.Run("SharedByHubs", func(t *testing.T) { testQuotaSharedByHubs(t, h) })
}

func mustID(tb testing.TB, c moitessier.Conditions) string {
	tb.Helper()
	id, err := moitessier.ListenerID(c)
	if err != nil {
		tb.Fatal(err)
	}
	return id
}

// testQuotaSharedByHubs: two hubs on one store (and, for a store that
// serves several processes, on two stores of the same data) creating one
// person's listeners and subscriptions at once hold them to one quota.
func testQuotaSharedByHubs(t *testing.T, h Harness) {
	s1 := newStore(t, h)
	s2 := s1
	if h.Share != nil {
		s2 = shareStore(t, h, s1)
	}
	const limit, tries = 5, 24
	q := moitessier.Quota{Listeners: limit, Handlers: limit - 2, Shared: limit - 2, Subscriptions: 2 * limit}
	hubs := []*moitessier.Hub{
		newHub(t, s1, moitessier.Options{Quota: q}),
		newHub(t, s2, moitessier.Options{Quota: q}),
	}
	// race runs tries joins, alternating between the hubs, at once, and
	// returns how many succeeded; every failure must be a quota error.
	race := func(t *testing.T, cond func(i int) moitessier.Conditions) int {
		t.Helper()
		var ok atomic.Int64
		var wg sync.WaitGroup
		for i := range tries {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := hubs[i%2].NewListener(ctxT(t), cond(i))
				switch {
				case err == nil:
					ok.Add(1)
				case !errors.Is(err, moitessier.ErrQuotaExceeded):
					t.Errorf("join %d: %v", i, err)
				}
			}()
		}
		wg.Wait()
		return int(ok.Load())
	}
	t.Run("Handlers", func(t *testing.T) {
		n := race(t, func(i int) moitessier.Conditions {
			return moitessier.Conditions{Person: "alice", Type: moitessier.Handler, Scope: fmt.Sprint("sh.h", i)}
		})
		if n != q.Handlers {
			t.Fatalf("%d of %d concurrent Handler listeners created through two hubs, want the quota, %d", n, tries, q.Handlers)
		}
	})
	t.Run("Listeners", func(t *testing.T) {
		n := race(t, func(i int) moitessier.Conditions {
			return moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: fmt.Sprint("sh.l", i)}
		})
		if n != q.Listeners-q.Handlers {
			t.Fatalf("%d of %d concurrent listeners created through two hubs, want the rest of the quota, %d", n, tries, q.Listeners-q.Handlers)
		}
	})
	t.Run("Subscriptions", func(t *testing.T) {
		mustListener(t, hubs[0], moitessier.Conditions{Person: "bob", Type: moitessier.Shared, Scope: "sh.room"})
		n := race(t, func(i int) moitessier.Conditions {
			return moitessier.Conditions{Person: "alice", Client: fmt.Sprint("tab", i), Type: moitessier.Shared, Scope: "sh.room"}
		})
		if want := q.Subscriptions - q.Listeners; n != want {
			t.Fatalf("%d of %d concurrent subscriptions made through two hubs, want the rest of the quota, %d", n, tries, want)
		}
		subs, err := hubs[1].Subscribers(ctxT(t), mustID(t, moitessier.Conditions{Person: "bob", Type: moitessier.Shared, Scope: "sh.room"}))
		if err != nil {
			t.Fatal(err)
		}
		if len(subs) != 1+n {
			t.Fatalf("the room has %d subscribers, want bob and %d of alice's", len(subs), n)
		}
	})
	t.Run("Shared", func(t *testing.T) {
		n := race(t, func(i int) moitessier.Conditions {
			return moitessier.Conditions{Person: "carol", Type: moitessier.Shared, Scopes: []string{"sh.s", fmt.Sprint("sh.s", i)}}
		})
		if n != q.Shared {
			t.Fatalf("%d of %d concurrent Shared listeners created through two hubs, want the quota, %d", n, tries, q.Shared)
		}
	})
}
