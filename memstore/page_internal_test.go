package memstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
)

// joinMany makes a listener with n subscribers.
func joinMany(tb testing.TB, s *Store, n int) moitessier.ListenerInfo {
	tb.Helper()
	ctx := context.Background()
	now := time.Now()
	l := moitessier.ListenerInfo{ID: "s1", Type: moitessier.Shared, Person: "p00000", Scopes: []string{"room"}, Created: now}
	for i := range n {
		sub := moitessier.Subscriber{Person: fmt.Sprintf("p%05d", i), Joined: now, LeaseExpires: now.Add(time.Hour)}
		if _, _, _, err := s.Join(ctx, l, sub, moitessier.Quota{}); err != nil {
			tb.Fatal(err)
		}
	}
	return l
}

// TestSubscriberPageCost: a page of subscribers looks at the subscribers
// it returns, not at every subscriber of the listener (the Store contract:
// its cost grows with what it returns), and stays in order as subscribers
// come and go.
func TestSubscriberPageCost(t *testing.T) {
	ctx := context.Background()
	s := New()
	l := joinMany(t, s, 5000)
	s.scanned.Store(0)
	page, err := s.Subscribers(ctx, l.ID, moitessier.SubscriberRange{Person: "p02500", Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != 10 || page[0].Person != "p02500" || page[9].Person != "p02509" {
		t.Fatalf("page %+v", page)
	}
	if n := s.scanned.Load(); n > 10 {
		t.Fatalf("a page of 10 of 5000 subscribers looked at %d", n)
	}
	// Leaving and sweeping keep the order: p02501 left, p02503 expired.
	if _, err := s.Leave(ctx, l.ID, "p02501", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Checkpoint(ctx, []moitessier.Checkpoint{{Listener: l.ID, Person: "p02503", LeaseExpires: time.Now().Add(-time.Minute)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sweep(ctx, moitessier.SweepParams{Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	page, err = s.Subscribers(ctx, l.ID, moitessier.SubscriberRange{Person: "p02500", Limit: 4})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, sub := range page {
		got = append(got, sub.Person)
	}
	if fmt.Sprint(got) != "[p02500 p02502 p02504 p02505]" {
		t.Fatalf("page after a leave and a sweep: %v", got)
	}
}

// BenchmarkSubscriberPage reads a page of 100 subscribers from the middle
// of a listener with 1 000 and with 100 000: the cost is the page's.
func BenchmarkSubscriberPage(b *testing.B) {
	for _, n := range []int{1000, 100000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			s := New()
			l := joinMany(b, s, n)
			r := moitessier.SubscriberRange{Person: fmt.Sprintf("p%05d", n/2), Limit: 100}
			b.ResetTimer()
			for b.Loop() {
				if _, err := s.Subscribers(context.Background(), l.ID, r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
