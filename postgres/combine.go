package postgres

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/likestripes/moitessier"
)

// Appends are combined: when Config.Writers append statements of a store
// are already running, further Appends queue, and the next free writer
// sends every queued batch (up to Config.MaxCombine) in one statement,
// committed once. Appends to one listener are serialised by its row lock
// until each commit is flushed, so without combining one listener takes
// at most one append per commit flush; combined, a flush carries many. An
// idle store sends a batch at once, so combining adds no latency.
//
// Combined batches commit together. If the statement fails, each batch is
// tried again alone, so one batch's failure is not another's; if it wrote
// nothing because some batches' match stamps were stale, those fail with
// moitessier.ErrStale and the others are sent again together.

type combiner struct {
	mu      sync.Mutex
	queue   []*pending
	running int
}

type pending struct {
	b       *moitessier.Batch
	msgs    []moitessier.Message
	err     error
	done    chan struct{}
	dropped atomic.Bool // the caller stopped waiting before it was sent
}

// combine appends one batch without an idempotency key, possibly together
// with batches of concurrent calls.
func (s *Store) combine(ctx context.Context, b *moitessier.Batch) ([]moitessier.Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err // once queued, the batch may be written whatever becomes of ctx
	}
	if s.cfg.MaxCombine <= 1 {
		var msgs []moitessier.Message
		err := retry(ctx, func() error {
			var err error
			msgs, err = s.appendEntries(ctx, s.pool, b)
			return err
		})
		return msgs, err
	}
	p := &pending{b: b, done: make(chan struct{})}
	c := &s.cmb
	c.mu.Lock()
	c.queue = append(c.queue, p)
	start := c.running < s.cfg.Writers
	if start {
		c.running++
	}
	c.mu.Unlock()
	if start {
		go s.writeGroups()
	}
	select {
	case <-p.done:
		return p.msgs, p.err
	case <-ctx.Done():
		p.dropped.Store(true)
		return nil, ctx.Err()
	}
}

// writeGroups sends queued batches, a group per statement, until the queue
// is empty.
func (s *Store) writeGroups() {
	c := &s.cmb
	for {
		c.mu.Lock()
		var group []*pending
		entries := 0
		for len(c.queue) > 0 && len(group) < s.cfg.MaxCombine {
			p := c.queue[0]
			if len(group) > 0 && entries+len(p.b.Entries) > maxCombinedEntries {
				break
			}
			c.queue[0] = nil
			c.queue = c.queue[1:]
			if p.dropped.Load() {
				continue
			}
			group = append(group, p)
			entries += len(p.b.Entries)
		}
		if len(group) == 0 {
			c.running--
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		s.writeGroup(group)
	}
}

// maxCombinedEntries bounds the entries of one combined statement (a batch
// larger than that is sent alone).
const maxCombinedEntries = 10000

func (s *Store) writeGroup(group []*pending) {
	ctx := context.Background()
	bs := make([]*moitessier.Batch, len(group))
	for i, p := range group {
		bs[i] = p.b
	}
	var out [][]moitessier.Message
	err := retry(ctx, func() error {
		var err error
		out, err = s.appendBatches(ctx, s.pool, bs)
		return err
	})
	var se *staleError
	if errors.As(err, &se) && len(group) > 1 {
		// Nothing was written: fail the stale batches, send the rest again.
		rest := make([]*pending, 0, len(group))
		for i, p := range group {
			if slices.Contains(se.batches, i) {
				p.err = &staleError{batches: []int{0}}
				close(p.done)
			} else {
				rest = append(rest, p)
			}
		}
		if len(rest) > 0 {
			s.writeGroup(rest)
		}
		return
	}
	if err != nil && len(group) > 1 {
		for _, p := range group {
			p.err = retry(ctx, func() error {
				var err error
				p.msgs, err = s.appendEntries(ctx, s.pool, p.b)
				return err
			})
			close(p.done)
		}
		return
	}
	for i, p := range group {
		if err != nil {
			p.err = err
		} else {
			p.msgs = out[i]
		}
		close(p.done)
	}
}
