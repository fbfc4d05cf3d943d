package storetest

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
)

func testListeners(t *testing.T, h Harness) {
	s := newStore(t, h)
	var created []string
	hub := newHub(t, s, moitessier.Options{Hooks: moitessier.Hooks{
		Created: func(ctx context.Context, l moitessier.ListenerInfo) { created = append(created, l.ID) },
	}})
	ctx := ctxT(t)

	t.Run("SharedIsOnePerScope", func(t *testing.T) {
		a := mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "room.1"})
		b := mustListener(t, hub, moitessier.Conditions{Person: "bob", Type: moitessier.Shared, Scope: "room.1"})
		a2 := mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "room.1"})
		if a.ID() != b.ID() || a.ID() != a2.ID() {
			t.Fatalf("ids %s %s %s, want one Shared listener per scope", a.ID(), b.ID(), a2.ID())
		}
		if got := slices.Index(created, a.ID()); got < 0 || slices.Index(created[got+1:], a.ID()) >= 0 {
			t.Fatalf("Created hook calls %v, want %s once", created, a.ID())
		}
		subs, err := a.Subscribers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(subs) != 2 || subs[0].Person != "alice" || subs[1].Person != "bob" {
			t.Fatalf("subscribers %+v, want alice and bob once each", subs)
		}
		if id, err := moitessier.ListenerID(moitessier.Conditions{Person: "carol", Type: moitessier.Shared, Scope: "room.1"}); err != nil || id != a.ID() {
			t.Fatalf("ListenerID = %q, %v; want %q", id, err, a.ID())
		}
	})
	t.Run("PrivateIsPerOwnerAndClient", func(t *testing.T) {
		ids := map[string]bool{}
		for _, c := range []moitessier.Conditions{
			{Person: "alice", Type: moitessier.Private, Scope: "inbox"},
			{Person: "bob", Type: moitessier.Private, Scope: "inbox"},
			{Person: "alice", Type: moitessier.Private, Scope: "inbox", Client: "phone"},
			{Person: "alice", Type: moitessier.Handler, Scope: "inbox"},
			{Person: "alice", Type: moitessier.Shared, Scope: "inbox"},
		} {
			ids[mustListener(t, hub, c).ID()] = true
		}
		if len(ids) != 5 {
			t.Fatalf("%d distinct listeners, want 5", len(ids))
		}
		again := mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Private, Scope: "inbox", Client: "phone"})
		if !ids[again.ID()] {
			t.Fatal("the same conditions gave a new listener")
		}
	})
	t.Run("ScopeListIsASet", func(t *testing.T) {
		a := mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "b", Scopes: []string{"a", "b"}})
		b := mustListener(t, hub, moitessier.Conditions{Person: "bob", Type: moitessier.Shared, Scopes: []string{"a", "b", "a"}})
		if a.ID() != b.ID() {
			t.Fatal("the same scope set gave two listeners")
		}
		if got := a.Info().Scopes; !slices.Equal(got, []string{"a", "b"}) {
			t.Fatalf("scopes %q, want [a b]", got)
		}
	})
	t.Run("OpenChecksOwner", func(t *testing.T) {
		p := mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Private, Scope: "secret"})
		if _, err := hub.Open(ctx, p.ID(), "mallory", ""); !errors.Is(err, moitessier.ErrNotOwner) {
			t.Fatalf("Open as another person: %v, want ErrNotOwner", err)
		}
		if _, err := hub.Open(ctx, p.ID(), "alice", "tab"); !errors.Is(err, moitessier.ErrNotOwner) {
			t.Fatalf("Open as another client: %v, want ErrNotOwner", err)
		}
		if _, err := hub.Open(ctx, "s0000", "alice", ""); !errors.Is(err, moitessier.ErrNotFound) {
			t.Fatalf("Open of a missing listener: %v, want ErrNotFound", err)
		}
		l, err := hub.Open(ctx, p.ID(), "alice", "")
		if err != nil || l.ID() != p.ID() {
			t.Fatalf("Open as owner: %v", err)
		}
	})
}

func testBadConditions(t *testing.T, h Harness) {
	s := newStore(t, h)
	hub := newHub(t, s, moitessier.Options{})
	ctx := ctxT(t)
	bad := []struct {
		name string
		c    moitessier.Conditions
		want error
	}{
		{"UnknownType", moitessier.Conditions{Person: "a", Type: 7, Scope: "x"}, moitessier.ErrUnknownType},
		{"ZeroType", moitessier.Conditions{Person: "a", Scope: "x"}, moitessier.ErrUnknownType},
		{"NoScope", moitessier.Conditions{Person: "a", Type: moitessier.Shared}, moitessier.ErrInvalidScope},
		{"EmptyInList", moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scopes: []string{"x", ""}}, moitessier.ErrInvalidScope},
		{"Oversized", moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: strings.Repeat("x", moitessier.MaxScopeBytes+1)}, moitessier.ErrInvalidScope},
		{"InvalidUTF8", moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "room.\xff"}, moitessier.ErrInvalidScope},
		{"ControlChar", moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "room\n1"}, moitessier.ErrInvalidScope},
		{"NUL", moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "room\x001"}, moitessier.ErrInvalidScope},
		{"GtNotLast", moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "a.>.b"}, moitessier.ErrInvalidScope},
		{"NoPerson", moitessier.Conditions{Type: moitessier.Shared, Scope: "x"}, moitessier.ErrInvalidArgument},
		{"BadPerson", moitessier.Conditions{Person: "a\xff", Type: moitessier.Shared, Scope: "x"}, moitessier.ErrInvalidArgument},
		{"LongClient", moitessier.Conditions{Person: "a", Client: strings.Repeat("c", 300), Type: moitessier.Private, Scope: "x"}, moitessier.ErrInvalidArgument},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := hub.NewListener(ctx, tt.c)
			wantErr(t, err, tt.want)
		})
	}
	// Nothing was stored: a dispatch to each scope reaches no listener.
	for _, scope := range []string{"x", "room.1", "a.b.b"} {
		if d := mustDispatch(t, hub, "a", scope, "hi"); len(d.Reached) != 0 {
			t.Fatalf("dispatch to %q reached %v after only bad NewListener calls", scope, d.Reached)
		}
	}
	// A maximal scope is fine.
	mustListener(t, hub, moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: strings.Repeat("é", moitessier.MaxScopeBytes/2)})
}

func testDispatch(t *testing.T, h Harness) {
	s := newStore(t, h)
	hub := newHub(t, s, moitessier.Options{})
	exact := mustListener(t, hub, moitessier.Conditions{Person: "p", Type: moitessier.Shared, Scope: "chat.room.1"})
	star := mustListener(t, hub, moitessier.Conditions{Person: "p", Type: moitessier.Shared, Scope: "chat.*.1"})
	rest := mustListener(t, hub, moitessier.Conditions{Person: "p", Type: moitessier.Shared, Scope: "chat.>"})
	list := mustListener(t, hub, moitessier.Conditions{Person: "p", Type: moitessier.Shared, Scopes: []string{"chat.room.1", "chat.room.*", "other"}})
	other := mustListener(t, hub, moitessier.Conditions{Person: "p", Type: moitessier.Shared, Scope: "chat.room.2"})
	spaces := mustListener(t, hub, moitessier.Conditions{Person: "p", Type: moitessier.Shared, Scope: "scoped string"})

	d := mustDispatch(t, hub, "s", "chat.room.1", "one")
	if len(d.Messages) != 4 || len(d.Reached) != 4 || d.Replayed || d.ID == "" {
		t.Fatalf("dispatch wrote %d messages to %d listeners (replayed %v, id %q), want 4 and 4", len(d.Messages), len(d.Reached), d.Replayed, d.ID)
	}
	for _, m := range d.Messages {
		if m.Text != "one" || m.Scope != "chat.room.1" || m.Sender != "s" || m.Seq != 1 || m.Dispatch != d.ID || m.Created.IsZero() {
			t.Fatalf("message %+v", m)
		}
	}
	mustDispatch(t, hub, "s", "chat.room.2", "two")
	mustDispatch(t, hub, "s", "chat", "three")
	mustDispatch(t, hub, "s", "chat.x.y.z", "four")
	mustDispatch(t, hub, "s", "scoped string", "five")
	mustDispatch(t, hub, "s", "other", "six")
	wantTexts(t, exact, "one")
	wantTexts(t, star, "one")
	wantTexts(t, rest, "one", "two", "four")
	wantTexts(t, list, "one", "two", "six")
	wantTexts(t, other, "two")
	wantTexts(t, spaces, "five")

	if d := mustDispatch(t, hub, "s", "nobody.here", "x"); len(d.Messages) != 0 || len(d.Reached) != 0 {
		t.Fatalf("dispatch to an unheard scope: %+v", d)
	}
	if d := mustDispatch(t, hub, "s", "chat.room.1", ""); len(d.Messages) != 0 {
		t.Fatalf("an empty text stored %d messages", len(d.Messages))
	}
	// Text is stored byte for byte.
	odd := "quote ' \" ; DROP TABLE messages; -- \\ % _ ✓ 😀 \t\n\r"
	mustDispatch(t, hub, "s", "chat.room.2", odd)
	wantTexts(t, other, "two", odd)
}

func testPrivate(t *testing.T, h Harness) {
	s := newStore(t, h)
	hub := newHub(t, s, moitessier.Options{})
	alice := mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Private, Scope: "notes"})
	alicePhone := mustListener(t, hub, moitessier.Conditions{Person: "alice", Client: "phone", Type: moitessier.Private, Scope: "notes"})
	bob := mustListener(t, hub, moitessier.Conditions{Person: "bob", Type: moitessier.Private, Scope: "notes"})
	room := mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "notes"})

	mustDispatch(t, hub, "alice", "notes", "alice's own")
	mustDispatch(t, hub, "bob", "notes", "bob's own")
	mustDispatch(t, hub, "carol", "notes", "for alice", moitessier.To("alice"))
	mustDispatch(t, hub, "carol", "notes", "for both", moitessier.To("alice", "bob"))
	mustDispatch(t, hub, "mallory", "notes", "public")
	// To() with nobody is still addressed: it is no broadcast.
	mustDispatch(t, hub, "mallory", "notes", "to nobody", moitessier.To())

	wantTexts(t, alice, "alice's own", "for alice", "for both")
	wantTexts(t, alicePhone, "alice's own", "for alice", "for both")
	wantTexts(t, bob, "bob's own", "for both")
	wantTexts(t, room, "alice's own", "bob's own", "public")

	// Another person cannot read alice's listener.
	if _, err := hub.Open(ctxT(t), alice.ID(), "bob", ""); !errors.Is(err, moitessier.ErrNotOwner) {
		t.Fatalf("bob opened alice's listener: %v", err)
	}
}

func testHandlers(t *testing.T, h Harness) {
	s := newStore(t, h)
	hub := newHub(t, s, moitessier.Options{})
	a := mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Handler, Scope: "job.*"})
	b := mustListener(t, hub, moitessier.Conditions{Person: "bob", Type: moitessier.Handler, Scope: "job.7"})
	c := mustListener(t, hub, moitessier.Conditions{Person: "carol", Type: moitessier.Handler, Scope: "job.7"})
	shared := mustListener(t, hub, moitessier.Conditions{Person: "dave", Type: moitessier.Shared, Scope: "job.7"})

	var calls []string
	saver := moitessier.HandlerFunc(func(ctx context.Context, id string, m moitessier.Message) (string, error) {
		calls = append(calls, id)
		switch id {
		case a.ID():
			return "for alice: " + m.Text, nil
		case b.ID():
			return "for bob: " + m.Text, nil
		}
		return "", nil // carol gets nothing
	})
	upper := moitessier.HandlerFunc(func(ctx context.Context, id string, m moitessier.Message) (string, error) {
		return strings.ToUpper(m.Text), nil
	})
	d := mustDispatch(t, hub, "sys", "job.7", "done", saver, upper)
	if len(calls) != 3 {
		t.Fatalf("handler called for %v, want each of 3 Handler listeners once", calls)
	}
	if len(d.Reached) != 4 || len(d.Messages) != 3 {
		t.Fatalf("reached %d, wrote %d; want 4 and 3", len(d.Reached), len(d.Messages))
	}
	got := map[string]string{}
	for _, m := range d.Messages {
		got[m.Listener] = m.Text
	}
	if got[a.ID()] != "FOR ALICE: DONE" || got[b.ID()] != "FOR BOB: DONE" || got[shared.ID()] != "done" {
		t.Fatalf("returned messages %v", got)
	}
	wantTexts(t, a, "FOR ALICE: DONE")
	wantTexts(t, b, "FOR BOB: DONE")
	wantTexts(t, c)
	wantTexts(t, shared, "done")

	// Without handlers, Handler listeners get the text as it is (0.1).
	mustDispatch(t, hub, "sys", "job.8", "plain")
	wantTexts(t, a, "FOR ALICE: DONE", "plain")
}

func testBadDispatch(t *testing.T, h Harness) {
	s := newStore(t, h)
	hub := newHub(t, s, moitessier.Options{MaxMessageBytes: 100})
	l := mustListener(t, hub, moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: ">"})
	mustDispatch(t, hub, "a", "x", "kept")
	ctx := ctxT(t)
	cases := []struct {
		name                string
		sender, scope, text string
		opts                []moitessier.DispatchOption
		want                error
	}{
		{"EmptyScope", "a", "", "t", nil, moitessier.ErrInvalidScope},
		{"Wildcard", "a", "x.*", "t", nil, moitessier.ErrInvalidScope},
		{"Rest", "a", ">", "t", nil, moitessier.ErrInvalidScope},
		{"OversizedScope", "a", strings.Repeat("x", 1025), "t", nil, moitessier.ErrInvalidScope},
		{"InvalidUTF8Scope", "a", "\xc3\x28", "t", nil, moitessier.ErrInvalidScope},
		{"ControlScope", "a", "x\x7f", "t", nil, moitessier.ErrInvalidScope},
		{"TooLarge", "a", "x", strings.Repeat("m", 101), nil, moitessier.ErrTooLarge},
		{"InvalidUTF8Text", "a", "x", "bad \xff", nil, moitessier.ErrInvalidArgument},
		{"BadSender", "a\x00", "x", "t", nil, moitessier.ErrInvalidArgument},
		{"EmptyKey", "a", "x", "t", []moitessier.DispatchOption{moitessier.IdempotencyKey("")}, moitessier.ErrInvalidArgument},
		{"EmptyRecipient", "a", "x", "t", []moitessier.DispatchOption{moitessier.To("")}, moitessier.ErrInvalidArgument},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			_, err := hub.Dispatch(ctx, tt.sender, tt.scope, tt.text, tt.opts...)
			wantErr(t, err, tt.want)
		})
	}
	wantTexts(t, l, "kept")
	// Exactly the limit is fine.
	mustDispatch(t, hub, "a", "x", strings.Repeat("m", 100))
}

func testAtomic(t *testing.T, h Harness) {
	s := newStore(t, h)
	hub := newHub(t, s, moitessier.Options{MaxMessageBytes: 10})
	shared := mustListener(t, hub, moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "x"})
	h1 := mustListener(t, hub, moitessier.Conditions{Person: "a", Type: moitessier.Handler, Scope: "x"})
	h2 := mustListener(t, hub, moitessier.Conditions{Person: "b", Type: moitessier.Handler, Scope: "x"})
	boom := errors.New("boom")
	failing := moitessier.HandlerFunc(func(ctx context.Context, id string, m moitessier.Message) (string, error) {
		if id == h2.ID() {
			return "", boom
		}
		return "ok", nil
	})
	if _, err := hub.Dispatch(ctxT(t), "a", "x", "t", failing); !errors.Is(err, boom) {
		t.Fatalf("dispatch with a failing handler: %v, want the handler's error", err)
	}
	huge := moitessier.HandlerFunc(func(ctx context.Context, id string, m moitessier.Message) (string, error) {
		if id == h2.ID() {
			return strings.Repeat("h", 11), nil
		}
		return "ok", nil
	})
	_, err := hub.Dispatch(ctxT(t), "a", "x", "t", huge)
	wantErr(t, err, moitessier.ErrTooLarge)
	wantTexts(t, shared)
	wantTexts(t, h1)
	wantTexts(t, h2)
	// A cancelled context stores nothing either.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := hub.Dispatch(ctx, "a", "x", "t"); err == nil {
		t.Fatal("dispatch with a cancelled context succeeded")
	}
	wantTexts(t, shared)
	mustDispatch(t, hub, "a", "x", "t")
	wantTexts(t, shared, "t")
}

func testIdempotency(t *testing.T, h Harness) {
	s := newStore(t, h)
	clk := newClock()
	hub := newHub(t, s, moitessier.Options{Now: clk.Now, IdempotencyWindow: 1000 * 1e9})
	l := mustListener(t, hub, moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "pay"})
	first := mustDispatch(t, hub, "alice", "pay", "charge", moitessier.IdempotencyKey("k1"))
	again := mustDispatch(t, hub, "alice", "pay", "charge", moitessier.IdempotencyKey("k1"))
	if first.Replayed || !again.Replayed {
		t.Fatalf("replayed: first %v, retry %v", first.Replayed, again.Replayed)
	}
	if again.ID != first.ID || len(again.Messages) != 1 || again.Messages[0].Seq != first.Messages[0].Seq || again.Messages[0].Text != "charge" {
		t.Fatalf("retry returned %+v, want the first dispatch %+v", again, first)
	}
	mustDispatch(t, hub, "bob", "pay", "other sender", moitessier.IdempotencyKey("k1"))
	mustDispatch(t, hub, "alice", "pay", "other key", moitessier.IdempotencyKey("k2"))
	wantTexts(t, l, "charge", "other sender", "other key")
	// A key with no listener reached still counts.
	mustDispatch(t, hub, "alice", "nobody", "x", moitessier.IdempotencyKey("k3"))
	if d := mustDispatch(t, hub, "alice", "nobody", "x", moitessier.IdempotencyKey("k3")); !d.Replayed {
		t.Fatal("a retry of a dispatch that reached nobody was not a replay")
	}
	// After the window, the key is new again; GC forgets it.
	clk.Add(1001 * 1e9)
	if d := mustDispatch(t, hub, "alice", "pay", "charge", moitessier.IdempotencyKey("k1")); d.Replayed {
		t.Fatal("a key past its window replayed")
	}
	res, err := hub.GC(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if res.Keys < 3 {
		t.Fatalf("GC removed %d keys, want at least 3 expired ones", res.Keys)
	}
	wantTexts(t, l, "charge", "other sender", "other key", "charge")
}

// testIdempotencyRecreated: a retry, within the window, of a keyed
// dispatch whose listener was deleted and made again since replays what
// is left of the first dispatch's messages (nothing), not the new
// incarnation's, which share their sequence numbers.
func testIdempotencyRecreated(t *testing.T, h Harness) {
	s := newStore(t, h)
	hub := newHub(t, s, moitessier.Options{IdempotencyWindow: time.Hour})
	ctx := ctxT(t)
	l := mustListener(t, hub, moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "pay"})
	first := mustDispatch(t, hub, "alice", "pay", "charge", moitessier.IdempotencyKey("k1"))
	if len(first.Messages) != 1 {
		t.Fatalf("first dispatch wrote %d messages, want 1", len(first.Messages))
	}
	if err := hub.Leave(ctx, l.ID(), "a", ""); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond) // a creation time of its own
	l2 := mustListener(t, hub, moitessier.Conditions{Person: "b", Type: moitessier.Shared, Scope: "pay"})
	if l2.ID() != l.ID() {
		t.Fatal("the listener made again has another ID")
	}
	// By the same sender, with no key: only the dispatch tells its
	// message from the first one's.
	mustDispatch(t, hub, "alice", "pay", "other")
	again := mustDispatch(t, hub, "alice", "pay", "charge", moitessier.IdempotencyKey("k1"))
	if !again.Replayed {
		t.Fatal("the retry was not a replay")
	}
	for _, m := range again.Messages {
		if m.Text != "charge" {
			t.Fatalf("the replay returned %q (seq %d), the new incarnation's message", m.Text, m.Seq)
		}
	}
	wantTexts(t, l2, "other")
}
