package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/postgres"
)

func TestOpenUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Port 1 on loopback: nothing listens there.
	_, err := postgres.Open(ctx, "postgres://postgres@127.0.0.1:1/test?sslmode=disable&connect_timeout=2")
	if err == nil {
		t.Fatal("Open succeeded against a closed port")
	}
	if !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("error %q does not name the host", err)
	}
	if _, err := postgres.Open(ctx, "postgres://user:secret@[::1"); err == nil || strings.Contains(err.Error(), "secret") {
		t.Fatalf("bad DSN: %v", err)
	}
	if _, err := postgres.New(ctx, postgres.Config{}); err == nil {
		t.Fatal("New without DSN or Pool succeeded")
	}
}

// TestAppendTxClosed: AppendTx, which the Store interface lacks (the
// conformance suite checks the rest after Close), fails with ErrClosed too.
func TestAppendTxClosed(t *testing.T) {
	s := mustStore(t)
	_ = s.Close()
	if _, _, err := s.AppendTx(ctxT(t), nil, batch("room", nil)); !errors.Is(err, moitessier.ErrClosed) {
		t.Fatalf("AppendTx after Close: %v, want ErrClosed", err)
	}
}

// TestCloseStopsWatch: Close ends a running Watch with ErrClosed.
func TestCloseStopsWatch(t *testing.T) {
	s := mustStore(t)
	errc := make(chan error, 1)
	go func() { errc <- s.Watch(context.Background(), func([]moitessier.Head) {}) }()
	time.Sleep(100 * time.Millisecond)
	_ = s.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, moitessier.ErrClosed) {
			t.Fatalf("Watch = %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Watch still running 10s after Close")
	}
}

func TestMigrate(t *testing.T) {
	schema := newSchema(t)
	ctx := ctxT(t)
	// Several processes opening a new schema at once: one migrates, the
	// others wait on the advisory lock and find it done.
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := postgres.New(ctx, postgres.Config{DSN: testDSN(), Schema: schema})
			if err == nil {
				_ = s.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
	}
	pool, err := pgxpool.New(ctx, testDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	// Idempotent as a separate step.
	for range 2 {
		if err := postgres.Migrate(ctx, pool, schema); err != nil {
			t.Fatalf("Migrate: %v", err)
		}
	}
	var n, v int
	if err := pool.QueryRow(ctx, "SELECT count(*), max(version) FROM "+pgx.Identifier{schema}.Sanitize()+".schema_migrations").Scan(&n, &v); err != nil {
		t.Fatal(err)
	}
	if n != postgres.SchemaVersion() || v != postgres.SchemaVersion() {
		t.Fatalf("schema_migrations: %d rows, version %d; want %d", n, v, postgres.SchemaVersion())
	}
	// A caller's pool, migrations run separately.
	s, err := postgres.New(ctx, postgres.Config{Pool: pool, Schema: schema, SkipMigrate: true})
	if err != nil {
		t.Fatalf("New with Pool and SkipMigrate: %v", err)
	}
	join(t, s, "x")
	_ = s.Close()
	if err := pool.Ping(ctx); err != nil {
		t.Fatalf("the caller's pool was closed by Store.Close: %v", err)
	}
	// SkipMigrate on an unmigrated schema fails at open.
	other := newSchema(t)
	if _, err := postgres.New(ctx, postgres.Config{Pool: pool, Schema: other, SkipMigrate: true}); err == nil {
		t.Fatal("SkipMigrate on an empty schema succeeded")
	}
	// A caller's pool at a stricter isolation level is refused, and left
	// open; the same DSN is not, for a pool the store opens.
	strict := testDSNWith("default_transaction_isolation=repeatable%20read")
	spool, err := pgxpool.New(ctx, strict)
	if err != nil {
		t.Fatal(err)
	}
	defer spool.Close()
	if _, err := postgres.New(ctx, postgres.Config{Pool: spool, Schema: schema, SkipMigrate: true}); !errors.Is(err, moitessier.ErrInvalidArgument) {
		t.Fatalf("New with a pool at repeatable read: %v; want ErrInvalidArgument", err)
	}
	if err := spool.Ping(ctx); err != nil {
		t.Fatalf("the refused pool was closed: %v", err)
	}
	own, err := postgres.New(ctx, postgres.Config{DSN: strict, Schema: schema, SkipMigrate: true})
	if err != nil {
		t.Fatalf("New with a DSN at repeatable read: %v", err)
	}
	_ = own.Close()
}

// TestFanOutOneStatement: one Append to many listeners, with the NOTIFY
// split into payloads under 8000 bytes, and Heads in one query.
func TestFanOutOneStatement(t *testing.T) {
	s := mustStore(t)
	ctx := ctxT(t)
	const n = 700
	var ids []string
	texts := map[string]string{}
	for i := range n {
		l := join(t, s, fmt.Sprint("fan.", i))
		ids = append(ids, l.ID)
		texts[l.ID] = fmt.Sprint("m", i)
	}
	got := map[string]moitessier.Cursor{}
	var mu sync.Mutex
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		_ = s.Watch(wctx, func(hs []moitessier.Head) {
			mu.Lock()
			defer mu.Unlock()
			for _, h := range hs {
				got[h.Listener] = max(got[h.Listener], h.Seq)
			}
		})
	}()
	time.Sleep(200 * time.Millisecond) // let Watch LISTEN
	for round := 1; round <= 2; round++ {
		msgs, _, err := s.Append(ctx, batch("fan", texts))
		if err != nil || len(msgs) != n {
			t.Fatalf("Append = %d messages, %v", len(msgs), err)
		}
		for _, m := range msgs {
			if m.Seq != moitessier.Cursor(round) || m.Text != texts[m.Listener] {
				t.Fatalf("message %+v, want seq %d", m, round)
			}
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		complete := len(got) == n
		for _, id := range ids {
			complete = complete && got[id] == 2
		}
		mu.Unlock()
		if complete {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("notified of %d of %d listeners", len(got), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	heads, err := s.Heads(ctx, append(ids, "missing"))
	if err != nil || len(heads) != n {
		t.Fatalf("Heads = %d, %v", len(heads), err)
	}
	for _, h := range heads {
		if h.Seq != 2 {
			t.Fatalf("head %+v, want 2", h)
		}
	}
}

// TestMatchAcrossProcesses: a pattern listener created or deleted through
// one store is seen at once by Match on another store (another process)
// whose pattern cache was loaded before.
func TestMatchAcrossProcesses(t *testing.T) {
	schema := newSchema(t)
	a, b := openStore(t, schema), openStore(t, schema)
	ctx := ctxT(t)
	match := func(s *postgres.Store, scope string) []string {
		t.Helper()
		ls, err := s.Match(ctx, scope)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, l := range ls {
			ids = append(ids, l.ID)
		}
		return ids
	}
	if got := match(a, "room.1"); len(got) != 0 {
		t.Fatalf("empty store matched %v", got)
	}
	star := join(t, b, "room.*")
	if got := match(a, "room.1"); len(got) != 1 || got[0] != star.ID {
		t.Fatalf("Match after another process joined room.*: %v", got)
	}
	rest := join(t, b, "room.>")
	exact := join(t, b, "room.1")
	if got := match(a, "room.1"); len(got) != 3 {
		t.Fatalf("Match = %v, want 3 listeners", got)
	}
	if got := match(a, "room.1.x"); len(got) != 1 || got[0] != rest.ID {
		t.Fatalf("Match(room.1.x) = %v, want room.>", got)
	}
	if _, err := b.Leave(ctx, star.ID, "p", ""); err != nil {
		t.Fatal(err)
	}
	got := match(a, "room.1")
	if len(got) != 2 || strings.Contains(strings.Join(got, ","), star.ID) {
		t.Fatalf("Match after Leave = %v", got)
	}
	_ = exact
	// A listener with several scopes is reported once.
	multi := joinScopes(t, b, []string{"room.1", "room.*", "x.>"})
	got = match(a, "room.1")
	n := 0
	for _, id := range got {
		if id == multi.ID {
			n++
		}
	}
	if n != 1 || len(got) != 3 {
		t.Fatalf("Match = %v: multi-scope listener %d times", got, n)
	}
}

func joinScopes(tb testing.TB, s moitessier.Store, scopes []string) moitessier.ListenerInfo {
	tb.Helper()
	id, err := moitessier.ListenerID(moitessier.Conditions{Person: "p", Type: moitessier.Shared, Scopes: scopes})
	if err != nil {
		tb.Fatal(err)
	}
	now := time.Now()
	l, _, _, err := s.Join(ctxT(tb), moitessier.ListenerInfo{ID: id, Type: moitessier.Shared, Person: "p", Scopes: scopes, Created: now},
		moitessier.Subscriber{Person: "p", Joined: now, LeaseExpires: now.Add(time.Hour)}, moitessier.Quota{})
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

// TestSweepBatches: retention by age and by count, expiry and keys, with a
// small batch size so that every path loops.
func TestSweepBatches(t *testing.T) {
	s := mustStore(t)
	ctx := ctxT(t)
	t0 := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	var ls []moitessier.ListenerInfo
	for i := range 5 {
		ls = append(ls, join(t, s, fmt.Sprint("sw.", i)))
	}
	// 50 dispatches, one a minute, to every listener.
	for i := range 50 {
		b := &moitessier.Batch{Dispatch: fmt.Sprint("d", i), Scope: "sw", Sender: "p", Created: t0.Add(time.Duration(i) * time.Minute),
			Key: fmt.Sprint("k", i), KeySince: t0.Add(-time.Hour)}
		for _, l := range ls {
			b.Entries = append(b.Entries, moitessier.Entry{Listener: l.ID, Text: fmt.Sprint(i)})
		}
		if _, _, err := s.Append(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	now := t0.Add(50 * time.Minute)
	// Age: keep the last 30 minutes (dispatches 20..49).
	res, err := s.Sweep(ctx, moitessier.SweepParams{Now: now, MaxAge: 30 * time.Minute, BatchSize: 7})
	if err != nil || res.Messages != 5*20 {
		t.Fatalf("age sweep = %+v, %v; want 100 messages", res, err)
	}
	// Count: keep the newest 10 per listener.
	res, err = s.Sweep(ctx, moitessier.SweepParams{Now: now, MaxCount: 10, BatchSize: 7})
	if err != nil || res.Messages != 5*20 {
		t.Fatalf("count sweep = %+v, %v; want 100 messages", res, err)
	}
	for _, l := range ls {
		msgs, err := s.Read(ctx, l.ID, 0, 100)
		if err != nil || len(msgs) != 10 || msgs[0].Seq != 41 || msgs[9].Seq != 50 {
			t.Fatalf("after sweeps %s holds %d messages, %v", l.ID, len(msgs), err)
		}
	}
	// Keys recorded before minute 25.
	res, err = s.Sweep(ctx, moitessier.SweepParams{Now: now, KeysBefore: t0.Add(25 * time.Minute), BatchSize: 7})
	if err != nil || res.Keys != 25 {
		t.Fatalf("key sweep = %+v, %v; want 25 keys", res, err)
	}
	// Expiry: the leases (an hour from the real clock) end; every listener
	// goes with its messages.
	res, err = s.Sweep(ctx, moitessier.SweepParams{Now: time.Now().Add(2 * time.Hour), BatchSize: 2})
	if err != nil || res.Subscribers != 5 || len(res.Expired) != 5 || res.Messages != 50 {
		t.Fatalf("expiry sweep = %+v, %v", res, err)
	}
	for _, l := range ls {
		if _, err := s.Listener(ctx, l.ID); !errors.Is(err, moitessier.ErrNotFound) {
			t.Fatalf("listener %s after expiry: %v", l.ID, err)
		}
	}
	var n int
	if err := s.Pool().QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{s.Schema()}.Sanitize()+".messages").Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d messages left, %v", n, err)
	}
}

// TestAppendOneStale: a one-entry append whose match stamp went stale (a
// listener joined the scope through another store) fails with ErrStale and
// writes nothing; one with no stamp to a listener deleted meanwhile writes
// nothing and fails with nothing.
func TestAppendOneStale(t *testing.T) {
	schema := newSchema(t)
	a, b := openStore(t, schema), openStore(t, schema)
	ctx := ctxT(t)
	l := join(t, a, "one")
	ls, stamp, err := a.MatchCached(ctx, "one")
	if err != nil || len(ls) != 1 || stamp == nil {
		t.Fatalf("MatchCached = %v, %v, %v", ls, stamp, err)
	}
	batch := func(st moitessier.MatchStamp) *moitessier.Batch {
		return &moitessier.Batch{Dispatch: "d", Scope: "one", Sender: "p", Created: time.Now(), Stamp: st,
			Entries: []moitessier.Entry{{Listener: l.ID, Text: "x"}}}
	}
	if msgs, _, err := a.Append(ctx, batch(stamp)); err != nil || len(msgs) != 1 || msgs[0].Seq != 1 {
		t.Fatalf("append with a fresh stamp: %v, %v", msgs, err)
	}
	other := joinScopes(t, b, []string{"one", "two"}) // a second listener on the scope
	if msgs, _, err := a.Append(ctx, batch(stamp)); !errors.Is(err, moitessier.ErrStale) || len(msgs) != 0 {
		t.Fatalf("append with a stale stamp: %v, %v; want ErrStale", msgs, err)
	}
	got, err := a.Read(ctx, l.ID, 0, 10)
	if err != nil || len(got) != 1 {
		t.Fatalf("after the stale append the listener holds %v (%v), want its one message", got, err)
	}
	if msgs, _, err := a.Append(ctx, batch(nil)); err != nil || len(msgs) != 1 || msgs[0].Seq != 2 {
		t.Fatalf("append with no stamp: %v, %v", msgs, err)
	}
	for _, id := range []string{l.ID, other.ID} {
		if _, err := b.Leave(ctx, id, "p", ""); err != nil {
			t.Fatal(err)
		}
	}
	if msgs, _, err := a.Append(ctx, batch(nil)); err != nil || len(msgs) != 0 {
		t.Fatalf("append to a deleted listener: %v, %v; want nothing", msgs, err)
	}
}

// TestCancelKeepsConnection: a statement whose caller gives up runs on to
// its end, and its connection stays in the pool, rather than being closed
// (pgx's default), which would cost the server a new connection per
// caller that hangs up; one that runs past the grace is given up. After
// Close there is no grace.
func TestCancelKeepsConnection(t *testing.T) {
	s := mustStore(t)
	pool := s.Pool()
	ctx := ctxT(t)
	if _, err := pool.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	before := pool.Stat().NewConnsCount()
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	var v int
	if err := pool.QueryRow(short, "SELECT 7 FROM pg_sleep(0.2)").Scan(&v); err != nil || v != 7 {
		t.Fatalf("a statement whose context ended within the grace: %d, %v; want its answer", v, err)
	}
	for range 5 {
		if _, err := pool.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
	}
	if n := pool.Stat().NewConnsCount() - before; n != 0 {
		t.Fatalf("%d new connections after a caller gave up mid-statement, want 0", n)
	}
	long, cancel2 := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel2()
	if _, err := pool.Exec(long, "SELECT pg_sleep(5)"); err == nil {
		t.Fatal("a statement running past the grace was waited for to its end")
	}
}

// TestCloseEndsGrace: Close does not wait out the grace of a statement
// whose caller gave up just before.
func TestCloseEndsGrace(t *testing.T) {
	s, err := postgres.New(context.Background(), postgres.Config{DSN: testDSN(), Schema: newSchema(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := s.Pool().Exec(ctx, "SELECT pg_sleep(5)")
		done <- err
	}()
	time.Sleep(50 * time.Millisecond) // the statement is under way
	cancel()
	time.Sleep(10 * time.Millisecond) // and in its grace
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(cancelGraceBound):
		t.Fatal("Close waited out the grace of a cancelled statement")
	}
	if err := <-done; err == nil {
		t.Fatal("a 5 s statement cut short by Close reported no error")
	}
}

// cancelGraceBound is under the store's one-second grace, with room for a
// slow machine.
const cancelGraceBound = 800 * time.Millisecond

// TestWritersBounded: however appends come, at most Config.Writers append
// writers exist, and once the appends are done all of them are parked.
func TestWritersBounded(t *testing.T) {
	s := openStoreWith(t, postgres.Config{Schema: newSchema(t), Writers: 2})
	ctx := ctxT(t)
	ls := make([]moitessier.ListenerInfo, 16)
	for i := range ls {
		ls[i] = join(t, s, fmt.Sprint("w.", i))
	}
	var wg sync.WaitGroup
	for g := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 150 {
				l := ls[(g+i)%len(ls)]
				if _, _, err := s.Append(ctx, batch("w", map[string]string{l.ID: "x"})); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// A writer looks for more work after its last batch's caller returned.
	idle, running := s.WriterCounts()
	for deadline := time.Now().Add(5 * time.Second); running > 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
		idle, running = s.WriterCounts()
	}
	if running != 0 || idle < 1 || idle > 2 {
		t.Fatalf("after the appends: %d writers parked, %d running; want 1 or 2 parked, none running", idle, running)
	}
}

// TestStatementCaches: a pool the store opens gives each connection a
// statement cache of the store's size and no description cache (which only
// the cache_describe mode uses), and has 16 connections, unless the DSN
// sets them; the store works with either.
func TestStatementCaches(t *testing.T) {
	ctx := ctxT(t)
	for _, tc := range []struct {
		param             string
		stmts, desc, pool int
	}{
		{"", 128, 0, 16},
		{"statement_cache_capacity=300&description_cache_capacity=7&pool_max_conns=5", 300, 7, 5},
		{"default_query_exec_mode=cache_describe", 128, 512, 16},
		// Names of settings elsewhere in the DSN set nothing.
		{"application_name=statement_cache_capacity.description_cache_capacity.pool_max_conns", 128, 0, 16},
	} {
		dsn := testDSN()
		if tc.param != "" {
			dsn = testDSNWith(tc.param)
		}
		s, err := postgres.New(ctx, postgres.Config{DSN: dsn, Schema: newSchema(t)})
		if err != nil {
			t.Fatalf("%s: %v", tc.param, err)
		}
		cc := s.Pool().Config().ConnConfig
		if n := s.Pool().Config().MaxConns; n != int32(tc.pool) {
			t.Errorf("%q: pool of %d connections, want %d", tc.param, n, tc.pool)
		}
		if cc.StatementCacheCapacity != tc.stmts || cc.DescriptionCacheCapacity != tc.desc {
			t.Errorf("%q: statement cache %d, description cache %d; want %d, %d", tc.param, cc.StatementCacheCapacity, cc.DescriptionCacheCapacity, tc.stmts, tc.desc)
		}
		l := moitessier.ListenerInfo{ID: "s1", Type: moitessier.Shared, Person: "p", Scopes: []string{"c"}, Created: time.Now()}
		if _, _, _, err := s.Join(ctx, l, moitessier.Subscriber{Person: "p", Cursor: moitessier.Resume, Joined: time.Now(), LeaseExpires: time.Now().Add(time.Hour)}, moitessier.Quota{}); err != nil {
			t.Errorf("%q: join: %v", tc.param, err)
		}
		if msgs, _, err := s.Append(ctx, &moitessier.Batch{Dispatch: "d", Scope: "c", Sender: "p", Created: time.Now(), Entries: []moitessier.Entry{{Listener: "s1", Text: "x"}}}); err != nil || len(msgs) != 1 {
			t.Errorf("%q: append: %d messages, %v", tc.param, len(msgs), err)
		}
		_ = s.Close()
	}
}

// TestMatchAppendStalePatterns: a first dispatch to a scope of one
// listener, from a store whose index of pattern listeners is older than a
// pattern listener another process made since, writes nothing (the
// smaller statement that such a dispatch goes out as checks the pattern
// version), and answers with every listener of the scope, the pattern
// one among them; a second call, from that answer, appends to both.
func TestMatchAppendStalePatterns(t *testing.T) {
	schema := newSchema(t)
	a, b := openStore(t, schema), openStore(t, schema)
	ctx := ctxT(t)
	if _, _, err := a.MatchCached(ctx, "x"); err != nil { // loads a's index
		t.Fatal(err)
	}
	one := join(t, b, "q.one")
	star := join(t, b, "q.*")
	bt := &moitessier.Batch{Dispatch: "d1", Scope: "q.one", Sender: "p", Created: time.Now()}
	ls, stamp, msgs, appended, err := a.MatchAppend(ctx, bt, "hello", moitessier.Selection{Sender: "p"})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, l := range ls {
		ids = append(ids, l.ID)
	}
	slices.Sort(ids)
	want := []string{one.ID, star.ID}
	slices.Sort(want)
	if appended || len(msgs) != 0 || stamp == nil || !slices.Equal(ids, want) {
		t.Fatalf("MatchAppend with a stale pattern index: matched %v (want %v), %d messages, appended %v, stamp %v", ids, want, len(msgs), appended, stamp)
	}
	for _, id := range want {
		if got, err := a.Read(ctx, id, 0, 10); err != nil || len(got) != 0 {
			t.Fatalf("Read(%s) after a MatchAppend that wrote nothing: %d messages, %v", id, len(got), err)
		}
	}
	bt.Stamp = stamp
	bt.Entries = []moitessier.Entry{{Listener: one.ID, Text: "hello"}, {Listener: star.ID, Text: "hello"}}
	if msgs, _, err := a.Append(ctx, bt); err != nil || len(msgs) != 2 {
		t.Fatalf("Append from the fresh answer: %d messages, %v", len(msgs), err)
	}
}
