package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
)

func testMessages(t *testing.T, h Harness) {
	s := newStore(t, h)
	clk := newClock()
	hub := newHub(t, s, moitessier.Options{Now: clk.Now})
	ctx := ctxT(t)
	l := mustListener(t, hub, moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "log"})
	start := clk.Now()
	for i := 1; i <= 10; i++ {
		mustDispatch(t, hub, "a", "log", fmt.Sprint(i))
		clk.Add(time.Second)
	}
	msgs, err := l.Messages(ctx, 3, 4)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 4 || msgs[0].Seq != 4 || msgs[3].Seq != 7 || msgs[0].Text != "4" {
		t.Fatalf("Messages(3, 4) = seqs %s", seqs(msgs))
	}
	if msgs, err := l.Messages(ctx, 10, 5); err != nil || len(msgs) != 0 {
		t.Fatalf("Messages at the head = %d, %v", len(msgs), err)
	}
	if _, err := l.Messages(ctx, 0, -1); !errors.Is(err, moitessier.ErrInvalidArgument) {
		t.Fatalf("negative limit: %v", err)
	}
	// Starting from a time, as 0.1 did.
	for _, tc := range []struct {
		at   time.Time
		want moitessier.Cursor
	}{
		{start.Add(-time.Hour), 0},
		{start, 0},
		{start.Add(4500 * time.Millisecond), 5},
		{start.Add(time.Hour), 10},
	} {
		c, err := l.CursorAt(ctx, tc.at)
		if err != nil || c != tc.want {
			t.Fatalf("CursorAt(start%+v) = %d, %v; want %d", tc.at.Sub(start), c, err, tc.want)
		}
	}
	// Sequences are per listener.
	o := mustListener(t, hub, moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "other"})
	if d := mustDispatch(t, hub, "a", "other", "x"); d.Messages[0].Seq != 1 {
		t.Fatalf("first message of a new listener has seq %d", d.Messages[0].Seq)
	}
	wantTexts(t, o, "x")
}

func testListenUntil(t *testing.T, h Harness) {
	s := newStore(t, h)
	hub := newHub(t, s, moitessier.Options{})
	ctx := ctxT(t)
	l := mustListener(t, hub, moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "feed"})

	t.Run("Push", func(t *testing.T) {
		// The check interval is an hour: a message that arrives came by push.
		c := newCollector()
		done := make(chan error, 1)
		var cur moitessier.Cursor
		lctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() {
			var err error
			cur, err = l.ListenUntil(lctx, func(context.Context) error { return nil }, c.respond, 0, time.Hour, time.Hour)
			done <- err
		}()
		mustDispatch(t, hub, "a", "feed", "one")
		c.waitFor(t, 1)
		mustDispatch(t, hub, "a", "feed", "two")
		c.waitFor(t, 2)
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("ListenUntil after cancel: %v", err)
		}
		if cur != 2 || !slices.Equal(c.texts(), []string{"one", "two"}) {
			t.Fatalf("cursor %d, texts %q", cur, c.texts())
		}
	})
	t.Run("Timeout", func(t *testing.T) {
		c := newCollector()
		cur, err := l.ListenUntil(ctx, nil, c.respond, 1, 0, 50*time.Millisecond)
		if err != nil || cur != 2 || !slices.Equal(c.texts(), []string{"two"}) {
			t.Fatalf("ListenUntil from 1 = %d, %v, %q; want 2, nil, [two]", cur, err, c.texts())
		}
	})
	t.Run("CheckEndsLoop", func(t *testing.T) {
		gone := errors.New("client gone")
		n := 0
		check := func(context.Context) error {
			if n++; n == 3 {
				return gone
			}
			return nil
		}
		cur, err := l.ListenUntil(ctx, check, newCollector().respond, 2, time.Millisecond, time.Minute)
		if !errors.Is(err, gone) || cur != 2 || n != 3 {
			t.Fatalf("ListenUntil = %d, %v after %d checks; want the check's error on the third", cur, err, n)
		}
	})
	t.Run("RespondError", func(t *testing.T) {
		bad := errors.New("write failed")
		cur, err := l.ListenUntil(ctx, nil, func(context.Context, []moitessier.Message) error { return bad }, 0, 0, time.Minute)
		if !errors.Is(err, bad) || cur != 0 {
			t.Fatalf("ListenUntil = %d, %v; want 0 and the respond error", cur, err)
		}
	})
	t.Run("BadArguments", func(t *testing.T) {
		if _, err := l.ListenUntil(ctx, nil, nil, 0, 0, 0); !errors.Is(err, moitessier.ErrInvalidArgument) {
			t.Fatalf("nil respond: %v", err)
		}
		if _, err := l.ListenUntil(ctx, nil, newCollector().respond, 99, 0, time.Second); !errors.Is(err, moitessier.ErrInvalidArgument) {
			t.Fatalf("cursor past the head: %v", err)
		}
	})
	t.Run("ResumeFromReturnedCursor", func(t *testing.T) {
		r := mustListener(t, hub, moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "resume"})
		for i := range 5 {
			mustDispatch(t, hub, "a", "resume", fmt.Sprint(i))
		}
		var got []string
		take3 := func(ctx context.Context, msgs []moitessier.Message) error {
			for _, m := range msgs {
				if len(got) == 3 {
					return errStopAfter
				}
				got = append(got, m.Text)
			}
			return nil
		}
		// Respond sees a batch; to stop mid-batch, use a batch limit of 1.
		hub1 := newHub(t, s, moitessier.Options{BatchLimit: 1})
		r1, err := hub1.Open(ctx, r.ID(), "a", "")
		if err != nil {
			t.Fatal(err)
		}
		cur, err := r1.ListenUntil(ctx, nil, take3, 0, 0, time.Minute)
		if !errors.Is(err, errStopAfter) || cur != 3 {
			t.Fatalf("first listen = %d, %v", cur, err)
		}
		for i := 5; i < 8; i++ {
			mustDispatch(t, hub, "a", "resume", fmt.Sprint(i))
		}
		c := newCollector()
		cur, err = r.ListenUntil(ctx, nil, c.respond, cur, 0, 100*time.Millisecond)
		if err != nil || cur != 8 {
			t.Fatalf("second listen = %d, %v", cur, err)
		}
		if all := append(got, c.texts()...); !slices.Equal(all, []string{"0", "1", "2", "3", "4", "5", "6", "7"}) {
			t.Fatalf("across the resume: %q", all)
		}
	})
}

var errStopAfter = errors.New("stop")

// testNoLossDuringRespond is the race 0.1 lost messages to: a message stored
// while the responder runs must come in the next call.
func testNoLossDuringRespond(t *testing.T, h Harness) {
	s := newStore(t, h)
	hub := newHub(t, s, moitessier.Options{})
	ctx := ctxT(t)
	l := mustListener(t, hub, moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "race"})
	const n = 50
	var got []moitessier.Message
	respond := func(ctx context.Context, msgs []moitessier.Message) error {
		got = append(got, msgs...)
		last := msgs[len(msgs)-1]
		if len(got) < n && last.Seq == moitessier.Cursor(len(got)) {
			// Dispatch the next message from inside the responder.
			if _, err := hub.Dispatch(ctx, "a", "race", fmt.Sprint(len(got))); err != nil {
				return err
			}
		}
		if len(got) >= n {
			return errStopAfter
		}
		return nil
	}
	mustDispatch(t, hub, "a", "race", "0")
	cur, err := l.ListenUntil(ctx, nil, respond, 0, 0, 30*time.Second)
	if !errors.Is(err, errStopAfter) {
		t.Fatalf("ListenUntil = %d, %v; got %d of %d messages", cur, err, len(got), n)
	}
	for i, m := range got {
		if m.Seq != moitessier.Cursor(i+1) || m.Text != fmt.Sprint(i) {
			t.Fatalf("message %d is seq %d %q", i, m.Seq, m.Text)
		}
	}
}

func testServerCursors(t *testing.T, h Harness) {
	s := newStore(t, h)
	hub := newHub(t, s, moitessier.Options{})
	ctx := ctxT(t)
	scope := "room.cursors"
	mustListener(t, hub, moitessier.Conditions{Person: "owner", Type: moitessier.Shared, Scope: scope})
	mustDispatch(t, hub, "x", scope, "before alice joined")
	alice := mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: scope, Client: "tab1"})
	if c, err := alice.Cursor(ctx); err != nil || c != 1 {
		t.Fatalf("a new subscriber's cursor = %d, %v; want the head, 1", c, err)
	}
	for i := range 3 {
		mustDispatch(t, hub, "x", scope, fmt.Sprint(i))
	}
	// Resume with no cursor in hand: from where alice joined.
	c := newCollector()
	stop := listen(t, alice, c, moitessier.Resume)
	c.waitFor(t, 3)
	if cur, err := stop(); err != nil || cur != 4 {
		t.Fatalf("listen = %d, %v", cur, err)
	}
	if !slices.Equal(c.texts(), []string{"0", "1", "2"}) {
		t.Fatalf("resumed from the join point and got %q", c.texts())
	}
	// The position is saved when ListenUntil returns: a new hub (another
	// process) resumes after it, with nothing repeated.
	if cur, err := alice.Cursor(ctx); err != nil || cur != 4 {
		t.Fatalf("saved cursor = %d, %v; want 4", cur, err)
	}
	mustDispatch(t, hub, "x", scope, "3")
	hub2 := newHub(t, s, moitessier.Options{})
	again := mustListener(t, hub2, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: scope, Client: "tab1"})
	c2 := newCollector()
	stop = listen(t, again, c2, moitessier.Resume)
	c2.waitFor(t, 1)
	stop()
	if !slices.Equal(c2.texts(), []string{"3"}) {
		t.Fatalf("after resume elsewhere: %q, want [3]", c2.texts())
	}
	// Another client of alice has its own cursor.
	other := mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: scope, Client: "tab2"})
	if msgs, err := other.Messages(ctx, moitessier.Resume, 0); err != nil || len(msgs) != 0 {
		t.Fatalf("a new client resumed with %d messages, %v", len(msgs), err)
	}
	// Explicit acks never move back.
	if err := other.Ack(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if err := other.Ack(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if cur, _ := other.Cursor(ctx); cur != 5 {
		t.Fatalf("cursor after acks 3 then 2 from 5 = %d, want 5", cur)
	}
	if err := other.Ack(ctx, moitessier.Resume); !errors.Is(err, moitessier.ErrInvalidArgument) {
		t.Fatalf("Ack(Resume): %v", err)
	}
	// A position past the newest message would skip what comes next.
	if err := other.Ack(ctx, 1000); !errors.Is(err, moitessier.ErrInvalidArgument) {
		t.Fatalf("Ack past the head: %v", err)
	}
	// Messages(Resume) reads after the saved cursor without acknowledging.
	al := mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: scope, Client: "tab3"})
	mustDispatch(t, hub, "x", scope, "4")
	for range 2 {
		if msgs, err := al.Messages(ctx, moitessier.Resume, 0); err != nil || len(msgs) != 1 || msgs[0].Text != "4" {
			t.Fatalf("Messages(Resume) = %v, %v", msgs, err)
		}
	}
	subs, err := al.Subscribers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]moitessier.Cursor{"owner/": 0, "alice/tab1": 5, "alice/tab2": 5, "alice/tab3": 5}
	for _, sub := range subs {
		k := sub.Person + "/" + sub.Client
		if w, ok := want[k]; !ok || sub.Cursor != w {
			t.Fatalf("read state %s at %d, want %d (all: %+v)", k, sub.Cursor, w, subs)
		}
		delete(want, k)
	}
	if len(want) != 0 {
		t.Fatalf("read state lacks %v", want)
	}
}

func testClose(t *testing.T, h Harness) {
	s := newStore(t, h)
	var emptied []string
	hub := newHub(t, s, moitessier.Options{Hooks: moitessier.Hooks{
		Emptied: func(ctx context.Context, l moitessier.ListenerInfo) { emptied = append(emptied, l.ID) },
	}})
	ctx := ctxT(t)
	a := mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "room"})
	b := mustListener(t, hub, moitessier.Conditions{Person: "bob", Type: moitessier.Shared, Scope: "room"})
	mustDispatch(t, hub, "alice", "room", "hi")

	// bob is listening when alice leaves; he keeps going.
	c := newCollector()
	stop := listen(t, b, c, 0)
	c.waitFor(t, 1)
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if len(emptied) != 0 {
		t.Fatal("Emptied called while bob remains")
	}
	if _, err := a.Messages(ctx, 0, 0); !errors.Is(err, moitessier.ErrClosed) {
		t.Fatalf("Messages on a closed listener: %v", err)
	}
	if _, err := a.ListenUntil(ctx, nil, c.respond, 0, 0, 0); !errors.Is(err, moitessier.ErrClosed) {
		t.Fatalf("ListenUntil on a closed listener: %v", err)
	}
	if err := a.Close(ctx); !errors.Is(err, moitessier.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	mustDispatch(t, hub, "bob", "room", "still here")
	c.waitFor(t, 2)
	// bob's Close ends his running ListenUntil and deletes the listener.
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := stop(); !errors.Is(err, moitessier.ErrClosed) {
		t.Fatalf("running ListenUntil after Close: %v", err)
	}
	if !slices.Equal(emptied, []string{b.ID()}) {
		t.Fatalf("Emptied calls %v", emptied)
	}
	if _, err := hub.Info(ctx, b.ID()); !errors.Is(err, moitessier.ErrNotFound) {
		t.Fatalf("Info after the last subscriber left: %v", err)
	}
	if d := mustDispatch(t, hub, "x", "room", "nobody"); len(d.Reached) != 0 {
		t.Fatal("a dispatch reached a deleted listener")
	}
	// Reopened, it starts empty: its messages went with it.
	n := mustListener(t, hub, moitessier.Conditions{Person: "carol", Type: moitessier.Shared, Scope: "room"})
	wantTexts(t, n)
	// A Private listener is deleted when its owner leaves.
	p := mustListener(t, hub, moitessier.Conditions{Person: "dave", Type: moitessier.Private, Scope: "inbox"})
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := hub.Info(ctx, p.ID()); !errors.Is(err, moitessier.ErrNotFound) {
		t.Fatalf("Private listener after Close: %v", err)
	}
}

func testGC(t *testing.T, h Harness) {
	s := newStore(t, h)
	clk := newClock()
	var expired []string
	hub := newHub(t, s, moitessier.Options{Now: clk.Now, Lease: time.Hour, Retention: moitessier.Retention{MaxAge: 10 * time.Minute, MaxCount: 5},
		Hooks: moitessier.Hooks{Expired: func(ctx context.Context, l moitessier.ListenerInfo) { expired = append(expired, l.ID) }}})
	ctx := ctxT(t)
	short := mustListener(t, hub, moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "gc.short"})
	long := mustListener(t, hub, moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "gc.long", Lease: 48 * time.Hour})
	mixed := mustListener(t, hub, moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "gc.mixed"})
	clk.Add(30 * time.Minute)
	mustListener(t, hub, moitessier.Conditions{Person: "b", Type: moitessier.Shared, Scope: "gc.mixed"})
	for i := range 8 {
		mustDispatch(t, hub, "a", "gc.long", fmt.Sprint("old", i))
	}
	clk.Add(20 * time.Minute)
	for i := range 7 {
		mustDispatch(t, hub, "a", "gc.long", fmt.Sprint("new", i))
	}
	// 50 minutes in: nothing has expired; retention drops the 8 messages
	// older than 10 minutes, and the count (5) 2 of the 7 new ones.
	res, err := hub.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Expired) != 0 || res.Subscribers != 0 || res.Messages != 10 {
		t.Fatalf("GC at 50m: %+v, want 10 messages removed (8 by age, 2 by count), nothing else", res)
	}
	msgs, err := long.Messages(ctx, 0, 0)
	if err != nil || len(msgs) != 5 || msgs[0].Seq != 11 || msgs[4].Seq != 15 {
		t.Fatalf("kept %s, %v; want seqs 11..15", seqs(msgs), err)
	}
	clk.Add(15 * time.Minute)
	for i := range 3 {
		mustDispatch(t, hub, "a", "gc.short", fmt.Sprint("short", i))
	}
	// 70 minutes in: a's leases (1h) have ended, b's has not. short goes
	// with its 3 messages, and long's 5 are past the age.
	clk.Add(5 * time.Minute)
	res, err = hub.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Expired) != 1 || res.Expired[0].ID != short.ID() || res.Subscribers != 2 || res.Messages != 8 {
		t.Fatalf("GC at 70m: %+v, want short expired, 2 subscribers and 8 messages removed", res)
	}
	if !slices.Equal(expired, []string{short.ID()}) {
		t.Fatalf("Expired hook: %v", expired)
	}
	if _, err := hub.Info(ctx, short.ID()); !errors.Is(err, moitessier.ErrNotFound) {
		t.Fatalf("expired listener: %v", err)
	}
	if _, err := hub.Info(ctx, long.ID()); err != nil {
		t.Fatalf("a listener with a 48h lease: %v", err)
	}
	subs, err := hub.Subscribers(ctx, mixed.ID())
	if err != nil || len(subs) != 1 || subs[0].Person != "b" {
		t.Fatalf("mixed listener's subscribers %+v, %v; want b alone", subs, err)
	}
	// a's handle on it: the listener lives on, a's subscription does not.
	if err := mixed.Ack(ctx, 0); !errors.Is(err, moitessier.ErrNotFound) {
		t.Fatalf("Ack of an expired subscriber: %v, want ErrNotFound", err)
	}
}

func testLeaseRenewal(t *testing.T, h Harness) {
	s := newStore(t, h)
	clk := newClock()
	hub := newHub(t, s, moitessier.Options{Now: clk.Now, Lease: time.Hour, AckInterval: 5 * time.Millisecond})
	ctx := ctxT(t)
	l := mustListener(t, hub, moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "lease"})
	stop := listen(t, l, newCollector(), 0)
	lease := func() time.Time {
		subs, err := l.Subscribers(ctx)
		if err != nil || len(subs) != 1 {
			t.Fatalf("subscribers %v, %v", subs, err)
		}
		return subs[0].LeaseExpires
	}
	// While ListenUntil runs, the hub renews the lease as the clock moves.
	for range 4 {
		clk.Add(50 * time.Minute)
		deadline := time.Now().Add(20 * time.Second)
		for !lease().After(clk.Now().Add(30 * time.Minute)) {
			if time.Now().After(deadline) {
				t.Fatalf("lease %v not renewed at %v", lease(), clk.Now())
			}
			time.Sleep(5 * time.Millisecond)
		}
		if res, err := hub.GC(ctx); err != nil || len(res.Expired) != 0 {
			t.Fatalf("GC while listening: %+v, %v", res, err)
		}
	}
	stop()
	clk.Add(2 * time.Hour)
	if res, err := hub.GC(ctx); err != nil || len(res.Expired) != 1 {
		t.Fatalf("GC after listening stopped: %+v, %v; want the listener expired", res, err)
	}
}

// testRecreateCheckpoint: a ListenUntil of a listener that another hub
// deletes and creates again under the same ID saves its position, when it
// ends, to the incarnation it read, not to the new one, whose first
// messages that position would skip.
func testRecreateCheckpoint(t *testing.T, h Harness) {
	s := newStore(t, h)
	// hub1 saves positions only when its ListenUntil ends.
	hub1 := newHub(t, s, moitessier.Options{AckInterval: time.Hour})
	hub2 := newHub(t, s, moitessier.Options{})
	ctx := ctxT(t)
	c := moitessier.Conditions{Person: "alice", Client: "tab", Type: moitessier.Shared, Scope: "again"}
	a := mustListener(t, hub1, c)
	for i := range 5 {
		mustDispatch(t, hub1, "alice", "again", fmt.Sprint("old", i))
	}
	old := newCollector()
	stopOld := listen(t, a, old, 0)
	old.waitFor(t, 5)
	if err := hub2.Leave(ctx, a.ID(), "alice", "tab"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond) // a creation time of its own
	b := mustListener(t, hub2, c)
	if b.ID() != a.ID() {
		t.Fatal("the recreated listener has another ID")
	}
	for i := range 3 {
		mustDispatch(t, hub2, "alice", "again", fmt.Sprint("new", i))
	}
	if _, err := stopOld(); err != nil && !errors.Is(err, moitessier.ErrClosed) {
		t.Fatalf("the old listen: %v", err)
	}
	if cur, err := b.Cursor(ctx); err != nil || cur != 0 {
		t.Fatalf("alice's position on the recreated listener = %d, %v; want 0", cur, err)
	}
	msgs, err := b.Messages(ctx, moitessier.Resume, 0)
	if err != nil || !slices.Equal(textsOf(msgs), []string{"new0", "new1", "new2"}) {
		t.Fatalf("Messages(Resume) on the recreated listener = %q, %v; want its three messages", textsOf(msgs), err)
	}
}

// testRecreate deletes a listener through one hub while another hub still
// caches its messages for a running ListenUntil, then creates it again under
// the same ID: the new listener starts empty, and its subscribers never see
// the old one's messages.
func testRecreate(t *testing.T, h Harness) {
	s := newStore(t, h)
	hub1 := newHub(t, s, moitessier.Options{})
	hub2 := newHub(t, s, moitessier.Options{})
	ctx := ctxT(t)
	c := moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "again"}
	a := mustListener(t, hub1, c)
	for i := range 5 {
		mustDispatch(t, hub1, "alice", "again", fmt.Sprint("old", i))
	}
	old := newCollector()
	stopOld := listen(t, a, old, 0)
	old.waitFor(t, 5)
	a2, err := hub2.Open(ctx, a.ID(), "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := a2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	b := mustListener(t, hub1, moitessier.Conditions{Person: "bob", Type: moitessier.Shared, Scope: "again"})
	if b.ID() != a.ID() {
		t.Fatal("the recreated listener has another ID")
	}
	mustDispatch(t, hub1, "bob", "again", "fresh")
	fresh := newCollector()
	stop := listen(t, b, fresh, 0)
	fresh.waitFor(t, 1)
	if cur, err := stop(); err != nil || cur != 1 {
		t.Fatalf("listen on the recreated listener = %d, %v", cur, err)
	}
	if got := fresh.texts(); !slices.Equal(got, []string{"fresh"}) {
		t.Fatalf("the recreated listener delivered %q, want [fresh]", got)
	}
	if cur, err := b.Cursor(ctx); err != nil || cur != 1 {
		t.Fatalf("saved cursor on the recreated listener = %d, %v; want 1", cur, err)
	}
	stopOld()
}
