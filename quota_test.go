package moitessier_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/memstore"
)

// TestQuotaFor: Options.QuotaFor gives one person another quota than
// Options.Quota (its zero fields are Quota's); a join is held to the
// listener bounds of the listener's owner and the subscription bound of
// the subscriber.
func TestQuotaFor(t *testing.T) {
	ctx := context.Background()
	var asked []string
	hub, err := moitessier.New(memstore.New(), moitessier.Options{
		GCInterval: -1,
		Quota:      moitessier.Quota{Shared: 2, Subscriptions: 5},
		QuotaFor: func(person string) moitessier.Quota {
			asked = append(asked, person)
			switch person {
			case "svc":
				return moitessier.Quota{Shared: 5}
			case "bot":
				return moitessier.Quota{Shared: -1, Subscriptions: -1}
			case "kid":
				return moitessier.Quota{Subscriptions: 1}
			}
			return moitessier.Quota{}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	shared := func(person string, i int) moitessier.Conditions {
		return moitessier.Conditions{Person: person, Type: moitessier.Shared, Scopes: []string{"room.1", fmt.Sprintf("room.%s.%d", person, i)}}
	}
	// count creates Shared listeners for person until the quota refuses one.
	count := func(person string, most int) int {
		t.Helper()
		for i := range most + 1 {
			if _, err := hub.NewListener(ctx, shared(person, i)); err != nil {
				var qe *moitessier.QuotaError
				if !errors.As(err, &qe) || qe.Kind != moitessier.QuotaShared {
					t.Fatalf("%s's Shared listener %d: %v", person, i+1, err)
				}
				return i
			}
		}
		return most + 1
	}
	if n := count("alice", 10); n != 2 {
		t.Fatalf("alice created %d Shared listeners, want Options.Quota's 2", n)
	}
	if n := count("svc", 10); n != 5 {
		t.Fatalf("svc created %d Shared listeners, want QuotaFor's 5", n)
	}
	if len(asked) == 0 {
		t.Fatal("QuotaFor was not called")
	}
	// Subscriptions: a zero field is Options.Quota's (5, which svc holds
	// already: a join of another's listener is refused).
	if _, err := hub.NewListener(ctx, moitessier.Conditions{Person: "bob", Type: moitessier.Shared, Scope: "hall"}); err != nil {
		t.Fatal(err)
	}
	if _, err := hub.NewListener(ctx, moitessier.Conditions{Person: "svc", Type: moitessier.Shared, Scope: "hall"}); !errors.Is(err, moitessier.ErrQuotaExceeded) {
		t.Fatalf("svc past Options.Quota.Subscriptions: %v", err)
	}
	// kid joins bob's listener: kid's subscription bound (1) counts, not bob's.
	id, err := moitessier.ListenerID(moitessier.Conditions{Person: "bob", Type: moitessier.Shared, Scope: "hall"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hub.Open(ctx, id, "kid", ""); err != nil {
		t.Fatal(err)
	}
	var qe *moitessier.QuotaError
	if _, err := hub.Open(ctx, id, "kid", "tab"); !errors.As(err, &qe) || qe.Kind != moitessier.QuotaSubscriptions || qe.Limit != 1 {
		t.Fatalf("kid's second subscription: %v, want kid's quota of 1", err)
	}
	// A negative field is no limit.
	if n := count("bot", 8); n != 9 {
		t.Fatalf("bot created %d Shared listeners, want no limit", n)
	}
}
