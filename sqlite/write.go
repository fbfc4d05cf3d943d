package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// maxGroup bounds the calls combined into one transaction.
const maxGroup = 256

// A writeOp is one call's write: fn runs in a transaction (with ctx for its
// statements) and, if that transaction commits, after runs with s.mu held to
// bring the cache up to date.
//
// Writes go through one connection, so concurrent calls queue for it. One
// call at a time is the writer: it takes every queued write, its own and the
// others', and runs them in one transaction, each inside a savepoint: a write
// that fails is rolled back to its savepoint and leaves nothing, and the rest
// commit together, so that concurrent calls share the cost of a commit. It
// then hands the writer's role to the oldest call still queued, if any, and
// wakes the calls it ran. A lone write runs in a transaction of its own with
// its caller's context. fn must decide from what the transaction reads, not
// from the cache, which learns of a write only once it is committed.
type writeOp struct {
	ctx   context.Context
	fn    func(ctx context.Context, tx *sql.Tx) error
	after func()
	// solo writes run in a transaction of their own (Sweep's batches, whose
	// decisions rely on the cache).
	solo bool

	// wake, made for a call that waits, is closed when its write has run or
	// when the call is to be the writer (lead).
	wake chan struct{}
	lead bool
	err  error // set by the writer before it closes wake
}

// write runs fn as a combinable write; see writeOp.
func (s *Store) write(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error, after func()) error {
	return s.submit(&writeOp{ctx: ctx, fn: fn, after: after})
}

// writeSolo runs fn in a transaction of its own; see writeOp.
func (s *Store) writeSolo(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error, after func()) error {
	return s.submit(&writeOp{ctx: ctx, fn: fn, after: after, solo: true})
}

func (s *Store) submit(op *writeOp) error {
	s.qmu.Lock()
	s.queue = append(s.queue, op)
	if s.writing {
		op.wake = make(chan struct{})
		s.qmu.Unlock()
		<-op.wake
		if !op.lead {
			return op.err
		}
	} else {
		s.writing = true
		s.qmu.Unlock()
	}
	s.lead()
	return op.err
}

// lead runs the queued writes, the caller's among them, then hands the
// writer's role on or gives it up.
func (s *Store) lead() {
	s.qmu.Lock()
	ops := s.queue
	s.queue = nil
	s.qmu.Unlock()

	s.runWrites(ops)

	s.qmu.Lock()
	if len(s.queue) > 0 {
		next := s.queue[0]
		next.lead = true
		close(next.wake)
	} else {
		s.writing = false
	}
	s.qmu.Unlock()
	for _, op := range ops {
		if op.wake != nil && !op.lead {
			close(op.wake)
		}
	}
}

// runWrites runs queued writes in order; the caller is the writer.
func (s *Store) runWrites(ops []*writeOp) {
	for len(ops) > 0 {
		n := 1
		for n < len(ops) && n < maxGroup && !ops[0].solo && !ops[n].solo {
			n++
		}
		if n == 1 {
			s.runOne(ops[0])
		} else {
			s.runGroup(ops[:n])
		}
		ops = ops[n:]
	}
}

func (s *Store) runOne(op *writeOp) {
	op.err = func() error {
		tx, err := s.w.BeginTx(op.ctx, nil)
		if err != nil {
			return ctxErr(op.ctx, err)
		}
		if err := op.fn(op.ctx, tx); err != nil {
			tx.Rollback()
			return ctxErr(op.ctx, err)
		}
		if err := tx.Commit(); err != nil {
			return ctxErr(op.ctx, err)
		}
		return nil
	}()
	if op.err == nil && op.after != nil {
		s.mu.Lock()
		op.after()
		s.mu.Unlock()
	}
}

// runGroup runs writes in one transaction, each in a savepoint. Their
// statements run without their callers' contexts: SQLite answers an
// interrupted write by rolling back the whole transaction, so each fn
// checks its caller's context itself.
func (s *Store) runGroup(ops []*writeOp) {
	ctx := context.Background()
	failAll := func(err error) {
		for _, op := range ops {
			if op.err == nil {
				op.err = err
			}
		}
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		failAll(err)
		return
	}
	savepoint := tx.StmtContext(ctx, s.stmts.savepoint)
	release := tx.StmtContext(ctx, s.stmts.release)
	rollbackTo := tx.StmtContext(ctx, s.stmts.rollbackTo)
	for _, op := range ops {
		if err := op.ctx.Err(); err != nil {
			op.err = err
			continue
		}
		if _, err := savepoint.ExecContext(ctx); err != nil {
			tx.Rollback()
			failAll(err)
			return
		}
		if err := op.fn(ctx, tx); err != nil {
			op.err = ctxErr(op.ctx, err)
			if _, rerr := rollbackTo.ExecContext(ctx); rerr != nil {
				// The transaction is gone, and the work of the writes before with it.
				tx.Rollback()
				failAll(fmt.Errorf("roll back to savepoint: %w", errors.Join(rerr, err)))
				return
			}
		}
		if _, err := release.ExecContext(ctx); err != nil {
			tx.Rollback()
			failAll(err)
			return
		}
	}
	if err := tx.Commit(); err != nil {
		failAll(err)
		return
	}
	s.mu.Lock()
	for _, op := range ops {
		if op.err == nil && op.after != nil {
			op.after()
		}
	}
	s.mu.Unlock()
}
