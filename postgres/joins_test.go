package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/postgres"
)

// TestJoinsWaitAndGoTogether holds the store's join statements on a row
// lock, so that the joins that come meanwhile wait: one whose caller gives
// up returns at once and is never sent; the others go out together when
// the lock goes, in one statement, where the quota still counts each of
// them in turn.
func TestJoinsWaitAndGoTogether(t *testing.T) {
	needPostgres(t)
	schema := newSchema(t)
	s := openStore(t, schema)
	ctx := ctxT(t)
	now := time.Now()
	q := pgx.Identifier{schema}.Sanitize()
	room := moitessier.ListenerInfo{ID: "room", Type: moitessier.Shared, Person: "owner", Scopes: []string{"room"}, Created: now}
	if _, _, _, err := s.Join(ctx, room, subscriberAt("owner", now), moitessier.Quota{}); err != nil {
		t.Fatal(err)
	}

	// A transaction that locks the room's row makes each join of a new
	// subscriber to it wait, in its foreign key check.
	conn, err := pgx.Connect(ctx, testDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, "SELECT id FROM "+q+".listeners WHERE id = 'room' FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	held := make([]error, postgres.MaxJoinStatements)
	for i := range held {
		wg.Go(func() {
			_, _, _, held[i] = s.Join(ctx, room, subscriberAt(fmt.Sprint("guest", i), now), moitessier.Quota{})
		})
	}
	waitFor(t, "the held joins to wait on the lock", func() bool {
		var n int
		err := s.Pool().QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%join_listener%'").Scan(&n)
		return err == nil && n == len(held)
	})

	// Every turn is taken: a join now waits, and one whose caller gives
	// up returns with its context's error, and is not sent.
	gctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	gaveUp := moitessier.ListenerInfo{ID: "gave-up", Type: moitessier.Private, Person: "quitter", Scopes: []string{"gave.up"}, Created: now}
	if _, _, _, err := s.Join(gctx, gaveUp, subscriberAt("quitter", now), moitessier.Quota{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a join whose caller gave up while it waited: %v, want context.DeadlineExceeded", err)
	}

	// Ten joins of one person with a quota of three listeners wait, and
	// go together.
	const waiting, limit = 10, 3
	errs := make([]error, waiting)
	for i := range errs {
		wg.Go(func() {
			l := moitessier.ListenerInfo{ID: fmt.Sprint("mine-", i), Type: moitessier.Private, Person: "quota", Scopes: []string{fmt.Sprint("mine.", i)}, Created: now}
			_, _, _, errs[i] = s.Join(ctx, l, subscriberAt("quota", now), moitessier.Quota{Listeners: limit})
		})
	}
	waitFor(t, "the ten joins to queue", func() bool { return s.JoinsQueued() == waiting+1 || s.JoinsQueued() == waiting })
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i, err := range held {
		if err != nil {
			t.Errorf("held join %d: %v", i, err)
		}
	}
	ok := 0
	for i, err := range errs {
		var qe *moitessier.QuotaError
		switch {
		case err == nil:
			ok++
		case !errors.As(err, &qe) || qe.Kind != moitessier.QuotaListeners || qe.Person != "quota" || qe.Limit != limit:
			t.Errorf("join %d: %v, want nil or a QuotaError on quota's listeners", i, err)
		}
	}
	var stored int
	if err := s.Pool().QueryRow(ctx, "SELECT count(*) FROM "+q+".listeners WHERE person = 'quota'").Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if ok != limit || stored != limit {
		t.Errorf("%d joins succeeded and %d listeners are stored, want %d of each", ok, stored, limit)
	}
	if n := s.JoinsBatched(); n != waiting {
		t.Errorf("%d joins went out together, want the %d that waited", n, waiting)
	}
	if _, err := s.Listener(ctx, gaveUp.ID); !errors.Is(err, moitessier.ErrNotFound) {
		t.Errorf("the join whose caller gave up while it waited was sent: %v", err)
	}
}

// TestJoinListenersKeepsJoinsApart calls join_listeners itself: a join
// that fails undoes itself alone, past a quota or after any other error,
// and the transaction commits asynchronously only when every join that
// succeeded created its listener and may.
func TestJoinListenersKeepsJoinsApart(t *testing.T) {
	needPostgres(t)
	schema := newSchema(t)
	s := openStore(t, schema)
	ctx := ctxT(t)
	q := pgx.Identifier{schema}.Sanitize()
	one := int32(1)
	call := func(db interface {
		Query(context.Context, string, ...any) (pgx.Rows, error)
	}, ids []string, types []*int32, persons []string, quota []int64, async []bool) []string {
		t.Helper()
		n := len(ids)
		scopes, wild, nscopes := make([]string, n), make([]bool, n), make([]int32, n)
		ints, keys := make([]int64, n), make([]int64, n)
		empty := make([]string, n)
		for k := range ids {
			scopes[k], nscopes[k], keys[k] = "s."+ids[k], 1, int64(k)
		}
		rows, err := db.Query(ctx, "SELECT i, status FROM "+q+".join_listeners($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
			ids, types, persons, empty, scopes, wild, nscopes, ints, persons, empty, ints, ints, ints, quota, ints, ints, keys, keys, async)
		if err != nil {
			t.Fatal(err)
		}
		statuses, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
			var (
				i  int
				st string
			)
			err := r.Scan(&i, &st)
			return fmt.Sprint(i, " ", st), err
		})
		if err != nil {
			t.Fatal(err)
		}
		return statuses
	}
	// The second join has no type, which the listeners table refuses;
	// the third is past its person's quota of one, the first having
	// created that person's one listener.
	got := call(s.Pool(), []string{"a", "b", "c"}, []*int32{&one, nil, &one}, []string{"p", "p", "p"}, []int64{1, 1, 1}, []bool{true, true, true})
	if want := []string{"1 ok", "2 retry", "3 quota listeners"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("statuses %q, want %q", got, want)
	}
	var ids []string
	rows, err := s.Pool().Query(ctx, "SELECT id FROM "+q+".listeners UNION ALL SELECT listener FROM "+q+".listener_scopes UNION ALL SELECT listener FROM "+q+".subscribers ORDER BY 1")
	if err != nil {
		t.Fatal(err)
	}
	if ids, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(ids) != "[a a a]" {
		t.Fatalf("rows stored for listeners %q, want the first join's three", ids)
	}

	for _, tc := range []struct {
		ids   []string
		async []bool
		want  string
	}{
		{[]string{"d", "e"}, []bool{true, true}, "off"}, // both create, and may
		{[]string{"f", "g"}, []bool{true, false}, "on"}, // one may not
		{[]string{"h", "a"}, []bool{true, true}, "on"},  // one creates nothing
		{[]string{"i", "j"}, []bool{true, true}, "off"}, // (again, to be sure the last was not the connection's)
	} {
		tx, err := s.Pool().Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		call(tx, tc.ids, []*int32{&one, &one}, []string{"r", "r"}, []int64{0, 0}, tc.async)
		var sc string
		if err := tx.QueryRow(ctx, "SHOW synchronous_commit").Scan(&sc); err != nil {
			t.Fatal(err)
		}
		_ = tx.Rollback(ctx)
		if sc != tc.want {
			t.Errorf("joins %v, async %v: synchronous_commit %s, want %s", tc.ids, tc.async, sc, tc.want)
		}
	}
}

// waitFor polls cond until it holds, and fails the test if it does not
// within ten seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
