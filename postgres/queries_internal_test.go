package postgres

import (
	"context"
	"errors"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/likestripes/moitessier"
)

// TestAppendParamsNamed: the append statements use every named parameter
// and only those, numbered in the order appendArgs.list gives the values.
func TestAppendParamsNamed(t *testing.T) {
	if got := len((&appendArgs{}).list()); got != len(appendParams) {
		t.Fatalf("appendArgs.list gives %d values for %d names", got, len(appendParams))
	}
	q := buildQueries(`"s"`)
	num := regexp.MustCompile(`\$(\d+)`)
	for name, sql := range map[string]string{"append": q.append, "appendOne": q.appendOne, "appendSingle": q.appendSingle} {
		if strings.Contains(sql, "@") {
			t.Errorf("%s: a name is left unbound", name)
		}
		seen := make(map[int]bool)
		for _, m := range num.FindAllStringSubmatch(sql, -1) {
			n, _ := strconv.Atoi(m[1])
			seen[n] = true
		}
		for i := 1; i <= len(appendParams); i++ {
			if !seen[i] {
				t.Errorf("%s: $%d (@%s) is not used", name, i, appendParams[i-1])
			}
		}
		if len(seen) != len(appendParams) {
			t.Errorf("%s: %d parameters, want %d", name, len(seen), len(appendParams))
		}
	}

	got := bindNames("SELECT @b, @a, @a_b, @b", []string{"a", "b", "a_b"})
	if want := "SELECT $2, $1, $3, $2"; got != want {
		t.Errorf("bindNames = %q, want %q", got, want)
	}
	for _, tc := range []struct{ sql string }{{"SELECT @c"}, {"SELECT @a"}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("bindNames(%q) did not panic", tc.sql)
				}
			}()
			bindNames(tc.sql, []string{"a", "b"})
		}()
	}
}

// noBegin is a database that fails the test if Migrate uses it.
type noBegin struct{ t *testing.T }

func (d noBegin) Begin(context.Context) (pgx.Tx, error) {
	d.t.Fatal("Migrate began a transaction")
	return nil, nil
}

// TestMigrateSchemaQuote: a schema name holding the dollar quote of the
// migrations' function bodies, which would end a body and run what
// follows as SQL, is refused before anything runs.
func TestMigrateSchemaQuote(t *testing.T) {
	err := Migrate(context.Background(), noBegin{t}, `x`+functionQuote+`; DROP TABLE t; --`)
	if !errors.Is(err, moitessier.ErrInvalidArgument) {
		t.Fatalf("Migrate: %v, want ErrInvalidArgument", err)
	}
	for _, sql := range []string{"0002", "0005"} {
		if !strings.Contains(migrationText(t, sql), functionQuote) {
			t.Errorf("migration %s: no %s: the check guards nothing there", sql, functionQuote)
		}
	}
}

func migrationText(t *testing.T, prefix string) string {
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if strings.HasPrefix(m.name, prefix) {
			return m.sql
		}
	}
	t.Fatalf("no migration %s", prefix)
	return ""
}

// TestParseHeads: a payload's heads are each followed by their listener's
// creation time, an item that a parser of an earlier version skips; a
// head without one (from a process of that version) is taken with none,
// and what does not parse is skipped.
func TestParseHeads(t *testing.T) {
	got := parseHeads("a 3,~1700000000000000001,b 4,c x 5,~9,d 6 y,,e,~7,f 7,~8,~9,g 8")
	want := []moitessier.Head{
		{Listener: "a", Seq: 3, Created: fromNS(1700000000000000001)},
		{Listener: "b", Seq: 4},
		{Listener: "f", Seq: 7, Created: fromNS(8)},
		{Listener: "g", Seq: 8},
	}
	if len(got) != len(want) {
		t.Fatalf("parseHeads = %v, want %v", got, want)
	}
	for i := range want {
		if got[i].Listener != want[i].Listener || got[i].Seq != want[i].Seq || !got[i].Created.Equal(want[i].Created) {
			t.Fatalf("head %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	// What a parser of the earlier version makes of it: the heads, with
	// the creation times skipped.
	var old []string
	for item := range strings.SplitSeq("a 3,~1700000000000000001,b 4,~5", ",") {
		if id, seq, ok := strings.Cut(item, " "); ok && id != "" {
			if _, err := strconv.ParseUint(seq, 10, 64); err == nil {
				old = append(old, item)
			}
		}
	}
	if strings.Join(old, ",") != "a 3,b 4" {
		t.Fatalf("an earlier parser reads %q, want a 3,b 4", old)
	}
}

// TestStatementCacheHoldsTheStore: the statement cache of the pool's
// connections (statementCacheCapacity) holds every statement the store
// prepares, twice over: the queries below and the few statements with
// arguments that the store sends besides them when it opens and migrates
// (a statement without arguments goes by the simple protocol and is not
// cached), so that none is prepared again after another pushed it out.
func TestStatementCacheHoldsTheStore(t *testing.T) {
	const others = 8
	n := 0
	typ := reflect.TypeOf(queries{})
	for i := range typ.NumField() {
		if typ.Field(i).Type.Kind() == reflect.String {
			n++
		}
	}
	if n < 20 {
		t.Fatalf("queries has %d statements; the count is off", n)
	}
	if 2*(n+others) > statementCacheCapacity {
		t.Fatalf("%d statements and %d others, twice over, do not fit in a cache of %d", n, others, statementCacheCapacity)
	}
}
