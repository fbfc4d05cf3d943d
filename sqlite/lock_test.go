package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/likestripes/moitessier/sqlite"
)

func TestLock(t *testing.T) {
	path := dbPath(t)
	s := mustOpen(t, path)
	if s2, err := sqlite.Open(context.Background(), path); !errors.Is(err, sqlite.ErrLocked) {
		if err == nil {
			s2.Close()
		}
		t.Fatalf("second Open: %v, want an error wrapping ErrLocked", err)
	}
	// Through another path to the same file.
	rel, err := filepath.Rel(mustGetwd(t), path)
	if err == nil {
		if s2, err := sqlite.Open(context.Background(), rel); !errors.Is(err, sqlite.ErrLocked) {
			if err == nil {
				s2.Close()
			}
			t.Fatalf("second Open by a relative path: %v, want an error wrapping ErrLocked", err)
		}
	}
	if out, err := lockHelper(t, path); err == nil || !strings.Contains(string(out), "locked") {
		t.Fatalf("another process opened the database: %s (%v)", out, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if out, err := lockHelper(t, path); err != nil {
		t.Fatalf("another process could not open the database after Close: %s (%v)", out, err)
	}
	mustOpen(t, path)
}

// TestLockOtherReader checks what the package documents of a Store's
// SQLite lock: while the Store is open, another process cannot even read the
// database through SQLite; after Close it can.
func TestLockOtherReader(t *testing.T) {
	if sqlite.VFS == "" {
		t.Skip("this platform's stores use SQLite's default locking")
	}
	path := dbPath(t)
	s := mustOpen(t, path)
	mustJoin(t, s, listener("l", "room.1"), "alice")
	if out, err := rawReadHelper(t, path); err == nil || !strings.Contains(string(out), "locked") {
		t.Fatalf("another process read the database while the store was open: %s (%v)", out, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if out, err := rawReadHelper(t, path); err != nil || !strings.Contains(string(out), "listeners 1") {
		t.Fatalf("another process could not read the database after Close: %s (%v)", out, err)
	}
}

// rawReadHelper counts the listeners of the database at path in a child
// process (TestLockHelper) through SQLite directly, and returns its output.
func rawReadHelper(tb testing.TB, path string) ([]byte, error) {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockHelper$")
	cmd.Env = append(os.Environ(), "SQLITE_LOCK_HELPER_PATH="+path, "SQLITE_LOCK_HELPER_RAW=1")
	return cmd.CombinedOutput()
}

func mustGetwd(tb testing.TB) string {
	wd, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	return wd
}

// lockHelper opens path in a child process (TestLockHelper) and returns its
// output.
func lockHelper(tb testing.TB, path string) ([]byte, error) {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockHelper$")
	cmd.Env = append(os.Environ(), "SQLITE_LOCK_HELPER_PATH="+path)
	return cmd.CombinedOutput()
}

// TestLockHelper runs only as the child process of TestLock.
func TestLockHelper(t *testing.T) {
	path := os.Getenv("SQLITE_LOCK_HELPER_PATH")
	if path == "" {
		t.Skip("runs as TestLock's child process")
	}
	if os.Getenv("SQLITE_LOCK_HELPER_RAW") != "" {
		db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_busy_timeout=0")
		if err != nil {
			fmt.Println(err)
			os.Exit(2)
		}
		var n int
		err = db.QueryRow(`SELECT count(*) FROM listeners`).Scan(&n)
		db.Close()
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println("listeners", n)
		return
	}
	s, err := sqlite.Open(context.Background(), path)
	if errors.Is(err, sqlite.ErrLocked) {
		fmt.Println("locked")
		os.Exit(1)
	}
	if err != nil {
		fmt.Println(err)
		os.Exit(2)
	}
	s.Close()
}
