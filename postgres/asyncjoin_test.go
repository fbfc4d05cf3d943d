package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/postgres"
)

// TestJoinCommitsAsynchronously: a Join that creates a listener with
// concrete scopes turns synchronous_commit off for its own transaction; one
// that adds a subscriber to an existing listener, one that creates a
// pattern listener, and any with DurableJoins leave it on. The setting
// ends with the transaction. A scope's version is not the transaction's id.
func TestJoinCommitsAsynchronously(t *testing.T) {
	schema := newSchema(t)
	ctx := ctxT(t)
	durable := openStoreWith(t, postgres.Config{Schema: schema, DurableJoins: true})
	async := openStore(t, schema)
	conn, err := async.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	show := func(q interface {
		QueryRow(context.Context, string, ...any) pgx.Row
	}) string {
		t.Helper()
		var v string
		if err := q.QueryRow(ctx, "SHOW synchronous_commit").Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	now := time.Now()
	for _, c := range []struct {
		name         string
		s            *postgres.Store
		scope, owner string
		want         string
	}{
		{"creates, concrete scope", async, "room.1", "alice", "off"},
		{"adds a subscriber", async, "room.1", "bob", "on"},
		{"renews a lease", async, "room.1", "bob", "on"},
		{"creates, pattern scope", async, "room.*", "alice", "on"},
		{"creates, DurableJoins", durable, "room.2", "alice", "on"},
	} {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		l := moitessier.ListenerInfo{ID: "async-" + c.scope, Type: moitessier.Shared, Person: "alice", Scopes: []string{c.scope}, Created: now}
		if err := c.s.JoinTx(ctx, tx, l, subscriberAt(c.owner, now)); err != nil {
			t.Fatalf("%s: join: %v", c.name, err)
		}
		got := show(tx)
		var txid, version int64
		if err := tx.QueryRow(ctx, `SELECT txid_current(), coalesce((SELECT version FROM `+pgx.Identifier{schema}.Sanitize()+`.scope_versions WHERE scope = $1), 0)`, c.scope).Scan(&txid, &version); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("%s: synchronous_commit %q in the join's transaction, want %q", c.name, got, c.want)
		}
		if after := show(conn); after != "on" {
			t.Errorf("%s: synchronous_commit %q after the join's transaction, want on", c.name, after)
		}
		if version == txid {
			t.Errorf("%s: the scope's version is the transaction's id", c.name)
		}
	}
}

// TestLostJoin plays what a crash of the server leaves after it lost an
// asynchronous join: the listener's rows are gone and its scope's version
// is back to the one before (that of the creation of another listener on
// it), although the hub had matched the scope since, and keeps that answer
// cached. The hub's handle on the lost listener reports ErrClosed; the next
// dispatch reaches the listener that survived, and one created later; the
// lost one, joined again, is created anew.
func TestLostJoin(t *testing.T) {
	s := mustStore(t)
	ctx := ctxT(t)
	hub := newHub(t, s, moitessier.Options{})
	join := func(scopes ...string) *moitessier.Listener {
		t.Helper()
		l, err := hub.NewListener(ctx, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scopes: scopes})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	q := pgx.Identifier{s.Schema()}.Sanitize()
	version := func() int64 {
		t.Helper()
		var v int64
		if err := s.Pool().QueryRow(ctx, `SELECT version FROM `+q+`.scope_versions WHERE scope = 'crash'`).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	kept := join("crash")
	before := version()
	lost := join("crash", "elsewhere")
	if ls, _, err := s.MatchCached(ctx, "crash"); err != nil || len(ls) != 2 {
		t.Fatalf("match: %v %v", ls, err)
	}
	// What the crash leaves: the rows as they were before the lost join,
	// written by no trigger.
	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	for _, stmt := range []string{
		`SET LOCAL session_replication_role = replica`,
		`DELETE FROM ` + q + `.subscribers WHERE listener = '` + lost.ID() + `'`,
		`DELETE FROM ` + q + `.listener_scopes WHERE listener = '` + lost.ID() + `'`,
		`DELETE FROM ` + q + `.listeners WHERE id = '` + lost.ID() + `'`,
		`UPDATE ` + q + `.scope_versions SET version = ` + fmt.Sprint(before) + ` WHERE scope = 'crash'`,
	} {
		if _, err := tx.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if ls, _, err := s.MatchCached(ctx, "crash"); err != nil || len(ls) != 2 {
		t.Fatalf("the cached answer: %v %v", ls, err)
	}
	if _, err := lost.Messages(ctx, 0, 0); !errors.Is(err, moitessier.ErrClosed) {
		t.Fatalf("Messages on the lost listener: %v, want ErrClosed", err)
	}
	d, err := hub.Dispatch(ctx, "bob", "crash", "first")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(d.Reached, []string{kept.ID()}) {
		t.Fatalf("reached %v, want only %s", d.Reached, kept.ID())
	}
	later := join("crash", "later")
	d, err = hub.Dispatch(ctx, "bob", "crash", "second")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(d.Reached)
	want := []string{kept.ID(), later.ID()}
	slices.Sort(want)
	if !slices.Equal(d.Reached, want) {
		t.Fatalf("reached %v, want %v", d.Reached, want)
	}
	again := join("crash", "elsewhere")
	if again.Info().Created.Equal(lost.Info().Created) {
		t.Fatal("the lost listener joined again is the lost incarnation")
	}
	if msgs, err := again.Messages(ctx, 0, 0); err != nil || len(msgs) != 0 {
		t.Fatalf("the lost listener joined again holds %v, %v; want nothing", msgs, err)
	}
}
