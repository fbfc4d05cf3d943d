package moitessierhttp_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/moitessierhttp"
	"github.com/likestripes/moitessier/postgres"
)

// pgStore opens a Postgres store on a fresh schema, or skips the test when
// no server answers at MOITESSIER_POSTGRES_DSN (default the local one).
func pgStore(t *testing.T) *postgres.Store {
	t.Helper()
	dsn := os.Getenv("MOITESSIER_POSTGRES_DSN")
	if dsn == "" {
		dsn = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		if os.Getenv("MOITESSIER_REQUIRE_POSTGRES") == "1" {
			t.Fatalf("PostgreSQL required but unreachable: %v", err)
		}
		t.Skipf("PostgreSQL unreachable; set MOITESSIER_POSTGRES_DSN: %v", err)
	}
	defer conn.Close(ctx)
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "mt_test_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, dsn); err == nil {
			_, _ = c.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
			_ = c.Close(ctx)
		}
	})
	s, err := postgres.New(ctx, postgres.Config{DSN: dsn, Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestDispatchOutcomeUnknown: a dispatch whose write was under way when the
// store lost it is answered 503 outcome_unknown, which the Client turns
// into moitessier.ErrOutcomeUnknown.
func TestDispatchOutcomeUnknown(t *testing.T) {
	s := pgStore(t)
	hub, err := moitessier.New(s, moitessier.Options{GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	srv, err := moitessierhttp.New(hub, moitessierhttp.Config{Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	ctx := ctxT(t)
	l, err := hub.NewListener(ctx, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "room"})
	if err != nil {
		t.Fatal(err)
	}
	// Hold the listener's row lock, so the dispatch's statement waits in
	// the database; then close the store, which cancels that statement.
	// (On a connection of its own: Close waits for the pool's.)
	conn, err := pgx.ConnectConfig(ctx, s.Pool().Config().ConnConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(ctx, "SELECT 1 FROM "+pgx.Identifier{s.Schema(), "listeners"}.Sanitize()+" WHERE id = $1 FOR UPDATE", l.ID()); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		c := &moitessierhttp.Client{BaseURL: ts.URL, Token: all(t, "alice")}
		_, err := c.Dispatch(ctx, moitessierhttp.DispatchRequest{Scope: "room", Text: "hi"})
		done <- err
	}()
	waitLockWait(t, s)
	closed := make(chan struct{})
	go func() { _ = s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("Store.Close did not end the append under way within 20s")
	}
	err = <-done
	var he *moitessierhttp.Error
	if !errors.As(err, &he) || he.Status != http.StatusServiceUnavailable || he.Code != "outcome_unknown" {
		t.Fatalf("dispatch whose write was cut off: %v, want 503 outcome_unknown", err)
	}
	if !errors.Is(err, moitessier.ErrOutcomeUnknown) {
		t.Fatalf("client error %v does not match ErrOutcomeUnknown", err)
	}
}

func waitLockWait(t *testing.T, s *postgres.Store) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var n int
		err := s.Pool().QueryRow(ctxT(t), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%'||$1||'%'`, s.Schema()).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the dispatch's statement never waited on the lock")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
