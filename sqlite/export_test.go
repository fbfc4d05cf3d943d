package sqlite

import (
	"context"

	"github.com/likestripes/moitessier"
)

// SetAppendHook makes Append call fn after each entry i of b it writes,
// inside its transaction; an error from fn fails the Append. Set it while no
// call is running.
func SetAppendHook(s *Store, fn func(b *moitessier.Batch, i int) error) { s.appendHook = fn }

// MigrationCount is the number of embedded migrations.
func MigrationCount() int {
	ms, err := migrations()
	if err != nil {
		panic(err)
	}
	return len(ms)
}

// VFS is the SQLite VFS of the store's connections ("" for the default).
const VFS = vfs

// HeadExpr is the SQL expression of a listener's stored head, with the
// listener's row in scope.
const HeadExpr = headExpr

// WALAutoCheckpoint returns the writer connection's wal_autocheckpoint.
func WALAutoCheckpoint(s *Store) (int, error) {
	var n int
	err := s.wc.QueryRowContext(context.Background(), `PRAGMA wal_autocheckpoint`).Scan(&n)
	return n, err
}

// Checkpoints returns how many checkpoints the store's checkpointer ran.
func Checkpoints(s *Store) int64 { return s.ck.runs.Load() }

// QueuedWrites returns how many writes wait for the writer.
func QueuedWrites(s *Store) int {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	return len(s.queue)
}
