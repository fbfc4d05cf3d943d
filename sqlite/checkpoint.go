package sqlite

import (
	"context"
	"database/sql"
	"net/url"
	"sync/atomic"
	"time"
)

// walAutoCheckpoint is the size of the write-ahead log, in pages, past
// which the writer copies it into the database itself, in the commit that
// passes it. The checkpointer (see checkpointer) keeps the log well below
// that, so the writer does it only when the checkpointer falls behind
// (readers holding old snapshots, say): ten times SQLite's default.
const walAutoCheckpoint = 10_000

// checkpointGap is the least time between two of the checkpointer's
// checkpoints, so that a busy writer's commits share one.
const checkpointGap = 50 * time.Millisecond

// A checkpointer copies the write-ahead log into the database (a PASSIVE
// checkpoint: it waits for no one and stops at frames a reader still
// needs) on a connection of its own, in the background, so that the
// checkpoint's page copies and fsyncs are not paid by the commit that
// passes the log's limit, and so by the write calls waiting for it. The
// writer signals it after each commit; it runs at most once per
// checkpointGap, and not at all while nothing is written.
type checkpointer struct {
	db     *sql.DB
	kick   chan struct{} // capacity 1: a commit happened
	ctx    context.Context
	cancel context.CancelFunc // stops it, interrupting a checkpoint
	done   chan struct{}
	runs   atomic.Int64 // checkpoints run, for tests
}

// startCheckpointer opens the checkpointer's connection to path, with the
// writer's busy timeout and VFS, and starts it.
func startCheckpointer(path, busy string) (*checkpointer, error) {
	p := url.Values{}
	p.Set("_busy_timeout", busy)
	if vfs != "" {
		p.Set("vfs", vfs)
	}
	db, err := sql.Open("sqlite", dsn(path, p))
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	ctx, cancel := context.WithCancel(context.Background())
	c := &checkpointer{db: db, kick: make(chan struct{}, 1), ctx: ctx, cancel: cancel, done: make(chan struct{})}
	go c.run()
	return c, nil
}

// committed tells the checkpointer that the writer committed; it never
// blocks.
func (c *checkpointer) committed() {
	if c == nil {
		return
	}
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *checkpointer) run() {
	defer close(c.done)
	gap := time.NewTimer(checkpointGap)
	defer gap.Stop()
	for {
		select {
		case <-c.kick:
		case <-c.ctx.Done():
			return
		}
		// A failed checkpoint (busy, interrupted) is not an error: the
		// next one, or the writer's own past walAutoCheckpoint, catches up.
		_, _ = c.db.ExecContext(c.ctx, `PRAGMA wal_checkpoint(PASSIVE)`)
		c.runs.Add(1)
		gap.Reset(checkpointGap)
		select {
		case <-gap.C:
		case <-c.ctx.Done():
			return
		}
	}
}

// close stops the checkpointer, waiting for a checkpoint in progress to
// end, and closes its connection.
func (c *checkpointer) close() error {
	if c == nil {
		return nil
	}
	c.cancel()
	<-c.done
	return c.db.Close()
}
