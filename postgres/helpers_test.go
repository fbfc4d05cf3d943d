package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/likestripes/moitessier/postgres"
)

const defaultDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// testDSN returns the server to test against: MOITESSIER_POSTGRES_DSN, or
// the local default.
func testDSN() string {
	if d := os.Getenv("MOITESSIER_POSTGRES_DSN"); d != "" {
		return d
	}
	return defaultDSN
}

// testDSNWith is testDSN, a URL, with the query parameter param
// ("key=value") added.
func testDSNWith(param string) string {
	dsn, sep := testDSN(), "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	return dsn + sep + param
}

var (
	reachOnce sync.Once
	reachErr  error
)

// needPostgres skips the test when the server cannot be reached, or fails
// it when MOITESSIER_REQUIRE_POSTGRES=1.
func needPostgres(tb testing.TB) {
	tb.Helper()
	reachOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, testDSN())
		if err != nil {
			reachErr = err
			return
		}
		reachErr = conn.Ping(ctx)
		_ = conn.Close(ctx)
	})
	if reachErr == nil {
		return
	}
	if os.Getenv("MOITESSIER_REQUIRE_POSTGRES") == "1" {
		tb.Fatalf("PostgreSQL is required (MOITESSIER_REQUIRE_POSTGRES=1) but unreachable at MOITESSIER_POSTGRES_DSN (default %s): %v", defaultDSN, reachErr)
	}
	tb.Skipf("PostgreSQL unreachable; set MOITESSIER_POSTGRES_DSN (default %s) to a server to run this test: %v", defaultDSN, reachErr)
}

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	tb.Cleanup(cancel)
	return ctx
}

// newSchema returns a fresh schema name, dropped when the test ends (after
// the stores opened on it are closed).
func newSchema(tb testing.TB) string {
	tb.Helper()
	needPostgres(tb)
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "mt_test_" + hex.EncodeToString(b[:])
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, testDSN())
		if err != nil {
			tb.Logf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			tb.Logf("drop schema %s: %v", schema, err)
		}
	})
	return schema
}

// openStore opens a store on schema, closed when the test ends.
func openStore(tb testing.TB, schema string) *postgres.Store {
	tb.Helper()
	return openStoreWith(tb, postgres.Config{Schema: schema})
}

// openStoreWith opens a store with cfg on the test server (cfg.DSN is
// set), closed when the test ends.
func openStoreWith(tb testing.TB, cfg postgres.Config) *postgres.Store {
	tb.Helper()
	cfg.DSN = testDSN()
	s, err := postgres.New(ctxT(tb), cfg)
	if err != nil {
		tb.Fatalf("postgres.New(schema %s): %v", cfg.Schema, err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// mustStore opens a store on a fresh schema.
func mustStore(tb testing.TB) *postgres.Store {
	tb.Helper()
	return openStore(tb, newSchema(tb))
}
