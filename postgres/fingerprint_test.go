package postgres_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/likestripes/moitessier"
)

// TestUpgradeIdempotencyKeys migrates a schema made before idempotency keys
// had fingerprints: a key recorded then still replays (it matches any
// request, having no fingerprint), and new keys get fingerprints.
func TestUpgradeIdempotencyKeys(t *testing.T) {
	schema := newSchema(t)
	ctx := ctxT(t)
	// The migrations that came before fingerprints, as an older version
	// of this package applied them.
	exec, q := schemaBefore(t, schema, "_idempotency_fingerprint.sql")
	// A key recorded by the older version: its dispatch reached nobody.
	exec("INSERT INTO "+q+".dispatch_keys (sender, key, recorded_ns) VALUES ('alice', 'k-old', $1)", time.Now().UnixNano())

	s := openStore(t, schema) // migrates
	hub, err := moitessier.New(s, moitessier.Options{GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	d, err := hub.Dispatch(ctx, "alice", "pay", "any text", moitessier.IdempotencyKey("k-old"))
	if err != nil || !d.Replayed {
		t.Fatalf("a key recorded before fingerprints: %+v, %v; want a replay", d, err)
	}
	if _, err := hub.Dispatch(ctx, "alice", "pay", "one", moitessier.IdempotencyKey("k-new")); err != nil {
		t.Fatal(err)
	}
	if _, err := hub.Dispatch(ctx, "alice", "pay", "two", moitessier.IdempotencyKey("k-new")); !errors.Is(err, moitessier.ErrIdempotencyMismatch) {
		t.Fatalf("a new key reused for another text: %v, want ErrIdempotencyMismatch", err)
	}
}

// schemaBefore makes schema as an older version of this package left it:
// with the migrations before the one whose file name ends with suffix. It
// returns a func that runs a statement on it (failing the test on an
// error), and the schema's name, quoted.
func schemaBefore(t *testing.T, schema, suffix string) (exec func(sql string, args ...any), q string) {
	t.Helper()
	ctx := ctxT(t)
	files, err := filepath.Glob("migrations/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, testDSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	q = pgx.Identifier{schema}.Sanitize()
	exec = func(sql string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%.80s: %v", sql, err)
		}
	}
	exec("CREATE SCHEMA " + q)
	exec("CREATE TABLE " + q + ".schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
	for _, f := range files {
		base := filepath.Base(f)
		if strings.HasSuffix(base, suffix) {
			return exec, q
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		exec(strings.ReplaceAll(string(b), "{{schema}}", q))
		v, _ := strconv.Atoi(base[:strings.Index(base, "_")])
		exec("INSERT INTO "+q+".schema_migrations (version, name) VALUES ($1, $2)", v, strings.TrimSuffix(base, ".sql"))
	}
	t.Fatalf("no migration *%s", suffix)
	return nil, ""
}
