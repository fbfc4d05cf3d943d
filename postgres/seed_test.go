package postgres_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/likestripes/moitessier"
)

// TestJoinSeedsMatches: a join that creates a listener leaves its scopes'
// Match answers cached in its store where the store can tell what they
// are (see seedMatches), and nowhere else; and every dispatch, from a
// seeded answer, an out-of-date one or none, reaches every listener of
// its scope.
func TestJoinSeedsMatches(t *testing.T) {
	schema := newSchema(t)
	sa, sb := openStore(t, schema), openStore(t, schema)
	ctx := ctxT(t)
	ha := newHub(t, sa, moitessier.Options{CatchUpInterval: time.Hour})
	hb := newHub(t, sb, moitessier.Options{CatchUpInterval: time.Hour})
	q := pgx.Identifier{schema}.Sanitize()
	version := func(scope string) int64 {
		t.Helper()
		var v int64
		if err := sa.Pool().QueryRow(ctx, "SELECT coalesce((SELECT version FROM "+q+".scope_versions WHERE scope = $1), 0)", scope).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	// create creates a Shared listener on scope and, to tell it from the
	// others on scope, on k.tag.
	create := func(h *moitessier.Hub, tag, scope string) string {
		t.Helper()
		l, err := h.NewListener(ctx, moitessier.Conditions{Person: "p", Type: moitessier.Shared, Scopes: []string{scope, "k." + tag}})
		if err != nil {
			t.Fatal(err)
		}
		return l.ID()
	}
	// cached checks sa's cached answer for scope: want's listeners at the
	// scope's version now, or, with want nil, no answer or one of an
	// earlier version.
	cached := func(scope string, want ...string) {
		t.Helper()
		ids, v, ok := sa.CachedMatch(scope)
		slices.Sort(ids)
		slices.Sort(want)
		switch {
		case want == nil && ok && v == version(scope):
			t.Fatalf("%s: answer %v cached at the current version, want none", scope, ids)
		case want != nil && (!ok || v != version(scope) || !slices.Equal(ids, want)):
			t.Fatalf("%s: cached %v at version %d (ok %v), want %v at %d", scope, ids, v, ok, want, version(scope))
		}
	}
	reaches := func(scope string, want ...string) {
		t.Helper()
		d, err := ha.Dispatch(ctx, "sender", scope, "x")
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(d.Reached)
		slices.Sort(want)
		if !slices.Equal(d.Reached, want) {
			t.Fatalf("dispatch to %s reached %v, want %v", scope, d.Reached, want)
		}
	}

	// A new scope: its answer is the new listener alone.
	l1 := create(ha, "a", "s.new")
	cached("s.new", l1)
	// A second listener extends the answer.
	l2 := create(ha, "b", "s.new")
	cached("s.new", l1, l2)
	reaches("s.new", l1, l2)
	cached("s.new", l1, l2)

	// Another store creates a listener on the scope: the next creation
	// here does not extend the answer it no longer knows whole, and the
	// dispatch finds it out of date.
	m := create(hb, "c", "s.new")
	l3 := create(ha, "d", "s.new")
	cached("s.new")
	reaches("s.new", l1, l2, m, l3)
	cached("s.new", l1, l2, m, l3)

	// A pattern listener created here drops every answer; a new scope it
	// matches is not seeded (its listeners' info is not at hand).
	p := create(ha, "e", "p.*")
	if ids, _, ok := sa.CachedMatch("s.new"); ok {
		t.Fatalf("s.new: answer %v still cached after a pattern listener was created", ids)
	}
	px := create(ha, "f", "p.x")
	cached("p.x")
	reaches("p.x", p, px)

	// A pattern listener created by another store: a new scope it matches
	// is not seeded either, though this store has not seen the pattern.
	qp := create(hb, "g", "q.*")
	qy := create(ha, "h", "q.y")
	cached("q.y")
	reaches("q.y", qp, qy)

	// A join in a transaction that rolls back caches nothing.
	tx, err := sa.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	l := moitessier.ListenerInfo{ID: "rolled-back", Type: moitessier.Shared, Person: "i", Scopes: []string{"s.tx"}, Created: now}
	if err := sa.JoinTx(ctx, tx, l, moitessier.Subscriber{Person: "i", Cursor: moitessier.Resume, Joined: now, LeaseExpires: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if ids, _, ok := sa.CachedMatch("s.tx"); ok {
		t.Fatalf("s.tx: answer %v cached by a join that rolled back", ids)
	}
	reaches("s.tx")
}

// TestJoinSeedsUnderConcurrentJoins: joins from two stores on one new
// scope at once, and dispatches from the first right after each of its
// joins, reach every listener created before them.
func TestJoinSeedsUnderConcurrentJoins(t *testing.T) {
	schema := newSchema(t)
	sa, sb := openStore(t, schema), openStore(t, schema)
	ctx := ctxT(t)
	ha := newHub(t, sa, moitessier.Options{CatchUpInterval: time.Hour})
	hb := newHub(t, sb, moitessier.Options{CatchUpInterval: time.Hour})
	const n = 40
	created := make(chan string, 2*n)
	errs := make(chan error, 1)
	go func() {
		for i := range n {
			l, err := hb.NewListener(ctx, moitessier.Conditions{Person: "p", Type: moitessier.Shared, Scopes: []string{"race", fmt.Sprint("k.b", i)}})
			if err != nil {
				errs <- err
				return
			}
			created <- l.ID()
		}
		errs <- nil
	}()
	var mine []string
	for i := range n {
		l, err := ha.NewListener(ctx, moitessier.Conditions{Person: "p", Type: moitessier.Shared, Scopes: []string{"race", fmt.Sprint("k.a", i)}})
		if err != nil {
			t.Fatal(err)
		}
		mine = append(mine, l.ID())
		// The listeners the other store created before this dispatch
		// began, at least.
		before := len(created)
		d, err := ha.Dispatch(ctx, "sender", "race", "x")
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range mine {
			if !slices.Contains(d.Reached, id) {
				t.Fatalf("dispatch %d did not reach %s, created before it here", i, id)
			}
		}
		for range before {
			id := <-created
			mine = append(mine, id) // checked from the next dispatch on
			if !slices.Contains(d.Reached, id) {
				t.Fatalf("dispatch %d did not reach %s, created before it by the other store", i, id)
			}
		}
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
}
