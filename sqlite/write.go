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
	fn    func(ctx context.Context, tx *wtx) error
	after func()
	// solo writes run in a transaction of their own (Sweep's batches, whose
	// decisions rely on the cache).
	solo bool

	// wake, made for a call that waits, is closed when its write has run or
	// when the call is to be the writer (lead).
	wake chan struct{}
	lead bool
	err  error // set by the writer before it closes wake
	// panicked holds what fn panicked with, if it did, for the call to
	// panic with again; set by the writer before it closes wake.
	panicked *writePanic
}

// A writePanic is what a write's fn panicked with.
type writePanic struct{ v any }

// errWritePanicked is the error of a write whose fn panicked; its call
// panics with what fn panicked with instead of returning it.
var errWritePanicked = errors.New("sqlite: write panicked")

// call runs op.fn. A panic in fn is recovered, so that the writer rolls the
// write back as it would a failed one and goes on with the queue, and kept
// for op's call to panic with in its own goroutine: a panic escaping the
// writer would leave the writer's connection in a transaction and the
// writer's role taken, and every later write would wait for it forever.
func (op *writeOp) call(ctx context.Context, tx *wtx) (err error) {
	defer func() {
		if v := recover(); v != nil {
			op.panicked = &writePanic{v}
			err = errWritePanicked
		}
	}()
	return op.fn(ctx, tx)
}

// write runs fn as a combinable write; see writeOp.
func (s *Store) write(ctx context.Context, fn func(ctx context.Context, tx *wtx) error, after func()) error {
	return s.submit(&writeOp{ctx: ctx, fn: fn, after: after})
}

// writeSolo runs fn in a transaction of its own; see writeOp.
func (s *Store) writeSolo(ctx context.Context, fn func(ctx context.Context, tx *wtx) error, after func()) error {
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
			return op.result()
		}
	} else {
		s.writing = true
		s.qmu.Unlock()
	}
	s.lead()
	return op.result()
}

// result returns op's error once it has run, or panics with what its fn
// panicked with.
func (op *writeOp) result() error {
	if op.panicked != nil {
		panic(op.panicked.v)
	}
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

// A wtx is a transaction of the writer's connection, with the methods of
// *sql.Tx that writes use. The writer's statements (s.stmts) are prepared on
// that connection, so StmtContext returns them as they are.
//
// The writer runs BEGIN, COMMIT and ROLLBACK itself rather than through
// database/sql's Tx, which starts a goroutine for each transaction (to roll
// it back when its context ends) and, with the driver, one more for each of
// BEGIN and COMMIT: two thirds of a lone Append's futex calls.
type wtx struct {
	c *sql.Conn
	// fresh is true until a write of the transaction has run: until then
	// the store's cache (see Store.mu) is what the transaction reads.
	fresh bool
}

// StmtContext returns stmt, which must be one of the writer's statements.
func (t *wtx) StmtContext(_ context.Context, stmt *sql.Stmt) *sql.Stmt { return stmt }

// ExecContext runs query on the writer's connection.
func (t *wtx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return t.c.ExecContext(ctx, query, args...)
}

// QueryContext runs query on the writer's connection.
func (t *wtx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return t.c.QueryContext(ctx, query, args...)
}

// QueryRowContext runs query on the writer's connection.
func (t *wtx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return t.c.QueryRowContext(ctx, query, args...)
}

// begin starts a transaction on the writer's connection (BEGIN IMMEDIATE).
func (s *Store) begin() (*wtx, error) {
	if _, err := s.stmts.begin.ExecContext(context.Background()); err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	return &wtx{c: s.wc, fresh: true}, nil
}

// commit commits the writer's transaction, or rolls it back if the commit
// fails.
func (s *Store) commit() error {
	if _, err := s.stmts.commit.ExecContext(context.Background()); err != nil {
		s.rollback()
		return fmt.Errorf("commit: %w", err)
	}
	s.ck.committed()
	return nil
}

// rollback rolls the writer's transaction back. SQLite may have done so
// already (an interrupted statement, a failed commit), and then ROLLBACK
// fails with nothing to undo: its error is not worth reporting.
func (s *Store) rollback() {
	s.stmts.rollback.ExecContext(context.Background())
}

// runOne runs a write in a transaction of its own. A combinable write's
// statements run without its caller's context, as in runGroup (which it
// could have joined); a solo write's run with it, so that ending the context
// interrupts a long statement.
func (s *Store) runOne(op *writeOp) {
	op.err = func() error {
		ctx := op.ctx
		if err := ctx.Err(); err != nil {
			return err
		}
		if !op.solo {
			ctx = context.Background()
		}
		tx, err := s.begin()
		if err != nil {
			return ctxErr(op.ctx, err)
		}
		if err := op.call(ctx, tx); err != nil {
			s.rollback()
			return ctxErr(op.ctx, err)
		}
		if err := s.commit(); err != nil {
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
	tx, err := s.begin()
	if err != nil {
		failAll(err)
		return
	}
	for _, op := range ops {
		if err := op.ctx.Err(); err != nil {
			op.err = err
			continue
		}
		if _, err := s.stmts.savepoint.ExecContext(ctx); err != nil {
			s.rollback()
			failAll(err)
			return
		}
		err := op.call(ctx, tx)
		tx.fresh = false
		if err != nil {
			op.err = ctxErr(op.ctx, err)
			if _, rerr := s.stmts.rollbackTo.ExecContext(ctx); rerr != nil {
				// The transaction is gone, and the work of the writes before with it.
				s.rollback()
				failAll(fmt.Errorf("roll back to savepoint: %w", errors.Join(rerr, err)))
				return
			}
		}
		if _, err := s.stmts.release.ExecContext(ctx); err != nil {
			s.rollback()
			failAll(err)
			return
		}
	}
	if err := s.commit(); err != nil {
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
