package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/sqlite"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)

func dbPath(tb testing.TB) string {
	tb.Helper()
	return filepath.Join(tb.TempDir(), "moitessier.db")
}

// mustOpen opens the store at path and closes it when the test ends.
func mustOpen(tb testing.TB, path string) *sqlite.Store {
	tb.Helper()
	s, err := sqlite.Open(context.Background(), path)
	if err != nil {
		tb.Fatalf("Open(%s): %v", path, err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// reopen closes s and opens its file again.
func reopen(tb testing.TB, s *sqlite.Store) *sqlite.Store {
	tb.Helper()
	if err := s.Close(); err != nil {
		tb.Fatalf("Close: %v", err)
	}
	return mustOpen(tb, s.Path())
}

func listener(id string, scopes ...string) moitessier.ListenerInfo {
	return moitessier.ListenerInfo{ID: id, Type: moitessier.Shared, Person: "alice", Scopes: scopes, Created: t0}
}

func sub(person string) moitessier.Subscriber {
	return moitessier.Subscriber{Person: person, Cursor: moitessier.Resume, Joined: t0, LeaseExpires: t0.Add(time.Hour)}
}

func mustJoin(tb testing.TB, s moitessier.Store, l moitessier.ListenerInfo, person string) moitessier.Subscriber {
	tb.Helper()
	_, got, _, err := s.Join(context.Background(), l, sub(person), moitessier.Quota{})
	if err != nil {
		tb.Fatalf("Join(%s, %s): %v", l.ID, person, err)
	}
	return got
}

func batch(dispatch string, texts map[string]string) *moitessier.Batch {
	b := &moitessier.Batch{Dispatch: dispatch, Scope: "room.1", Sender: "bob", Created: t0}
	ids := make([]string, 0, len(texts))
	for id := range texts {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		b.Entries = append(b.Entries, moitessier.Entry{Listener: id, Text: texts[id]})
	}
	return b
}

func mustAppend(tb testing.TB, s moitessier.Store, b *moitessier.Batch) []moitessier.Message {
	tb.Helper()
	msgs, _, err := s.Append(context.Background(), b)
	if err != nil {
		tb.Fatalf("Append(%s): %v", b.Dispatch, err)
	}
	return msgs
}

func mustRead(tb testing.TB, s moitessier.Store, id string, after moitessier.Cursor) []moitessier.Message {
	tb.Helper()
	msgs, err := s.Read(context.Background(), id, after, 1000)
	if err != nil {
		tb.Fatalf("Read(%s, %d): %v", id, after, err)
	}
	return msgs
}

func texts(msgs []moitessier.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.Text
	}
	return out
}

func head(tb testing.TB, s moitessier.Store, id string) moitessier.Cursor {
	tb.Helper()
	l, err := s.Listener(context.Background(), id)
	if err != nil {
		tb.Fatalf("Listener(%s): %v", id, err)
	}
	return l.Head
}

// queryInt runs a query on a store's file, through a connection of its own,
// and returns one integer.
func queryInt(tb testing.TB, path, query string) int {
	tb.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(query).Scan(&n); err != nil {
		tb.Fatalf("%s: %v", query, err)
	}
	return n
}

func TestMigrations(t *testing.T) {
	path := dbPath(t)
	s := mustOpen(t, path)
	mustJoin(t, s, listener("l1", "a"), "alice")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got, want := queryInt(t, path, `SELECT count(*) FROM schema_migrations`), sqlite.MigrationCount(); got != want {
		t.Fatalf("schema_migrations holds %d rows, want %d", got, want)
	}
	if got, want := queryInt(t, path, `SELECT max(version) FROM schema_migrations`), sqlite.MigrationCount(); got != want {
		t.Fatalf("schema version %d, want %d", got, want)
	}
	for range 2 {
		s = mustOpen(t, path)
		if got, want := head(t, s, "l1"), moitessier.Cursor(0); got != want {
			t.Fatalf("head %d, want %d", got, want)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := queryInt(t, path, `SELECT count(*) FROM schema_migrations`), sqlite.MigrationCount(); got != want {
		t.Fatalf("after reopening, schema_migrations holds %d rows, want %d", got, want)
	}
	if got, want := queryInt(t, path, `SELECT count(*) FROM listeners`), 1; got != want {
		t.Fatalf("after reopening, %d listeners, want %d", got, want)
	}

	t.Run("NewerSchema", func(t *testing.T) {
		db, err := sql.Open("sqlite", path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(`INSERT INTO schema_migrations (version, name, applied) VALUES (99, 'future', 0)`); err != nil {
			t.Fatal(err)
		}
		db.Close()
		if s, err := sqlite.Open(context.Background(), path); err == nil {
			s.Close()
			t.Fatal("Open of a database with a newer schema succeeded")
		}
		// The refused Open released its lock.
		db, _ = sql.Open("sqlite", path)
		db.Exec(`DELETE FROM schema_migrations WHERE version = 99`)
		db.Close()
		mustOpen(t, path)
	})
}

func TestReopen(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, dbPath(t))
	room := listener("room", "room.*", "hall")
	priv := moitessier.ListenerInfo{ID: "priv", Type: moitessier.Private, Person: "carol", Client: "phone", Scopes: []string{"room.1"}, Created: t0}
	mustJoin(t, s, room, "alice")
	mustJoin(t, s, room, "bob")
	mustJoin(t, s, priv, "carol")
	var want []moitessier.Message
	for i := range 5 {
		want = append(want, mustAppend(t, s, batch(fmt.Sprint("d", i), map[string]string{"room": fmt.Sprint("r", i), "priv": fmt.Sprint("p", i)}))...)
	}
	lease := t0.Add(2 * time.Hour)
	if err := s.Checkpoint(ctx, []moitessier.Checkpoint{{Listener: "room", Person: "bob", Cursor: 3, LeaseExpires: lease}}); err != nil {
		t.Fatal(err)
	}
	wantSubs, err := s.Subscribers(ctx, "room", moitessier.SubscriberRange{})
	if err != nil {
		t.Fatal(err)
	}

	s = reopen(t, s)

	got, err := s.Listener(ctx, "room")
	if err != nil {
		t.Fatal(err)
	}
	if got.Head != 5 || got.Type != moitessier.Shared || got.Person != "alice" || !slices.Equal(got.Scopes, room.Scopes) || !got.Created.Equal(t0) {
		t.Fatalf("room after reopen: %+v", got)
	}
	if got, err := s.Listener(ctx, "priv"); err != nil || got.Client != "phone" || got.Type != moitessier.Private || got.Head != 5 {
		t.Fatalf("priv after reopen: %+v, %v", got, err)
	}
	subs, err := s.Subscribers(ctx, "room", moitessier.SubscriberRange{})
	if err != nil {
		t.Fatal(err)
	}
	if len(subs) != 2 || len(wantSubs) != 2 {
		t.Fatalf("subscribers %+v, want %+v", subs, wantSubs)
	}
	for i := range subs {
		g, w := subs[i], wantSubs[i]
		if g.Person != w.Person || g.Client != w.Client || g.Cursor != w.Cursor || !g.Joined.Equal(w.Joined) || !g.LeaseExpires.Equal(w.LeaseExpires) {
			t.Fatalf("subscriber %d: %+v, want %+v", i, g, w)
		}
	}
	if subs[1].Cursor != 3 || !subs[1].LeaseExpires.Equal(lease) {
		t.Fatalf("bob: %+v, want cursor 3, lease %v", subs[1], lease)
	}
	var all []moitessier.Message
	for _, id := range []string{"priv", "room"} {
		all = append(all, mustRead(t, s, id, 0)...)
	}
	slices.SortFunc(want, func(a, b moitessier.Message) int {
		if a.Listener != b.Listener {
			return map[bool]int{true: -1, false: 1}[a.Listener < b.Listener]
		}
		return int(a.Seq) - int(b.Seq)
	})
	if len(all) != len(want) {
		t.Fatalf("read %d messages, want %d", len(all), len(want))
	}
	for i := range all {
		if !sameMessage(all[i], want[i]) {
			t.Fatalf("message %d: %+v, want %+v", i, all[i], want[i])
		}
	}
	ls, err := s.Match(ctx, "room.1")
	if err != nil || len(ls) != 2 {
		t.Fatalf("Match(room.1) = %+v, %v; want room and priv", ls, err)
	}
	// Sequence numbers go on from the stored heads.
	msgs := mustAppend(t, s, batch("d5", map[string]string{"room": "r5"}))
	if msgs[0].Seq != 6 {
		t.Fatalf("seq after reopen %d, want 6", msgs[0].Seq)
	}
}

func sameMessage(a, b moitessier.Message) bool {
	return a.Listener == b.Listener && a.Seq == b.Seq && a.Dispatch == b.Dispatch && a.Scope == b.Scope &&
		a.Sender == b.Sender && a.Text == b.Text && a.Created.Equal(b.Created)
}

func TestAppendAtomic(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, dbPath(t))
	ids := []string{"a", "b", "c", "d", "e"}
	entries := map[string]string{}
	for _, id := range ids {
		mustJoin(t, s, listener(id, "x"), "alice")
		entries[id] = "text " + id
	}
	mustAppend(t, s, batch("first", entries))

	t.Run("FailureMidBatch", func(t *testing.T) {
		boom := errors.New("boom")
		sqlite.SetAppendHook(s, func(_ *moitessier.Batch, i int) error {
			if i == 3 {
				return boom
			}
			return nil
		})
		b := batch("second", entries)
		b.Key = "k"
		_, _, err := s.Append(ctx, b)
		sqlite.SetAppendHook(s, nil)
		if !errors.Is(err, boom) {
			t.Fatalf("Append error %v, want %v", err, boom)
		}
		for _, id := range ids {
			if got := mustRead(t, s, id, 0); len(got) != 1 || got[0].Dispatch != "first" {
				t.Fatalf("listener %s holds %+v after a failed batch, want only the first message", id, got)
			}
			if h := head(t, s, id); h != 1 {
				t.Fatalf("listener %s head %d after a failed batch, want 1", id, h)
			}
		}
		// What the file holds, not only what the store says.
		if got := queryInt(t, s.Path(), `SELECT count(*) FROM messages WHERE dispatch = 'second'`); got != 0 {
			t.Fatalf("the file holds %d messages of the failed batch", got)
		}
		if got := queryInt(t, s.Path(), `SELECT max(head) FROM listeners`); got != 1 {
			t.Fatalf("the file holds a head of %d after a failed batch, want 1", got)
		}
		if got := queryInt(t, s.Path(), `SELECT count(*) FROM idempotency_keys`); got != 0 {
			t.Fatalf("the file holds %d idempotency keys after a failed batch", got)
		}
		// The key of the failed batch was not recorded: a retry writes.
		msgs, replayed, err := s.Append(ctx, b)
		if err != nil || replayed || len(msgs) != len(ids) {
			t.Fatalf("retry: %d messages, replayed %v, %v", len(msgs), replayed, err)
		}
		for _, m := range msgs {
			if m.Seq != 2 {
				t.Fatalf("retry wrote seq %d on %s, want 2", m.Seq, m.Listener)
			}
		}
	})

	t.Run("Cancel", func(t *testing.T) {
		// A large batch cancelled at some point: all of it is stored, or none.
		s := mustOpen(t, dbPath(t))
		mustJoin(t, s, listener("big", "x"), "alice")
		b := &moitessier.Batch{Dispatch: "big", Scope: "x", Sender: "bob", Created: t0}
		for i := range 4000 {
			b.Entries = append(b.Entries, moitessier.Entry{Listener: "big", Text: fmt.Sprint(i)})
		}
		for _, delay := range []time.Duration{0, 100 * time.Microsecond, time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond, time.Hour} {
			before := head(t, s, "big")
			ctx, cancel := context.WithCancel(ctx)
			time.AfterFunc(delay, cancel)
			msgs, _, err := s.Append(ctx, b)
			cancel()
			after := head(t, s, "big")
			if got := queryInt(t, s.Path(), `SELECT head FROM listeners WHERE id = 'big'`); moitessier.Cursor(got) != after {
				t.Fatalf("delay %v: stored head %d, cached %d", delay, got, after)
			}
			stored := queryInt(t, s.Path(), fmt.Sprintf(`SELECT count(*) FROM messages WHERE listener_id = 'big' AND seq > %d`, before))
			t.Logf("delay %v: %d messages stored, error %v", delay, stored, err)
			switch {
			case err == nil && (len(msgs) != len(b.Entries) || stored != len(b.Entries) || after != before+moitessier.Cursor(len(b.Entries))):
				t.Fatalf("delay %v: Append succeeded with %d messages, %d stored, head %d→%d", delay, len(msgs), stored, before, after)
			case err != nil && (stored != 0 || after != before):
				t.Fatalf("delay %v: Append failed (%v) but %d messages stored, head %d→%d", delay, err, stored, before, after)
			case err != nil && !errors.Is(err, context.Canceled):
				t.Fatalf("delay %v: error %v, want context.Canceled", delay, err)
			}
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		// Concurrent Appends share transactions; one that fails leaves
		// nothing and takes nothing of the others with it.
		s := mustOpen(t, dbPath(t))
		for _, id := range ids {
			mustJoin(t, s, listener(id, "x"), "alice")
		}
		boom := errors.New("boom")
		sqlite.SetAppendHook(s, func(b *moitessier.Batch, i int) error {
			if strings.HasPrefix(b.Dispatch, "bad") && i == 2 {
				return boom
			}
			return nil
		})
		const workers, each = 8, 50
		var wg sync.WaitGroup
		errs := make(chan error, workers*each)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					name := fmt.Sprint("good", w, "-", i)
					if i%3 == 0 {
						name = fmt.Sprint("bad", w, "-", i)
					}
					msgs, _, err := s.Append(ctx, batch(name, entries))
					switch {
					case strings.HasPrefix(name, "bad") && !errors.Is(err, boom):
						errs <- fmt.Errorf("%s: error %v, want %v", name, err, boom)
					case strings.HasPrefix(name, "good") && (err != nil || len(msgs) != len(ids)):
						errs <- fmt.Errorf("%s: %d messages, %v", name, len(msgs), err)
					}
				}
			}()
		}
		wg.Wait()
		sqlite.SetAppendHook(s, nil)
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		good := workers * (each - (each+2)/3)
		for _, id := range ids {
			msgs := mustRead(t, s, id, 0)
			if len(msgs) != good || head(t, s, id) != moitessier.Cursor(good) {
				t.Fatalf("listener %s holds %d messages, head %d; want %d", id, len(msgs), head(t, s, id), good)
			}
			for i, m := range msgs {
				if m.Seq != moitessier.Cursor(i+1) || !strings.HasPrefix(m.Dispatch, "good") {
					t.Fatalf("listener %s message %d: seq %d of %s", id, i, m.Seq, m.Dispatch)
				}
			}
		}
	})

	t.Run("SkipsDeleted", func(t *testing.T) {
		b := batch("third", map[string]string{"a": "x", "gone": "y", "b": "z"})
		msgs := mustAppend(t, s, b)
		if got := texts(msgs); !slices.Equal(got, []string{"x", "z"}) {
			t.Fatalf("wrote %q, want [x z]", got)
		}
	})
}

func TestIdempotency(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, dbPath(t))
	mustJoin(t, s, listener("a", "x"), "alice")
	mustJoin(t, s, listener("b", "x"), "alice")
	b := batch("d1", map[string]string{"a": "one", "b": "uno"})
	b.Key, b.KeySince = "key", t0.Add(-time.Minute)
	first := mustAppend(t, s, b)

	again := batch("d2", map[string]string{"a": "two", "b": "dos"})
	again.Key, again.KeySince = "key", t0.Add(-time.Minute)
	msgs, replayed, err := s.Append(ctx, again)
	if err != nil || !replayed || len(msgs) != 2 || !sameMessage(msgs[0], first[0]) || !sameMessage(msgs[1], first[1]) {
		t.Fatalf("replay: %+v, %v, %v; want %+v", msgs, replayed, err, first)
	}
	if h := head(t, s, "a"); h != 1 {
		t.Fatalf("head %d after a replay, want 1", h)
	}

	// Another sender's key is another key.
	other := batch("d3", map[string]string{"a": "three"})
	other.Sender, other.Key = "carol", "key"
	if msgs, replayed, err := s.Append(ctx, other); err != nil || replayed || len(msgs) != 1 {
		t.Fatalf("other sender: %+v, %v, %v", msgs, replayed, err)
	}

	// Replays return the messages that still exist.
	if _, err := s.Leave(ctx, "b", "alice", ""); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s)
	msgs, replayed, err = s.Append(ctx, again)
	if err != nil || !replayed || len(msgs) != 1 || !sameMessage(msgs[0], first[0]) {
		t.Fatalf("replay after reopen and leave: %+v, %v, %v; want %+v", msgs, replayed, err, first[:1])
	}

	// Out of the window, the key no longer counts.
	late := batch("d4", map[string]string{"a": "four"})
	late.Created, late.Key, late.KeySince = t0.Add(time.Hour), "key", t0.Add(time.Second)
	if msgs, replayed, err := s.Append(ctx, late); err != nil || replayed || len(msgs) != 1 || msgs[0].Text != "four" {
		t.Fatalf("after the window: %+v, %v, %v", msgs, replayed, err)
	}
	late.Dispatch = "d5"
	if msgs, replayed, err := s.Append(ctx, late); err != nil || !replayed || len(msgs) != 1 || msgs[0].Dispatch != "d4" {
		t.Fatalf("the new key: %+v, %v, %v", msgs, replayed, err)
	}
}

func TestLock(t *testing.T) {
	path := dbPath(t)
	s := mustOpen(t, path)
	if s2, err := sqlite.Open(context.Background(), path); !errors.Is(err, sqlite.ErrLocked) {
		if err == nil {
			s2.Close()
		}
		t.Fatalf("second Open: %v, want an error wrapping ErrLocked", err)
	}
	// Through another path to the same file.
	rel, err := filepath.Rel(mustGetwd(t), path)
	if err == nil {
		if s2, err := sqlite.Open(context.Background(), rel); !errors.Is(err, sqlite.ErrLocked) {
			if err == nil {
				s2.Close()
			}
			t.Fatalf("second Open by a relative path: %v, want an error wrapping ErrLocked", err)
		}
	}
	if out, err := lockHelper(t, path); err == nil || !strings.Contains(string(out), "locked") {
		t.Fatalf("another process opened the database: %s (%v)", out, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if out, err := lockHelper(t, path); err != nil {
		t.Fatalf("another process could not open the database after Close: %s (%v)", out, err)
	}
	mustOpen(t, path)
}

func mustGetwd(tb testing.TB) string {
	wd, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	return wd
}

// lockHelper opens path in a child process (TestLockHelper) and returns its
// output.
func lockHelper(tb testing.TB, path string) ([]byte, error) {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockHelper$")
	cmd.Env = append(os.Environ(), "SQLITE_LOCK_HELPER_PATH="+path)
	return cmd.CombinedOutput()
}

// TestLockHelper runs only as the child process of TestLock.
func TestLockHelper(t *testing.T) {
	path := os.Getenv("SQLITE_LOCK_HELPER_PATH")
	if path == "" {
		t.Skip("runs as TestLock's child process")
	}
	s, err := sqlite.Open(context.Background(), path)
	if errors.Is(err, sqlite.ErrLocked) {
		fmt.Println("locked")
		os.Exit(1)
	}
	if err != nil {
		fmt.Println(err)
		os.Exit(2)
	}
	s.Close()
}

func TestSweep(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, dbPath(t))
	now := t0.Add(24 * time.Hour)
	short := func(p string) moitessier.Subscriber {
		return moitessier.Subscriber{Person: p, Joined: t0, LeaseExpires: now.Add(-time.Second)}
	}
	long := func(p string) moitessier.Subscriber {
		return moitessier.Subscriber{Person: p, Joined: t0, LeaseExpires: now.Add(time.Hour)}
	}
	join := func(l moitessier.ListenerInfo, sub moitessier.Subscriber) {
		t.Helper()
		if _, _, _, err := s.Join(ctx, l, sub, moitessier.Quota{}); err != nil {
			t.Fatal(err)
		}
	}
	// gone: one expired subscriber and many messages; half: one of two expired;
	// kept: fresh, with old and new messages.
	join(listener("gone", "g"), short("a"))
	join(listener("half", "h"), short("a"))
	join(listener("half", "h"), long("b"))
	join(listener("kept", "k"), long("a"))
	for i := range 25 {
		b := batch(fmt.Sprint(i), map[string]string{"gone": "g", "half": "h", "kept": fmt.Sprint(i + 1)})
		b.Created = now.Add(-time.Duration(25-i) * time.Minute) // 25 min ago … 1 min ago
		b.Key = fmt.Sprint("key", i)
		mustAppend(t, s, b)
	}
	res, err := s.Sweep(ctx, moitessier.SweepParams{
		Now:        now,
		MaxAge:     20*time.Minute + time.Second, // drops the 5 oldest
		MaxCount:   15,                           // then keeps the newest 15
		KeysBefore: now.Add(-10*time.Minute - time.Second),
		BatchSize:  4,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Expired) != 1 || res.Expired[0].ID != "gone" || res.Expired[0].Head != 25 {
		t.Fatalf("expired %+v, want gone", res.Expired)
	}
	// 2 subscribers; messages: 25 of gone, 10 each of half and kept; keys 15.
	if res.Subscribers != 2 || res.Messages != 25+10+10 || res.Keys != 15 {
		t.Fatalf("sweep removed %d subscribers, %d messages, %d keys; want 2, 45, 15", res.Subscribers, res.Messages, res.Keys)
	}
	if _, err := s.Listener(ctx, "gone"); !errors.Is(err, moitessier.ErrNotFound) {
		t.Fatalf("swept listener: %v", err)
	}
	if ls, _ := s.Match(ctx, "g"); len(ls) != 0 {
		t.Fatalf("Match finds a swept listener: %+v", ls)
	}
	got := mustRead(t, s, "kept", 0)
	if len(got) != 15 || got[0].Seq != 11 || got[14].Seq != 25 {
		t.Fatalf("kept holds %d messages, %s…", len(got), texts(got))
	}
	if h := head(t, s, "kept"); h != 25 {
		t.Fatalf("kept head %d, want 25", h)
	}
	// The newest keys still replay.
	b := batch("again", map[string]string{"kept": "x"})
	b.Key = "key24"
	if msgs, replayed, err := s.Append(ctx, b); err != nil || !replayed || len(msgs) != 2 || msgs[0].Listener != "half" || msgs[1].Seq != 25 {
		t.Fatalf("replay after sweep: %+v, %v, %v", msgs, replayed, err)
	}
	// A second sweep finds nothing more.
	res, err = s.Sweep(ctx, moitessier.SweepParams{Now: now, MaxAge: 20*time.Minute + time.Second, MaxCount: 15,
		KeysBefore: now.Add(-10*time.Minute - time.Second), BatchSize: 4})
	if err != nil || len(res.Expired) != 0 || res.Subscribers+res.Messages+res.Keys != 0 {
		t.Fatalf("second sweep: %+v, %v", res, err)
	}
	s = reopen(t, s)
	if got := mustRead(t, s, "kept", 0); len(got) != 15 {
		t.Fatalf("after reopen kept holds %d messages", len(got))
	}
	if _, err := s.Listener(ctx, "gone"); !errors.Is(err, moitessier.ErrNotFound) {
		t.Fatalf("swept listener after reopen: %v", err)
	}
	// Trimming by count after reopen goes on from the stored heads.
	res, err = s.Sweep(ctx, moitessier.SweepParams{Now: now, MaxCount: 5})
	if err != nil || res.Messages != 20 {
		t.Fatalf("sweep to 5 per listener: %+v, %v; want 20 messages", res, err)
	}
}

func TestConcurrent(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, dbPath(t))
	const writers, perWriter = 4, 200
	mustJoin(t, s, listener("l", "x"), "alice")
	var wg, wwg sync.WaitGroup
	errs := make(chan error, writers+3)
	for w := range writers {
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			for i := range perWriter {
				text := fmt.Sprint(w, "-", i)
				if _, _, err := s.Append(ctx, batch(text, map[string]string{"l": text})); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wwg.Add(1)
	go func() {
		defer wwg.Done()
		for i := range 50 {
			l := listener(fmt.Sprint("other", i), "x")
			if _, _, _, err := s.Join(ctx, l, sub("bob"), moitessier.Quota{}); err != nil {
				errs <- err
				return
			}
		}
	}()
	done := make(chan struct{})
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var cur moitessier.Cursor
			seen := map[string]bool{}
			for {
				msgs, err := s.Read(ctx, "l", cur, 50)
				if err != nil {
					errs <- err
					return
				}
				for _, m := range msgs {
					if m.Seq != cur+1 || seen[m.Text] {
						errs <- fmt.Errorf("read seq %d (%s) after %d", m.Seq, m.Text, cur)
						return
					}
					seen[m.Text] = true
					cur = m.Seq
				}
				if len(msgs) > 0 {
					continue
				}
				select {
				case <-done:
					if cur != writers*perWriter {
						errs <- fmt.Errorf("read up to %d, want %d", cur, writers*perWriter)
					}
					return
				default:
				}
				if _, err := s.Match(ctx, "x"); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wwg.Wait()
	close(done)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if ls, err := s.Match(ctx, "x"); err != nil || len(ls) != 51 {
		t.Fatalf("Match: %d listeners, %v; want 51", len(ls), err)
	}
}

// TestCombinedWrites queues writes behind a held one, so that they run as
// one transaction, and checks that each sees the ones before it.
func TestCombinedWrites(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, dbPath(t))
	mustJoin(t, s, listener("L", "x"), "alice")
	mustJoin(t, s, listener("M", "y"), "alice")
	hold := make(chan struct{})
	sqlite.SetAppendHook(s, func(b *moitessier.Batch, i int) error {
		if b.Dispatch == "hold" {
			<-hold
		}
		return nil
	})
	defer sqlite.SetAppendHook(s, nil)

	var wg sync.WaitGroup
	run := func(fn func()) {
		wg.Add(1)
		go func() { defer wg.Done(); fn() }()
		time.Sleep(20 * time.Millisecond) // queue the writes in this order
	}
	type result struct {
		msgs    []moitessier.Message
		sub     moitessier.Subscriber
		flag    bool
		err     error
		created bool
	}
	var b1, joinBob, leaveAlice, leaveBob, lost, joinCarol, fresh result
	run(func() { _, _, _ = s.Append(ctx, batch("hold", map[string]string{"M": "held"})) })
	run(func() { b1.msgs, _, b1.err = s.Append(ctx, batch("b1", map[string]string{"L": "one"})) })
	run(func() {
		_, joinBob.sub, joinBob.created, joinBob.err = s.Join(ctx, listener("L", "x"), sub("bob"), moitessier.Quota{})
	})
	run(func() { leaveAlice.flag, leaveAlice.err = s.Leave(ctx, "L", "alice", "") })
	run(func() { leaveBob.flag, leaveBob.err = s.Leave(ctx, "L", "bob", "") })
	run(func() { lost.msgs, _, lost.err = s.Append(ctx, batch("lost", map[string]string{"L": "lost"})) })
	run(func() {
		_, joinCarol.sub, joinCarol.created, joinCarol.err = s.Join(ctx, listener("L", "x"), sub("carol"), moitessier.Quota{})
	})
	run(func() {
		fresh.msgs, _, fresh.err = s.Append(ctx, batch("fresh", map[string]string{"L": "new", "M": "m"}))
	})
	close(hold)
	wg.Wait()

	for name, r := range map[string]result{"b1": b1, "join bob": joinBob, "leave alice": leaveAlice,
		"leave bob": leaveBob, "lost": lost, "join carol": joinCarol, "fresh": fresh} {
		if r.err != nil {
			t.Fatalf("%s: %v", name, r.err)
		}
	}
	switch {
	case len(b1.msgs) != 1 || b1.msgs[0].Seq != 1:
		t.Fatalf("b1 wrote %+v", b1.msgs)
	case joinBob.created || joinBob.sub.Cursor != 1:
		t.Fatalf("bob joined at %d (created %v), want 1", joinBob.sub.Cursor, joinBob.created)
	case leaveAlice.flag || !leaveBob.flag:
		t.Fatalf("leaves deleted the listener: %v, %v; want false, true", leaveAlice.flag, leaveBob.flag)
	case len(lost.msgs) != 0:
		t.Fatalf("an append to a deleted listener wrote %+v", lost.msgs)
	case !joinCarol.created || joinCarol.sub.Cursor != 0:
		t.Fatalf("carol joined at %d (created %v), want 0, created", joinCarol.sub.Cursor, joinCarol.created)
	case len(fresh.msgs) != 2 || fresh.msgs[0].Listener != "L" || fresh.msgs[0].Seq != 1 || fresh.msgs[1].Seq != 2:
		t.Fatalf("fresh wrote %+v, want L:1 and M:2", fresh.msgs)
	}
	check := func(s *sqlite.Store) {
		t.Helper()
		if h := head(t, s, "L"); h != 1 {
			t.Fatalf("L head %d, want 1", h)
		}
		if h := head(t, s, "M"); h != 2 {
			t.Fatalf("M head %d, want 2", h)
		}
		if got := texts(mustRead(t, s, "L", 0)); !slices.Equal(got, []string{"new"}) {
			t.Fatalf("L holds %q, want [new]", got)
		}
		subs, err := s.Subscribers(ctx, "L", moitessier.SubscriberRange{})
		if err != nil || len(subs) != 1 || subs[0].Person != "carol" {
			t.Fatalf("L subscribers %+v, %v; want carol", subs, err)
		}
		if ls, err := s.Match(ctx, "x"); err != nil || len(ls) != 1 || ls[0].Head != 1 {
			t.Fatalf("Match(x) = %+v, %v", ls, err)
		}
	}
	check(s)
	check(reopen(t, s))
}
