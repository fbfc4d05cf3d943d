package postgres_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/postgres"
)

// joinsFixture is a store on a schema of its own, whose join turn a test
// can hold on a row lock.
type joinsFixture struct {
	s   *postgres.Store
	ctx context.Context
	q   string // the schema, quoted
	now time.Time
}

// newJoinsFixture opens a store whose joins sent alone keep their turn
// for slow (0: the store's default).
func newJoinsFixture(t *testing.T, slow time.Duration) *joinsFixture {
	return newJoinsFixtureWith(t, slow, func(cfg postgres.Config) postgres.Config { return cfg })
}

// newJoinsFixtureWith is newJoinsFixture with the store's configuration
// changed by with.
func newJoinsFixtureWith(t *testing.T, slow time.Duration, with func(postgres.Config) postgres.Config) *joinsFixture {
	needPostgres(t)
	schema := newSchema(t)
	return &joinsFixture{
		s:   openStoreWith(t, with(postgres.WithSlowJoin(postgres.Config{Schema: schema}, slow))),
		ctx: ctxT(t),
		q:   pgx.Identifier{schema}.Sanitize(),
		now: time.Now(),
	}
}

// listener is a Shared listener id of owner's, on the scope id.
func (f *joinsFixture) listener(id string) moitessier.ListenerInfo {
	return moitessier.ListenerInfo{ID: id, Type: moitessier.Shared, Person: "owner", Scopes: []string{id}, Created: f.now}
}

// join joins l as person, under ctx.
func (f *joinsFixture) join(ctx context.Context, l moitessier.ListenerInfo, person string, q moitessier.Quota) (moitessier.ListenerInfo, moitessier.Subscriber, error) {
	info, sub, _, err := f.s.Join(ctx, l, subscriberAt(person, f.now), q)
	return info, sub, err
}

// holdTurn makes listener id, locks its row and sends a join of a new
// subscriber to it, which waits for the lock in its foreign key check,
// holding the store's join turn (for as long as the store's slowJoin lets
// it) until release; wait waits for it, and fails the test if it failed.
func (f *joinsFixture) holdTurn(t *testing.T, id string) (release, wait func()) {
	t.Helper()
	l := f.listener(id)
	if _, _, err := f.join(f.ctx, l, "owner", moitessier.Quota{}); err != nil {
		t.Fatal(err)
	}
	release = lockListener(t, f.s, id)
	var wg sync.WaitGroup
	wg.Go(func() {
		if _, _, err := f.join(f.ctx, l, "guest", moitessier.Quota{}); err != nil {
			t.Errorf("held join: %v", err)
		}
	})
	waitFor(t, "the turn to wait on a lock", func() bool { return waitingJoins(t, f.ctx, f.s, f.q) == 1 })
	return release, wg.Wait
}

// TestJoinsWaitAndGoTogether holds the store's join turn on a row lock, so
// that the joins that come meanwhile wait: one whose caller gives up
// returns at once and is never sent; the others go out together when the
// lock goes, in one statement, where the quota still counts each of them
// in turn.
func TestJoinsWaitAndGoTogether(t *testing.T) {
	f := newJoinsFixture(t, time.Hour)
	release, held := f.holdTurn(t, "room")

	// The turn is taken: a join now waits, and one whose caller gives up
	// returns with its context's error, and is not sent.
	gctx, cancel := context.WithTimeout(f.ctx, 100*time.Millisecond)
	defer cancel()
	gaveUp := moitessier.ListenerInfo{ID: "gave-up", Type: moitessier.Private, Person: "quitter", Scopes: []string{"gave.up"}, Created: f.now}
	if _, _, err := f.join(gctx, gaveUp, "quitter", moitessier.Quota{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a join whose caller gave up while it waited: %v, want context.DeadlineExceeded", err)
	}

	// Ten joins of one person with a quota of three listeners wait, and
	// go together. Each has one to three scopes, which the statement
	// carries in one array.
	const waiting, limit = 10, 3
	errs := make([]error, waiting)
	infos := make([]moitessier.ListenerInfo, waiting)
	scopesOf := func(i int) []string {
		var sc []string
		for k := range i%3 + 1 {
			sc = append(sc, fmt.Sprintf("mine.%d.%d", i, k))
		}
		return sc
	}
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() {
			l := moitessier.ListenerInfo{ID: fmt.Sprint("mine-", i), Type: moitessier.Private, Person: "quota", Scopes: scopesOf(i), Created: f.now}
			infos[i], _, errs[i] = f.join(f.ctx, l, "quota", moitessier.Quota{Listeners: limit})
		})
	}
	// The join whose caller gave up stays in the queue, unsent, until
	// the next batch is taken.
	waitFor(t, "the ten joins to queue", func() bool { return f.s.JoinsQueued() == waiting+1 })
	release()
	held()
	wg.Wait()
	ok := 0
	for i, err := range errs {
		var qe *moitessier.QuotaError
		switch {
		case err == nil:
			ok++
			var stored []string
			rows, err := f.s.Pool().Query(f.ctx, "SELECT scope FROM "+f.q+".listener_scopes WHERE listener = $1 ORDER BY scope", infos[i].ID)
			if err == nil {
				stored, err = pgx.CollectRows(rows, pgx.RowTo[string])
			}
			if want := scopesOf(i); err != nil || fmt.Sprint(stored) != fmt.Sprint(want) || fmt.Sprint(infos[i].Scopes) != fmt.Sprint(want) {
				t.Errorf("join %d: scopes %q stored and %q returned (%v), want %q", i, stored, infos[i].Scopes, err, want)
			}
		case !errors.As(err, &qe) || qe.Kind != moitessier.QuotaListeners || qe.Person != "quota" || qe.Limit != limit:
			t.Errorf("join %d: %v, want nil or a QuotaError on quota's listeners", i, err)
		}
	}
	var stored int
	if err := f.s.Pool().QueryRow(f.ctx, "SELECT count(*) FROM "+f.q+".listeners WHERE person = 'quota'").Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if ok != limit || stored != limit {
		t.Errorf("%d joins succeeded and %d listeners are stored, want %d of each", ok, stored, limit)
	}
	if n := f.s.JoinsBatched(); n != waiting {
		t.Errorf("%d joins went out together, want the %d that waited", n, waiting)
	}
	if _, err := f.s.Listener(f.ctx, gaveUp.ID); !errors.Is(err, moitessier.ErrNotFound) {
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
		rows, err := db.Query(ctx, "SELECT i, status FROM "+q+".join_listeners($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, '100ms')",
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

// TestJoinsLockedAloneHoldUpNoOthers sends, together, joins to new
// listeners and one to a listener whose row another transaction holds:
// the batch waits only its lock timeout for that one, which runs again
// alone and waits for the row, and the others return while it waits,
// whether the batch settled them (the locked one sorts last) or sent
// them to run again alone too (it sorts first).
func TestJoinsLockedAloneHoldUpNoOthers(t *testing.T) {
	for _, lockedID := range []string{"a-locked", "x-locked"} {
		t.Run(lockedID, func(t *testing.T) {
			f := newJoinsFixture(t, time.Hour)
			locked := f.listener(lockedID)
			if _, _, err := f.join(f.ctx, locked, "owner", moitessier.Quota{}); err != nil {
				t.Fatal(err)
			}
			releaseLocked := lockListener(t, f.s, lockedID)
			release, held := f.holdTurn(t, "z-held")
			defer held()

			// Five joins to new listeners, and one to the locked one,
			// wait. The five give up after a while, if they wait for it.
			fresh := f.joinFresh(t, 5)
			lockedDone := make(chan error, 1)
			go func() {
				_, got, err := f.join(f.ctx, locked, "late", moitessier.Quota{})
				if err == nil && got.Person != "late" {
					err = fmt.Errorf("joined as %+v", got)
				}
				lockedDone <- err
			}()
			waitFor(t, "the six joins to queue", func() bool { return f.s.JoinsQueued() == 6 })

			// The held join's turn ends, and takes the six together. The
			// five return though the locked row is still held.
			release()
			fresh()
			if n := f.s.JoinsBatched(); n != 6 {
				t.Errorf("%d joins went out together, want 6", n)
			}
			select {
			case err := <-lockedDone:
				t.Fatalf("the join to a held row returned before the row was free: %v", err)
			default:
			}
			releaseLocked()
			if err := <-lockedDone; err != nil {
				t.Fatalf("the join to a held row, run again alone: %v", err)
			}
		})
	}
}

// TestJoinsSlowAloneGivesUpItsTurn: a join sent alone that waits for a
// lock hands its turn on after a while, so the joins that come after it
// go out and return while it still waits.
func TestJoinsSlowAloneGivesUpItsTurn(t *testing.T) {
	f := newJoinsFixture(t, 0)
	release, held := f.holdTurn(t, "room")
	f.joinFresh(t, 5)()
	release()
	held()
}

// TestJoinsAfterASlowAloneGoOn: joins that come one at a time after a join
// sent alone has held its turn past slowJoin, with none waiting for it
// until then, find the turn handed on and return while it still waits.
func TestJoinsAfterASlowAloneGoOn(t *testing.T) {
	f := newJoinsFixture(t, time.Millisecond)
	release, held := f.holdTurn(t, "room")
	waitFor(t, "the slow join's turn to be handed on", f.s.JoinTurnFree)
	for i := range 3 {
		ctx, cancel := context.WithTimeout(f.ctx, 5*time.Second)
		_, _, err := f.join(ctx, f.listener(fmt.Sprint("late-", i)), "owner", moitessier.Quota{})
		cancel()
		if err != nil {
			t.Fatalf("join of late-%d while a slow one waits: %v", i, err)
		}
	}
	if n := waitingJoins(t, f.ctx, f.s, f.q); n != 1 {
		t.Errorf("%d joins wait for a lock, want the held one", n)
	}
	release()
	held()
}

// TestJoinsRefusedTogetherRunAlone queues, behind the held turn, good
// joins and one whose scope the server refuses (a NUL byte): the
// statement that carries them all is refused, so each runs again alone,
// and only the bad one fails.
func TestJoinsRefusedTogetherRunAlone(t *testing.T) {
	f := newJoinsFixture(t, time.Hour)
	release, held := f.holdTurn(t, "room")
	scopes := []string{"good.0", "good.1", "bad\x00scope", "good.2"}
	errs := make([]error, len(scopes))
	var wg sync.WaitGroup
	for i, sc := range scopes {
		wg.Go(func() {
			l := moitessier.ListenerInfo{ID: fmt.Sprint("l-", i), Type: moitessier.Shared, Person: "owner", Scopes: []string{sc}, Created: f.now}
			_, _, errs[i] = f.join(f.ctx, l, "owner", moitessier.Quota{})
		})
	}
	waitFor(t, "the joins to queue", func() bool { return f.s.JoinsQueued() == len(scopes) })
	release()
	held()
	wg.Wait()
	for i, err := range errs {
		if (err != nil) != (i == 2) {
			t.Errorf("join of scope %q: %v", scopes[i], err)
		}
		if _, lerr := f.s.Listener(f.ctx, fmt.Sprint("l-", i)); (lerr != nil) != (i == 2) {
			t.Errorf("listener of scope %q after its join: %v", scopes[i], lerr)
		}
	}
	if n := f.s.JoinsBatched(); n != 0 {
		t.Errorf("%d joins counted as gone together, in a statement the server refused", n)
	}
}

// joinFresh sends n joins that create listeners, new-0 to new-(n-1), which
// give up after five seconds; wait waits for them, and fails the test if
// one failed (if it waited for a lock held meanwhile, say).
func (f *joinsFixture) joinFresh(t *testing.T, n int) (wait func()) {
	ctx, cancel := context.WithTimeout(f.ctx, 5*time.Second)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if _, _, err := f.join(ctx, f.listener(fmt.Sprint("new-", i)), "owner", moitessier.Quota{}); err != nil {
				t.Errorf("join of new-%d: %v", i, err)
			}
		})
	}
	return func() {
		wg.Wait()
		cancel()
	}
}

// waitingJoins returns how many joins sent alone (join_listener) of the
// store's schema q wait for a lock.
func waitingJoins(t *testing.T, ctx context.Context, s *postgres.Store, q string) int {
	var n int
	err := s.Pool().QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND position($1 IN query) > 0", q+".join_listener(").Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
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

// TestJoinsUnsentTogetherRunAlone: joins that go out together on a
// connection that fails before anything of their statement was sent (the
// write fails, pgconn.SafeToRetry) run again, each alone, on another
// connection, and succeed.
func TestJoinsUnsentTogetherRunAlone(t *testing.T) {
	var armed atomic.Bool
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &unsentFailer{Conn: c, armed: &armed, marker: []byte(".join_listeners(")}, nil
	}
	f := newJoinsFixtureWith(t, time.Hour, func(cfg postgres.Config) postgres.Config { return postgres.WithDial(cfg, dial) })
	release, held := f.holdTurn(t, "room")
	const n = 3
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, _, errs[i] = f.join(f.ctx, f.listener(fmt.Sprint("unsent-", i)), "owner", moitessier.Quota{})
		})
	}
	waitFor(t, "the joins to queue", func() bool { return f.s.JoinsQueued() == n })
	armed.Store(true)
	release()
	held()
	wg.Wait()
	if armed.Load() {
		t.Fatal("no write of the joins' statement failed")
	}
	for i, err := range errs {
		if err != nil {
			t.Errorf("join of unsent-%d: %v", i, err)
		}
		if _, err := f.s.Listener(f.ctx, fmt.Sprint("unsent-", i)); err != nil {
			t.Errorf("listener unsent-%d after its join: %v", i, err)
		}
	}
	if got := f.s.JoinsBatched(); got != 0 {
		t.Errorf("%d joins counted as gone together, in a statement never sent", got)
	}
}

// unsentFailer is a connection whose first write holding marker, once
// armed, fails with nothing written, and closes it.
type unsentFailer struct {
	net.Conn
	armed  *atomic.Bool
	marker []byte
}

func (c *unsentFailer) Write(b []byte) (int, error) {
	if bytes.Contains(b, c.marker) && c.armed.CompareAndSwap(true, false) {
		_ = c.Conn.Close()
		return 0, errors.New("the connection broke before the write")
	}
	return c.Conn.Write(b)
}

// TestJoinOfAListenerDeletedUnderIt: a join whose insert finds its
// listener, which is then deleted before the join reads it (join_listener
// returns no row), runs again and creates the listener anew. The test
// holds the listener's advisory key, which the join takes (shared) between
// the two, and deletes the listener meanwhile.
func TestJoinOfAListenerDeletedUnderIt(t *testing.T) {
	f := newJoinsFixture(t, 0)
	l := f.listener("gone")
	if _, _, err := f.join(f.ctx, l, "owner", moitessier.Quota{}); err != nil {
		t.Fatal(err)
	}
	tx, err := f.s.Pool().Begin(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(f.ctx, "SELECT pg_advisory_xact_lock(tableoid::integer, coalesce(nullif(hashtext($1), 0), 1)) FROM "+f.q+".meta", l.ID); err != nil {
		t.Fatal(err)
	}
	type result struct {
		sub     moitessier.Subscriber
		created bool
		err     error
	}
	done := make(chan result, 1)
	go func() {
		_, sub, created, err := f.s.Join(f.ctx, l, subscriberAt("guest", f.now), moitessier.Quota{})
		done <- result{sub, created, err}
	}()
	waitFor(t, "the join to wait for the listener's key", func() bool { return waitingJoins(t, f.ctx, f.s, f.q) == 1 })
	if _, err := tx.Exec(f.ctx, "DELETE FROM "+f.q+".listeners WHERE id = $1", l.ID); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(f.ctx); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || !r.created || r.sub.Person != "guest" {
		t.Fatalf("join of a listener deleted under it: created %v, subscriber %q, %v; want the listener made anew", r.created, r.sub.Person, r.err)
	}
	subs, err := f.s.Subscribers(f.ctx, l.ID, moitessier.SubscriberRange{})
	if err != nil || len(subs) != 1 || subs[0].Person != "guest" {
		t.Fatalf("subscribers of the listener made anew: %+v, %v; want guest alone", subs, err)
	}
}
