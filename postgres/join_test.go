package postgres_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/likestripes/moitessier"
)

// TestJoinRacesLeave: a Join that finds a listener its last subscriber is
// leaving at that moment either joins it before it is deleted, or runs
// again and creates it anew; it never fails, and its subscriber is there
// when it returns.
func TestJoinRacesLeave(t *testing.T) {
	needPostgres(t)
	s := mustStore(t)
	ctx := ctxT(t)
	now := time.Now()
	sub := func(person string) moitessier.Subscriber { return subscriberAt(person, now) }
	recreated := 0
	for i := range 100 {
		l := moitessier.ListenerInfo{ID: fmt.Sprintf("race-%d", i), Type: moitessier.Shared, Person: "alice", Scopes: []string{"race." + fmt.Sprint(i)}, Created: now}
		if _, _, _, err := s.Join(ctx, l, sub("alice"), moitessier.Quota{}); err != nil {
			t.Fatal(err)
		}
		left := make(chan error, 1)
		go func() {
			_, err := s.Leave(ctx, l.ID, "alice", "")
			left <- err
		}()
		info, got, created, err := s.Join(ctx, l, sub("bob"), moitessier.Quota{Listeners: 1000, Subscriptions: 1000})
		if err := <-left; err != nil {
			t.Fatalf("Leave: %v", err)
		}
		if err != nil {
			t.Fatalf("Join racing Leave: %v", err)
		}
		if created {
			recreated++
		}
		subs, err := s.Subscribers(ctx, l.ID, moitessier.SubscriberRange{})
		if err != nil {
			t.Fatalf("Subscribers after the race: %v", err)
		}
		if !slices.ContainsFunc(subs, func(s moitessier.Subscriber) bool { return s.Person == "bob" }) || got.Person != "bob" || info.ID != l.ID {
			t.Fatalf("bob's Join returned %+v %+v, but the subscribers are %+v", info, got, subs)
		}
		if _, err := s.Leave(ctx, l.ID, "bob", ""); err != nil && !errors.Is(err, moitessier.ErrNotFound) {
			t.Fatal(err)
		}
	}
	t.Logf("%d of 100 Joins created the listener again", recreated)
}

// TestJoinQuotaError: past a quota, Join returns a *moitessier.QuotaError
// naming the bound and its person, and writes nothing.
func TestJoinQuotaError(t *testing.T) {
	needPostgres(t)
	s := mustStore(t)
	ctx := ctxT(t)
	now := time.Now()
	sub := func(person string) moitessier.Subscriber { return subscriberAt(person, now) }
	l := func(id string, typ moitessier.ListenerType) moitessier.ListenerInfo {
		return moitessier.ListenerInfo{ID: id, Type: typ, Person: "alice", Scopes: []string{"q." + id}, Created: now}
	}
	if _, _, _, err := s.Join(ctx, l("h1", moitessier.Handler), sub("alice"), moitessier.Quota{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		l      moitessier.ListenerInfo
		sub    string
		q      moitessier.Quota
		person string
		kind   moitessier.QuotaKind
		limit  int
	}{
		{l("x1", moitessier.Shared), "alice", moitessier.Quota{Listeners: 1}, "alice", moitessier.QuotaListeners, 1},
		{l("h2", moitessier.Handler), "alice", moitessier.Quota{Handlers: 1}, "alice", moitessier.QuotaHandlers, 1},
		{l("s1", moitessier.Shared), "alice", moitessier.Quota{Shared: -1, Handlers: 1, Subscriptions: 1}, "alice", moitessier.QuotaSubscriptions, 1},
		{l("h1", moitessier.Handler), "bob", moitessier.Quota{Listeners: 1, Subscriptions: 1}, "", "", 0},
	} {
		_, _, _, err := s.Join(ctx, tc.l, sub(tc.sub), tc.q)
		var qe *moitessier.QuotaError
		if tc.kind == "" {
			if err != nil {
				t.Errorf("Join(%s, %s, %+v) = %v, want no error", tc.l.ID, tc.sub, tc.q, err)
			}
			continue
		}
		if !errors.As(err, &qe) || !errors.Is(err, moitessier.ErrQuotaExceeded) || qe.Person != tc.person || qe.Kind != tc.kind || qe.Limit != tc.limit {
			t.Errorf("Join(%s, %s, %+v) = %v, want a QuotaError of %s on %s, limit %d", tc.l.ID, tc.sub, tc.q, err, tc.person, tc.kind, tc.limit)
		}
		if _, err := s.Listener(ctx, tc.l.ID); tc.l.ID != "h1" && !errors.Is(err, moitessier.ErrNotFound) {
			t.Errorf("Join past a quota left listener %s: %v", tc.l.ID, err)
		}
	}
}

// TestDeleteTakesRows: a listener deleted, by Leave or by a DELETE another
// process runs on the table, leaves none of its scopes or subscribers
// behind.
func TestDeleteTakesRows(t *testing.T) {
	s := mustStore(t)
	ctx := ctxT(t)
	q := pgx.Identifier{s.Schema()}.Sanitize()
	left := joinScopes(t, s, []string{"a.1", "a.*"})
	other := joinScopes(t, s, []string{"b.1", "b.>"})
	if _, err := s.Leave(ctx, left.ID, "p", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pool().Exec(ctx, "DELETE FROM "+q+".listeners WHERE id = $1", other.ID); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{left.ID, other.ID} {
		var scopes, subs int
		err := s.Pool().QueryRow(ctx, "SELECT (SELECT count(*) FROM "+q+".listener_scopes WHERE listener = $1), (SELECT count(*) FROM "+q+".subscribers WHERE listener = $1)", id).Scan(&scopes, &subs)
		if err != nil {
			t.Fatal(err)
		}
		if scopes != 0 || subs != 0 {
			t.Fatalf("deleted listener %s left %d scope rows and %d subscribers", id, scopes, subs)
		}
	}
}

// subscriberAt is a subscriber of person joining at now, from the
// listener's head, with an hour's lease.
func subscriberAt(person string, now time.Time) moitessier.Subscriber {
	return moitessier.Subscriber{Person: person, Cursor: moitessier.Resume, Joined: now, LeaseExpires: now.Add(time.Hour)}
}
