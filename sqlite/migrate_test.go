package sqlite_test

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/sqlite"
)

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
