package postgres_test

import (
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/postgres"
)

// TestJoinCommitsAsynchronously: Join turns synchronous_commit off for its
// own transaction when it may (concrete scopes, DurableJoins unset), and
// leaves it on for a pattern listener and with DurableJoins; the setting
// ends with the transaction.
func TestJoinCommitsAsynchronously(t *testing.T) {
	schema := newSchema(t)
	ctx := ctxT(t)
	durable, err := postgres.New(ctx, postgres.Config{DSN: testDSN(), Schema: schema, DurableJoins: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = durable.Close() })
	async := openStore(t, schema)
	now := time.Now()
	for i, c := range []struct {
		name  string
		s     *postgres.Store
		scope string
		want  string
	}{
		{"concrete scope", async, "room.1", "off"},
		{"pattern scope", async, "room.*", "on"},
		{"DurableJoins", durable, "room.2", "on"},
	} {
		tx, err := async.Pool().Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		l := moitessier.ListenerInfo{ID: "async-" + c.scope, Type: moitessier.Shared, Person: "alice", Scopes: []string{c.scope}, Created: now}
		if err := c.s.JoinTx(ctx, tx, l, subscriberAt("alice", now)); err != nil {
			t.Fatalf("%s: join: %v", c.name, err)
		}
		var got string
		if err := tx.QueryRow(ctx, "SHOW synchronous_commit").Scan(&got); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("%s: synchronous_commit %q in the join's transaction, want %q", c.name, got, c.want)
		}
		var after string
		if err := async.Pool().QueryRow(ctx, "SHOW synchronous_commit").Scan(&after); err != nil {
			t.Fatal(err)
		}
		if after != "on" {
			t.Errorf("%s: synchronous_commit %q after the join's transaction, want on", c.name, after)
		}
		if _, err := async.Listener(ctx, l.ID); err != nil {
			t.Errorf("case %d: the listener joined in the transaction: %v", i, err)
		}
	}
}

// TestLostJoin plays what a crash of the server leaves after it lost an
// asynchronous join: the listener's rows are gone and its scope's version
// is back to the one before the join (no row), although the hub had
// matched the scope since and keeps that answer cached. The hub's handle
// on the lost listener reports ErrClosed; a new listener on the scope
// receives the next dispatch, and the lost one, joined again, is created
// anew and empty.
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
	lost := join("crash")
	for range 2 { // the second is answered from the cache
		if d, err := hub.Dispatch(ctx, "bob", "crash", "before"); err != nil || len(d.Reached) != 1 {
			t.Fatalf("dispatch: %v %v", d.Reached, err)
		}
	}
	// What the crash leaves: no listener, no scope version (the join was
	// the scope's first). The triggers are off: nothing ran.
	q := pgx.Identifier{s.Schema()}.Sanitize()
	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	for _, table := range []string{"messages", "subscribers", "listener_scopes", "listeners", "scope_versions"} {
		if _, err := tx.Exec(ctx, `SET LOCAL session_replication_role = replica`); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM `+q+`.`+table); err != nil {
			t.Fatalf("delete from %s: %v", table, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := lost.Messages(ctx, 0, 0); !errors.Is(err, moitessier.ErrClosed) {
		t.Fatalf("Messages on the lost listener: %v, want ErrClosed", err)
	}
	other := join("crash", "elsewhere")
	d, err := hub.Dispatch(ctx, "bob", "crash", "after")
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Reached) != 1 || d.Reached[0] != other.ID() {
		t.Fatalf("reached %v, want only the new listener %s", d.Reached, other.ID())
	}
	if msgs, err := other.Messages(ctx, 0, 0); err != nil || len(msgs) != 1 || msgs[0].Text != "after" {
		t.Fatalf("the new listener's messages: %v, %v", msgs, err)
	}
	again := join("crash")
	if again.Info().Created.Equal(lost.Info().Created) {
		t.Fatal("the lost listener joined again is the lost incarnation")
	}
	if msgs, err := again.Messages(ctx, 0, 0); err != nil || len(msgs) != 0 {
		t.Fatalf("the lost listener joined again holds %v, %v; want nothing", msgs, err)
	}
}
