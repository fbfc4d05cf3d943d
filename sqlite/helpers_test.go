package sqlite_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"slices"
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
