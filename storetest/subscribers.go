package storetest

import (
	"fmt"
	"slices"
	"testing"

	"github.com/likestripes/moitessier"
)

// testSubscriberPages checks Store.Subscribers' ranges: (Person, Client)
// byte order, an inclusive start, a limit, one subscriber by a range of
// one, and ErrNotFound only for a missing listener.
func testSubscriberPages(t *testing.T, h Harness) {
	s := newStore(t, h)
	hub := newHub(t, s, moitessier.Options{})
	ctx := ctxT(t)
	// In byte order "B" < "a" < "a\u00e9" < "b", and a client "" comes first.
	subs := [][2]string{{"b", ""}, {"a", "y"}, {"B", "z"}, {"a", ""}, {"a\u00e9", ""}, {"a", "x"}}
	var room *moitessier.Listener
	for _, pc := range subs {
		room = mustListener(t, hub, moitessier.Conditions{Person: pc[0], Client: pc[1], Type: moitessier.Shared, Scope: "pages"})
	}
	key := func(ss []moitessier.Subscriber) []string {
		out := make([]string, len(ss))
		for i, s := range ss {
			out[i] = fmt.Sprintf("%s/%s", s.Person, s.Client)
		}
		return out
	}
	page := func(r moitessier.SubscriberRange) []string {
		t.Helper()
		ss, err := hub.SubscriberPage(ctx, room.ID(), r)
		if err != nil {
			t.Fatalf("SubscriberPage(%+v): %v", r, err)
		}
		return key(ss)
	}
	all := []string{"B/z", "a/", "a/x", "a/y", "aé/", "b/"}
	for _, tc := range []struct {
		r    moitessier.SubscriberRange
		want []string
	}{
		{moitessier.SubscriberRange{}, all},
		{moitessier.SubscriberRange{Limit: 2}, all[:2]},
		{moitessier.SubscriberRange{Person: "a", Limit: 2}, []string{"a/", "a/x"}},
		{moitessier.SubscriberRange{Person: "a", Client: "x", Limit: 1}, []string{"a/x"}},
		{moitessier.SubscriberRange{Person: "a", Client: "xx"}, []string{"a/y", "aé/", "b/"}},
		{moitessier.SubscriberRange{Person: "a\u00e9", Client: "", Limit: 10}, []string{"aé/", "b/"}},
		{moitessier.SubscriberRange{Person: "c"}, []string{}},
	} {
		if got := page(tc.r); !slices.Equal(got, tc.want) {
			t.Errorf("SubscriberPage(%+v) = %q, want %q", tc.r, got, tc.want)
		}
	}
	// Paging through by the last one seen gives each subscriber once.
	var got []string
	r := moitessier.SubscriberRange{Limit: 2}
	for {
		ss, err := hub.SubscriberPage(ctx, room.ID(), r)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) > 0 && len(ss) > 0 && key(ss[:1])[0] == got[len(got)-1] {
			ss = ss[1:]
		}
		if len(ss) == 0 {
			break
		}
		got = append(got, key(ss)...)
		last := ss[len(ss)-1]
		r = moitessier.SubscriberRange{Person: last.Person, Client: last.Client, Limit: 3}
	}
	if !slices.Equal(got, all) {
		t.Fatalf("paged through %q, want %q", got, all)
	}
	// Each subscriber's own cursor is found by a range of one.
	mustDispatch(t, hub, "x", "pages", "m1")
	a := mustListener(t, hub, moitessier.Conditions{Person: "a", Client: "x", Type: moitessier.Shared, Scope: "pages"})
	if err := a.Ack(ctx, 1); err != nil {
		t.Fatal(err)
	}
	for _, pc := range subs {
		l := mustListener(t, hub, moitessier.Conditions{Person: pc[0], Client: pc[1], Type: moitessier.Shared, Scope: "pages"})
		want := moitessier.Cursor(0)
		if pc == [2]string{"a", "x"} {
			want = 1
		}
		if c, err := l.Cursor(ctx); err != nil || c != want {
			t.Errorf("Cursor of %q/%q = %d, %v; want %d", pc[0], pc[1], c, err, want)
		}
	}
	if _, err := hub.SubscriberPage(ctx, room.ID(), moitessier.SubscriberRange{Limit: -1}); err == nil {
		t.Error("a negative limit was accepted")
	} else {
		wantErr(t, err, moitessier.ErrInvalidArgument)
	}
	_, err := hub.SubscriberPage(ctx, "s0000", moitessier.SubscriberRange{Limit: 1})
	wantErr(t, err, moitessier.ErrNotFound)
}
