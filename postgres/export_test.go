package postgres

import (
	"context"
	"time"
)

// WriterCounts returns the append writers parked for work and those with
// a turn under way.
func (s *Store) WriterCounts() (idle, running int) {
	s.cmb.mu.Lock()
	defer s.cmb.mu.Unlock()
	return s.cmb.idle, s.cmb.running
}

// AppendOneStatement runs the one-entry append statement on the store's
// pool, as an Append of one entry with no match stamp does, notifying
// channel ("" for the store's own), and returns the listener's new head.
func (s *Store) AppendOneStatement(ctx context.Context, listener, text, channel string) (int64, error) {
	if channel == "" {
		channel = s.channel
	}
	var head int64
	err := s.pool.QueryRow(ctx, s.q.appendScalar, listener, []byte(text), "d", "bench", "p", time.Now().UnixNano(),
		channel, int64(-1), int64(0)).Scan(&head, nil)
	return head, err
}
