package postgres_test

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/postgres"
)

// joinAs creates a listener of type typ for person on scopes, with one
// subscriber, in s.
func joinAs(t *testing.T, s moitessier.Store, typ moitessier.ListenerType, person string, scopes ...string) moitessier.ListenerInfo {
	t.Helper()
	id, err := moitessier.ListenerID(moitessier.Conditions{Person: person, Type: typ, Scopes: scopes})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	l, _, created, err := s.Join(ctxT(t), moitessier.ListenerInfo{ID: id, Type: typ, Person: person, Scopes: scopes, Created: now},
		moitessier.Subscriber{Person: person, Joined: now, LeaseExpires: now.Add(time.Hour)}, moitessier.Quota{})
	if err != nil || !created {
		t.Fatalf("Join(%s, %v): created %v, %v", id, scopes, created, err)
	}
	return l
}

// cachedAnswer is what s.MatchAppend answers for scope, which must come
// from its cache: the IDs of the listeners, sorted, and the stamp.
func cachedAnswer(t *testing.T, s *postgres.Store, scope string) ([]string, moitessier.MatchStamp) {
	t.Helper()
	ls, stamp, msgs, appended, err := s.MatchAppend(ctxT(t), batch(scope, nil), "probe", moitessier.Selection{Sender: "p"})
	if err != nil || appended || len(msgs) != 0 || stamp == nil {
		t.Fatalf("MatchAppend(%s): appended %v, %d messages, stamp %v, %v; want a cached answer", scope, appended, len(msgs), stamp, err)
	}
	var ids []string
	for _, l := range ls {
		ids = append(ids, l.ID)
	}
	slices.Sort(ids)
	return ids, stamp
}

// appendWith appends one message to each of ids on scope with stamp, as a
// hub does from a cached answer.
func appendWith(t *testing.T, s *postgres.Store, scope string, stamp moitessier.MatchStamp, ids ...string) error {
	t.Helper()
	texts := map[string]string{}
	for _, id := range ids {
		texts[id] = "from the cache"
	}
	b := batch(scope, texts)
	b.Stamp = stamp
	_, _, err := s.Append(ctxT(t), b)
	return err
}

func sortedIDs(ls ...moitessier.ListenerInfo) []string {
	var ids []string
	for _, l := range ls {
		ids = append(ids, l.ID)
	}
	slices.Sort(ids)
	return ids
}

// TestJoinSeedsMatch: a join that creates a listener leaves its process
// the scope's Match answer, with the stamp the scope has after it, so that
// a first dispatch goes out as an append from a cached answer: on a scope
// no listener had, and on one with an answer cached, to which the join
// adds its listener; alone, or in a statement with other joins. The
// stamps are right: an append with them writes. A join in another
// process, or of a listener with a pattern, puts them out of date, and an
// append with one then writes nothing (moitessier.ErrStale).
func TestJoinSeedsMatch(t *testing.T) {
	schema := newSchema(t)
	a, b := openStore(t, schema), openStore(t, schema)

	room := joinAs(t, a, moitessier.Shared, "p", "room")
	ids, stamp := cachedAnswer(t, a, "room")
	if want := sortedIDs(room); !slices.Equal(ids, want) {
		t.Fatalf("answer of room after its first join: %v, want %v", ids, want)
	}
	if err := appendWith(t, a, "room", stamp, ids...); err != nil {
		t.Fatalf("append to room with the stamp of its first join: %v", err)
	}
	// A second listener of the scope, and one of two scopes, one of them
	// new, in this process: the answers grow, with their stamps.
	bobs := joinAs(t, a, moitessier.Private, "bob", "room")
	both := joinAs(t, a, moitessier.Handler, "carol", "room", "hall")
	ids, stamp = cachedAnswer(t, a, "room")
	if want := sortedIDs(room, bobs, both); !slices.Equal(ids, want) {
		t.Fatalf("answer of room after three joins: %v, want %v", ids, want)
	}
	if err := appendWith(t, a, "room", stamp, ids...); err != nil {
		t.Fatalf("append to room with the seeded stamp: %v", err)
	}
	hallIDs, hallStamp := cachedAnswer(t, a, "hall")
	if want := sortedIDs(both); !slices.Equal(hallIDs, want) {
		t.Fatalf("answer of hall: %v, want %v", hallIDs, want)
	}
	if err := appendWith(t, a, "hall", hallStamp, hallIDs...); err != nil {
		t.Fatalf("append to hall with the seeded stamp: %v", err)
	}

	// A long answer is dropped rather than copied at each join: the
	// dispatch after matches (and appends).
	for i := range postgres.MaxSeeded + 1 {
		joinAs(t, a, moitessier.Private, fmt.Sprint("guest", i), "lobby")
	}
	if _, _, _, appended, err := a.MatchAppend(ctxT(t), batch("lobby", nil), "matched", moitessier.Selection{Sender: "p"}); err != nil || !appended {
		t.Fatalf("MatchAppend(lobby) after %d joins: appended %v, %v; want a match", postgres.MaxSeeded+1, appended, err)
	}

	// A join in another process: a's answer is out of date, and its stamp
	// says so.
	joinAs(t, b, moitessier.Private, "dave", "room")
	ids, stamp = cachedAnswer(t, a, "room")
	if err := appendWith(t, a, "room", stamp, ids...); !errors.Is(err, moitessier.ErrStale) {
		t.Fatalf("append to room after a join elsewhere: %v, want ErrStale", err)
	}

	// Joins that go out together, two of them on one scope, in a store
	// whose join turn is held meanwhile.
	f := newJoinsFixture(t, time.Hour)
	release, held := f.holdTurn(t, "lock")
	together := []moitessier.ListenerInfo{
		{ID: "porch-1", Type: moitessier.Shared, Person: "owner", Scopes: []string{"porch"}, Created: f.now},
		{ID: "porch-2", Type: moitessier.Private, Person: "erin", Scopes: []string{"porch"}, Created: f.now},
		{ID: "attic-1", Type: moitessier.Shared, Person: "owner", Scopes: []string{"attic"}, Created: f.now},
	}
	var wg sync.WaitGroup
	for _, l := range together {
		wg.Go(func() {
			if _, _, err := f.join(f.ctx, l, l.Person, moitessier.Quota{}); err != nil {
				t.Errorf("join of %s: %v", l.ID, err)
			}
		})
	}
	waitFor(t, "the joins to queue", func() bool { return f.s.JoinsQueued() == len(together) })
	release()
	held()
	wg.Wait()
	if f.s.JoinsBatched() != int64(len(together)) {
		t.Fatalf("%d joins went out together, want %d", f.s.JoinsBatched(), len(together))
	}
	for _, c := range []struct {
		scope string
		want  []string
	}{{"porch", sortedIDs(together[:2]...)}, {"attic", sortedIDs(together[2])}} {
		ids, stamp := cachedAnswer(t, f.s, c.scope)
		if !slices.Equal(ids, c.want) {
			t.Fatalf("answer of %s after joins together: %v, want %v", c.scope, ids, c.want)
		}
		if err := appendWith(t, f.s, c.scope, stamp, ids...); err != nil {
			t.Fatalf("append to %s with the stamp of joins together: %v", c.scope, err)
		}
	}

	// A listener with a pattern: every answer of a is dropped (hall's was
	// still right), and the next dispatch to hall matches, finding both.
	joinAs(t, a, moitessier.Shared, "p", "*")
	ls, _, _, _, err := a.MatchAppend(ctxT(t), batch("hall", nil), "matched", moitessier.Selection{Sender: "p"})
	if err != nil || len(ls) != 2 {
		t.Fatalf("MatchAppend(hall) after a join with a pattern: %+v, %v; want a match of 2 listeners", ls, err)
	}
}

// TestUpgradeScopeTags: a listener made before scope tags (migration 10)
// has none; a listener joining its scope after the upgrade changes the
// scope's version by its tag, so its process's answer, extended, stays
// right, and the old listener's deletion still changes the version.
func TestUpgradeScopeTags(t *testing.T) {
	schema := newSchema(t)
	ctx := ctxT(t)
	exec, q := schemaBefore(t, schema, "_scope_tags.sql")
	// A join as an older version of this package sent it.
	now := time.Now().UnixNano()
	exec("SELECT * FROM "+q+".join_listener('old', 1, 'p', '', ARRAY['old.room'], ARRAY[false], $1, 'p', 'c', $1, $2, 9223372036854775807, 0, 0, 0, 1, 2)",
		now, now+int64(time.Hour))

	s := openStore(t, schema) // migrates
	ls, stamp, err := s.MatchCached(ctx, "old.room")
	if err != nil || len(ls) != 1 || stamp == nil {
		t.Fatalf("MatchCached(old.room) = %v, %v, %v", ls, stamp, err)
	}
	fresh := joinAs(t, s, moitessier.Shared, "p", "old.room")
	ids, stamp := cachedAnswer(t, s, "old.room")
	if want := sortedIDs(ls[0], fresh); !slices.Equal(ids, want) {
		t.Fatalf("answer of old.room after a join: %v, want %v", ids, want)
	}
	if err := appendWith(t, s, "old.room", stamp, ids...); err != nil {
		t.Fatalf("append to old.room with the stamp of a join after the upgrade: %v", err)
	}
	if _, err := s.Leave(ctx, "old", "p", "c"); err != nil {
		t.Fatal(err)
	}
	if err := appendWith(t, s, "old.room", stamp, ids...); !errors.Is(err, moitessier.ErrStale) {
		t.Fatalf("append to old.room after its untagged listener left: %v, want ErrStale", err)
	}
}

// TestLeaveUnseedsMatch: a listener's deletion in a process, by Leave or by
// Sweep, takes it out of the process's cached Match answers of its scopes,
// at the stamp the scope has after it, so that the next dispatch still goes
// out from a cached answer, and writes; an answer left with no listener is
// dropped, and the deletion of a listener with a pattern drops them all.
func TestLeaveUnseedsMatch(t *testing.T) {
	schema := newSchema(t)
	ctx := ctxT(t)
	s := openStore(t, schema)

	room := joinAs(t, s, moitessier.Shared, "p", "room")
	bobs := joinAs(t, s, moitessier.Private, "bob", "room", "hall")
	carols := joinAs(t, s, moitessier.Private, "carol", "room", "hall")
	if deleted, err := s.Leave(ctx, bobs.ID, "bob", ""); err != nil || !deleted {
		t.Fatalf("Leave(%s) = %v, %v; want the listener deleted", bobs.ID, deleted, err)
	}
	for _, c := range []struct {
		scope string
		want  []string
	}{{"room", sortedIDs(room, carols)}, {"hall", sortedIDs(carols)}} {
		ids, stamp := cachedAnswer(t, s, c.scope)
		if !slices.Equal(ids, c.want) {
			t.Fatalf("answer of %s after a leave: %v, want %v", c.scope, ids, c.want)
		}
		if err := appendWith(t, s, c.scope, stamp, ids...); err != nil {
			t.Fatalf("append to %s with the stamp its answer has after a leave: %v", c.scope, err)
		}
	}

	// The last listener of hall: its answer is dropped, not left empty.
	if _, err := s.Leave(ctx, carols.ID, "carol", ""); err != nil {
		t.Fatal(err)
	}
	if s.HasMatch("hall") {
		t.Fatal("an answer of hall is cached after its last listener left")
	}

	// A subscriber whose lease ended, swept: the same.
	id, err := moitessier.ListenerID(moitessier.Conditions{Person: "dave", Type: moitessier.Private, Scopes: []string{"room"}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	daves, _, _, err := s.Join(ctx, moitessier.ListenerInfo{ID: id, Type: moitessier.Private, Person: "dave", Scopes: []string{"room"}, Created: now},
		moitessier.Subscriber{Person: "dave", Joined: now, LeaseExpires: now.Add(time.Millisecond)}, moitessier.Quota{})
	if err != nil {
		t.Fatal(err)
	}
	if ids, _ := cachedAnswer(t, s, "room"); !slices.Equal(ids, sortedIDs(room, daves)) {
		t.Fatalf("answer of room after dave's join: %v", ids)
	}
	res, err := s.Sweep(ctx, moitessier.SweepParams{Now: now.Add(time.Second), BatchSize: 10})
	if err != nil || len(res.Expired) != 1 {
		t.Fatalf("Sweep: %d listeners expired, %v; want dave's", len(res.Expired), err)
	}
	ids, stamp := cachedAnswer(t, s, "room")
	if want := sortedIDs(room); !slices.Equal(ids, want) {
		t.Fatalf("answer of room after a sweep: %v, want %v", ids, want)
	}
	if err := appendWith(t, s, "room", stamp, ids...); err != nil {
		t.Fatalf("append to room with the stamp its answer has after a sweep: %v", err)
	}

	// A listener with a pattern comes and goes: no answer is left.
	wild := joinAs(t, s, moitessier.Shared, "p", "yard.*")
	joinAs(t, s, moitessier.Shared, "p", "porch")
	if _, _, _, _, err := s.MatchAppend(ctx, batch("porch", nil), "matched", moitessier.Selection{Sender: "p"}); err != nil {
		t.Fatal(err)
	}
	if !s.HasMatch("porch") {
		t.Fatal("no answer of porch cached after its Match")
	}
	if deleted, err := s.Leave(ctx, wild.ID, "p", ""); err != nil || !deleted {
		t.Fatalf("Leave(%s) = %v, %v; want the listener deleted", wild.ID, deleted, err)
	}
	for _, scope := range []string{"porch", "room"} {
		if s.HasMatch(scope) {
			t.Fatalf("an answer of %s is cached after a listener with a pattern left", scope)
		}
	}
}

// TestLeaveRacesRejoin: a listener deleted in a process and made again
// under its ID (the same person's conditions) before the deletion reaches
// the process's cached answers leaves no answer that holds the wrong
// creation, or lacks the new one: the new creation's seed, coming first,
// drops the answer, and so does the deletion's update of an answer that a
// Match read meanwhile (it holds the new creation, not the deleted one),
// rather than take the new creation out.
func TestLeaveRacesRejoin(t *testing.T) {
	s := openStore(t, newSchema(t))
	ctx := ctxT(t)
	room := joinAs(t, s, moitessier.Shared, "p", "room")
	bob := joinAs(t, s, moitessier.Private, "bob", "room")

	var again moitessier.ListenerInfo
	if _, err := s.LeaveThen(ctx, bob.ID, "bob", "", func() { again = joinAs(t, s, moitessier.Private, "bob", "room") }); err != nil {
		t.Fatal(err)
	}
	if again.ID != bob.ID || again.Created.Equal(bob.Created) {
		t.Fatalf("bob's listener made again: %s at %v, first %s at %v; want its ID, another creation", again.ID, again.Created, bob.ID, bob.Created)
	}
	if s.HasMatch("room") {
		ids, stamp := cachedAnswer(t, s, "room")
		if want := sortedIDs(room, again); !slices.Equal(ids, want) {
			t.Fatalf("answer of room after a leave and a join again: %v, want %v", ids, want)
		}
		if err := appendWith(t, s, "room", stamp, ids...); err != nil {
			t.Fatalf("append to room with its answer's stamp: %v", err)
		}
	}

	// A Match reads the new creation before the deletion's update.
	if _, err := s.LeaveThen(ctx, again.ID, "bob", "", func() {
		again = joinAs(t, s, moitessier.Private, "bob", "room")
		s.ForgetMatches()
		if _, _, err := s.MatchCached(ctx, "room"); err != nil {
			t.Fatal(err)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if s.HasMatch("room") {
		ids, stamp := cachedAnswer(t, s, "room")
		if want := sortedIDs(room, again); !slices.Equal(ids, want) {
			t.Fatalf("answer of room after a Match of the new creation: %v, want %v", ids, want)
		}
		if err := appendWith(t, s, "room", stamp, ids...); err != nil {
			t.Fatalf("append to room with its answer's stamp: %v", err)
		}
	}
}
