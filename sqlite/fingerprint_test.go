package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
)

// TestUpgradeIdempotencyKeys opens a database made at schema version 1,
// before idempotency keys had fingerprints: it is migrated, a key recorded
// then still replays (it matches any request, having no fingerprint), and
// new keys get fingerprints.
func TestUpgradeIdempotencyKeys(t *testing.T) {
	path := dbPath(t)
	initSQL, err := os.ReadFile("migrations/0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		string(initSQL),
		`CREATE TABLE schema_migrations (version INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied INTEGER NOT NULL) STRICT`,
		`INSERT INTO schema_migrations VALUES (1, '0001_init', 0)`,
		`INSERT INTO listeners (id, type, person, client, created, head) VALUES ('s-old', 1000, 'x', '', 0, 1)`,
		`INSERT INTO listener_scopes VALUES ('s-old', 0, 'pay')`,
		`INSERT INTO subscribers VALUES ('s-old', 'x', '', 0, 0, 9223372036854775807)`,
		`INSERT INTO messages VALUES ('s-old', 1, 'd-old', 'pay', 'alice', 'charge', ` + nowNS() + `)`,
		// refs: uvarint len("s-old"), "s-old", uvarint seq 1.
		`INSERT INTO idempotency_keys (sender, key, dispatch, created, refs) VALUES ('alice', 'k-old', 'd-old', ` + nowNS() + `, x'05732d6f6c6401')`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%.60s: %v", q, err)
		}
	}
	db.Close()

	s := mustOpen(t, path)
	hub, err := moitessier.New(s, moitessier.Options{GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	ctx := context.Background()
	d, err := hub.Dispatch(ctx, "alice", "pay", "another text", moitessier.IdempotencyKey("k-old"))
	if err != nil || !d.Replayed || d.ID != "d-old" || len(d.Messages) != 1 || d.Messages[0].Text != "charge" {
		t.Fatalf("a key recorded before fingerprints: %+v, %v; want a replay of d-old", d, err)
	}
	if _, err := hub.Dispatch(ctx, "alice", "pay", "one", moitessier.IdempotencyKey("k-new")); err != nil {
		t.Fatal(err)
	}
	if _, err := hub.Dispatch(ctx, "alice", "pay", "two", moitessier.IdempotencyKey("k-new")); !errors.Is(err, moitessier.ErrIdempotencyMismatch) {
		t.Fatalf("a new key reused for another text: %v, want ErrIdempotencyMismatch", err)
	}
}

func nowNS() string { return strconv.FormatInt(time.Now().UnixNano(), 10) }
