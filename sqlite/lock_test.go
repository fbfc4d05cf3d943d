package sqlite_test

import (
	"context"
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
