package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
)

// testStart: a new subscriber starts at the newest message by default, at
// the oldest kept with StartOldest, at a time with StartSince; a subscriber
// that exists keeps its cursor whatever the Start. Store.Join gives a new
// subscriber the smaller of sub.Cursor and the head.
func testStart(t *testing.T, h Harness) {
	s := newStore(t, h)
	clk := newClock()
	t0 := clk.Now()
	hub := newHub(t, s, moitessier.Options{Now: clk.Now, Retention: moitessier.Retention{MaxCount: 3}})
	ctx := ctxT(t)
	scope := "room.start"
	cond := func(person string, start moitessier.Start) moitessier.Conditions {
		return moitessier.Conditions{Person: person, Type: moitessier.Shared, Scope: scope, Client: "tab", Start: start}
	}
	// A listener with no history yet: every Start is its head, 0.
	first := mustListener(t, hub, cond("owner", moitessier.StartSince(t0.Add(-time.Hour))))
	if c, err := first.Cursor(ctx); err != nil || c != 0 {
		t.Fatalf("start since on a new listener: cursor %d, %v; want 0", c, err)
	}
	for _, text := range []string{"a", "b", "c", "d"} {
		mustDispatch(t, hub, "x", scope, text)
		clk.Add(time.Hour)
	}
	// Retention keeps the newest 3: "a" goes.
	if _, err := hub.GC(ctx); err != nil {
		t.Fatal(err)
	}
	resume := func(l *moitessier.Listener) []string {
		t.Helper()
		msgs, err := l.Messages(ctx, moitessier.Resume, 0)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, m := range msgs {
			out = append(out, m.Text)
		}
		return out
	}
	for _, tc := range []struct {
		person string
		start  moitessier.Start
		want   []string
	}{
		{"newest", moitessier.Start{}, nil},
		{"oldest", moitessier.StartOldest, []string{"b", "c", "d"}},
		{"since-b", moitessier.StartSince(t0.Add(time.Hour)), []string{"b", "c", "d"}},
		{"since-between", moitessier.StartSince(t0.Add(90 * time.Minute)), []string{"c", "d"}},
		{"since-before-all", moitessier.StartSince(t0.Add(-time.Hour)), []string{"b", "c", "d"}},
		{"since-future", moitessier.StartSince(t0.Add(100 * time.Hour)), nil},
	} {
		l := mustListener(t, hub, cond(tc.person, tc.start))
		if got := resume(l); !slices.Equal(got, tc.want) {
			t.Fatalf("start %v: resume gives %q, want %q", tc.start, got, tc.want)
		}
		// Joining again, with another Start, moves nothing.
		again := mustListener(t, hub, cond(tc.person, moitessier.StartOldest))
		if got := resume(again); !slices.Equal(got, tc.want) {
			t.Fatalf("start %v, joined again with StartOldest: resume gives %q, want %q", tc.start, got, tc.want)
		}
	}
	if got, want := moitessier.StartOldest.String(), "oldest"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}

	// The store's own rule.
	info := first.Info()
	now := clk.Now()
	for _, tc := range []struct {
		client string
		cursor moitessier.Cursor
		want   moitessier.Cursor
	}{
		{"r", moitessier.Resume, 4},
		{"z", 0, 0},
		{"two", 2, 2},
		{"past", 9, 4},
	} {
		_, sub, _, err := s.Join(ctx, info, moitessier.Subscriber{Person: "direct", Client: tc.client, Cursor: tc.cursor, Joined: now, LeaseExpires: now.Add(time.Hour)}, moitessier.Quota{})
		if err != nil || sub.Cursor != tc.want {
			t.Fatalf("Store.Join with Cursor %d: cursor %d, %v; want %d", tc.cursor, sub.Cursor, err, tc.want)
		}
		_, sub, _, err = s.Join(ctx, info, moitessier.Subscriber{Person: "direct", Client: tc.client, Cursor: 1, Joined: now, LeaseExpires: now.Add(time.Hour)}, moitessier.Quota{})
		if err != nil || sub.Cursor != tc.want {
			t.Fatalf("Store.Join again: cursor %d, %v; want %d kept", sub.Cursor, err, tc.want)
		}
	}
}
