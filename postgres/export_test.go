package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/likestripes/moitessier"
)

// WriterCounts returns the append writers parked for work and those with
// a turn under way.
func (s *Store) WriterCounts() (idle, running int) {
	s.cmb.mu.Lock()
	defer s.cmb.mu.Unlock()
	return s.cmb.idle, s.cmb.running
}

// WithDial returns cfg with dial dialling the connections of the pool the
// store opens from its DSN.
func WithDial(cfg Config, dial pgconn.DialFunc) Config {
	cfg.dial = dial
	return cfg
}

// WithSlowJoin returns cfg with d as how long a join sent alone keeps its
// turn.
func WithSlowJoin(cfg Config, d time.Duration) Config {
	cfg.slowJoin = d
	return cfg
}

// Queued returns how many batches wait in the append queue.
func (s *Store) Queued() int {
	s.cmb.mu.Lock()
	defer s.cmb.mu.Unlock()
	return len(s.cmb.queue)
}

// CancelGrace is how long a statement whose caller gave up may run on.
const CancelGrace = cancelGrace

// AppendOneStatement runs the one-entry append statement on the store's
// pool, as an Append of one entry with no match stamp does, notifying
// channel ("" for the store's own) as watchOther decides for self: "own"
// leaves out the Watch of the one hub on the store, as that hub's Dispatch
// does, "none" leaves no Watch out, and "always" notifies without looking,
// as AppendTx does. It returns the listener's new head.
func (s *Store) AppendOneStatement(ctx context.Context, listener, text, channel, self string) (int64, error) {
	if channel == "" {
		channel = s.channel
	}
	switch self {
	case "own":
		self = selfNone
		if m := s.watchers.byOrigin.Load(); m != nil && len(*m) == 1 {
			for _, ids := range *m {
				if len(ids) == 1 {
					self = ids[0]
				}
			}
		}
	case "none":
		self = selfNone
	case "always":
		self = selfAlways
	default:
		panic("AppendOneStatement: self " + self)
	}
	var head int64
	err := s.pool.QueryRow(ctx, s.q.appendScalar, listener, []byte(text), "d", "bench", "p", time.Now().UnixNano(),
		channel, int64(-1), int64(0), self).Scan(&head, nil)
	return head, err
}

// Channel returns the store's NOTIFY channel.
func (s *Store) Channel() string { return s.channel }

// AppendLookingTx runs Append's statement for b in tx, as Append does (it
// looks for a Watch to notify, and leaves none out), so
// that a test can keep it from committing.
func (s *Store) AppendLookingTx(ctx context.Context, tx pgx.Tx, b *moitessier.Batch) ([]moitessier.Message, error) {
	return s.appendEntries(ctx, tx, b, selfNone)
}

// SeenFor is how long appends notify without looking after a look found a
// Watch to notify.
const SeenFor = seenFor

// JoinTx runs Join's statement in tx, so that a test can read what it set
// for the transaction.
func (s *Store) JoinTx(ctx context.Context, tx pgx.Tx, l moitessier.ListenerInfo, sub moitessier.Subscriber) error {
	_, err := s.join(ctx, tx, &joinCall{l: l, sub: sub})
	return err
}

// JoinsBatched returns how many joins went out in statements of two or
// more.
func (s *Store) JoinsBatched() int64 { return s.joins.batched.Load() }

// JoinTurnFree reports whether no join statement holds the join turn.
func (s *Store) JoinTurnFree() bool {
	s.joins.mu.Lock()
	defer s.joins.mu.Unlock()
	return !s.joins.busy
}

// JoinsQueued returns how many joins wait for a turn.
func (s *Store) JoinsQueued() int {
	s.joins.mu.Lock()
	defer s.joins.mu.Unlock()
	return len(s.joins.queue)
}

// DeleteGoneWatchers runs, in tx, the statement that deletes the
// registrations of Watch calls whose connection is gone.
func (s *Store) DeleteGoneWatchers(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, s.q.deleteGoneWatchers)
	return err
}

// SetWritersWait bounds how long a Watch that registers waits for the
// transactions that hold the listeners table's lock; call it before the
// store's first Watch.
func (s *Store) SetWritersWait(d time.Duration) { s.watchers.writersWait = d }

// ForgetMatches drops every cached Match answer, those a join seeded
// among them, so that the next dispatch to any scope matches.
func (s *Store) ForgetMatches() { s.mc.DropAll() }

// MaxSeeded is maxSeeded.
const MaxSeeded = maxSeeded

// HasMatch reports whether a Match answer of scope is cached.
func (s *Store) HasMatch(scope string) bool {
	_, ok := s.mc.Get(scope)
	return ok
}

// LeaveThen is Leave that calls then after its statement answered and
// before it brings the cached answers up to date, as another goroutine of
// the process may run meanwhile.
func (s *Store) LeaveThen(ctx context.Context, listenerID, person, client string, then func()) (bool, error) {
	d, err := s.leave(ctx, listenerID, nil, person, client)
	if err != nil {
		return false, err
	}
	then()
	if d.deleted {
		s.unseed(d.info, d.tag, d.wild)
	}
	return d.deleted, nil
}

// JoinStatement is the statement Join sends for one join alone (see
// queries.go), for the benchmarks' floors.
func (s *Store) JoinStatement() string { return s.q.join }
