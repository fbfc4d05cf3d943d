package postgres

import (
	"context"
	"embed"
	"fmt"
	"hash/fnv"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/likestripes/moitessier"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// migration is one versioned schema change.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations in version order. A file is
// named NNNN_name.sql; NNNN is its version.
func migrations() ([]migration, error) {
	names, err := fs.Glob(migrationFS, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, n := range names {
		base := path.Base(n)
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration file %s: name must start with a positive version and '_'", base)
		}
		b, err := migrationFS.ReadFile(n)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: strings.TrimSuffix(base, ".sql"), sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i := range ms {
		if ms[i].version != i+1 {
			return nil, fmt.Errorf("migration %s: version %d, want %d", ms[i].name, ms[i].version, i+1)
		}
	}
	return ms, nil
}

// SchemaVersion is the schema version this package migrates to.
func SchemaVersion() int {
	ms, err := migrations()
	if err != nil {
		return 0
	}
	return len(ms)
}

// TxBeginner is what [Migrate] needs of a database handle: *pgx.Conn,
// *pgxpool.Pool and pgx.Tx all satisfy it.
type TxBeginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// functionQuote is the dollar quote of the migrations' function bodies.
const functionQuote = "$moitessier$"

// Migrate creates the schema (DefaultSchema if schema is "") and applies the
// migrations it lacks, in one transaction. It is idempotent, and safe when
// several processes call it at once: they serialise on a transaction-level
// advisory lock derived from the schema name. [Open] calls it unless
// Config.SkipMigrate is set; call it yourself to run migrations as a
// separate deployment step. It returns an error if the schema was migrated
// by a newer version of this package.
func Migrate(ctx context.Context, db TxBeginner, schema string) error {
	if schema == "" {
		schema = DefaultSchema
	}
	ms, err := migrations()
	if err != nil {
		return fmt.Errorf("migrate schema %q: %w", schema, err)
	}
	q := pgx.Identifier{schema}.Sanitize()
	if strings.Contains(q, functionQuote) {
		// The schema's name goes into function bodies quoted with it: it
		// would end the body there, and the rest would run as SQL.
		return fmt.Errorf("migrate schema %q: %w: the name holds %s", schema, moitessier.ErrInvalidArgument, functionQuote)
	}
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", advisoryKey("migrate", schema)); err != nil {
			return fmt.Errorf("advisory lock: %w", err)
		}
		if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+q); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+q+`.schema_migrations (
			version    integer PRIMARY KEY,
			name       text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		var cur int
		if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM "+q+".schema_migrations").Scan(&cur); err != nil {
			return err
		}
		if cur > len(ms) {
			return fmt.Errorf("schema is at version %d, newer than this package's %d", cur, len(ms))
		}
		for _, m := range ms[cur:] {
			if _, err := tx.Exec(ctx, strings.ReplaceAll(m.sql, "{{schema}}", q)); err != nil {
				return fmt.Errorf("apply %s: %w", m.name, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO "+q+".schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name); err != nil {
				return fmt.Errorf("record %s: %w", m.name, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("migrate schema %q: %w", schema, err)
	}
	return nil
}

// advisoryKey derives a 64-bit advisory lock key for a purpose and schema.
func advisoryKey(purpose, schema string) int64 {
	h := fnv.New64a()
	h.Write([]byte("moitessier\x00" + purpose + "\x00" + schema))
	return int64(h.Sum64())
}
