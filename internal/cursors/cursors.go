// Package cursors keeps the positions and leases of the subscribers that
// have ListenUntil calls running in this process, and saves them.
//
// The rules it keeps:
//
//   - A subscriber's acknowledged position only moves forward (Ack keeps
//     the larger), and so does what is known to be saved.
//   - Acknowledgements cost no store call: they are saved together by the
//     next Flush (the hub runs one every Options.AckInterval), in chunks of
//     at most Chunk subscribers, so that a store that writes one
//     transaction at a time can run dispatches between them.
//   - A Flush that fails queues its acknowledgements again: the next one
//     retries what is not saved.
//   - Leases are renewed by Flush when due, every third of a lease, and a
//     Flush looks at every subscriber only when the earliest renewal is
//     due.
//   - When the last ListenUntil of a subscriber ends (Release), its
//     position is saved at once, so that a resume anywhere starts after
//     it.
package cursors

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Key names a subscriber of one incarnation of a listener (Created is the
// listener's creation time, in Unix nanoseconds).
type Key struct {
	Listener, Person, Client string
	Created                  int64
}

// Checkpoint is a position (and, if LeaseExpires is not zero, a lease) to
// save: Store.Checkpoint's argument.
type Checkpoint struct {
	Listener, Person, Client string
	Created                  int64 // the listener's incarnation, as in Key
	Cursor                   uint64
	LeaseExpires             time.Time
}

// SaveFunc saves checkpoints in one transaction (Store.Checkpoint).
type SaveFunc func(ctx context.Context, cps []Checkpoint) error

// Chunk is the most subscribers one SaveFunc call saves.
const Chunk = 512

// Sub is one subscriber with ListenUntil calls running in this process:
// what was handed to it, what it acknowledged and what of that is saved.
type Sub struct {
	key     Key
	refs    int // guarded by Tracker.mu
	lease   time.Duration
	acked   atomic.Uint64
	saved   atomic.Uint64
	dirty   atomic.Bool // queued in Tracker.dirty
	renewAt time.Time   // guarded by Tracker.mu

	sent atomic.Uint64 // the newest cursor handed to a respond function
}

// Acked returns the newest acknowledged position.
func (s *Sub) Acked() uint64 { return s.acked.Load() }

// Sent returns the newest position handed over (see MarkSent).
func (s *Sub) Sent() uint64 { return s.sent.Load() }

// MarkSent records that the messages up to c were handed to a respond
// function, and so may be acknowledged later (AckDelivered).
func (s *Sub) MarkSent(c uint64) { storeMax(&s.sent, c) }

// Tracker holds the Subs of this process and saves them.
type Tracker struct {
	save     SaveFunc
	now      func() time.Time
	maxLease time.Duration // the longest wait between two looks at every Sub

	mu        sync.Mutex
	subs      map[Key]*Sub
	dirty     []*Sub    // acknowledged since the last Flush
	nextRenew time.Time // earliest renewAt of subs
}

// New returns a Tracker that saves with save and reads the time from now;
// maxLease bounds how long a Flush goes without looking at every Sub for a
// due renewal (the hub's default lease).
func New(save SaveFunc, now func() time.Time, maxLease time.Duration) *Tracker {
	return &Tracker{save: save, now: now, maxLease: maxLease, subs: map[Key]*Sub{}}
}

// Acquire returns the Sub of k, creating it with lease (renewed from
// joined on), and counts one more ListenUntil on it.
func (t *Tracker) Acquire(k Key, lease time.Duration, joined time.Time) *Sub {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.subs[k]
	if s == nil {
		s = &Sub{key: k, lease: lease, renewAt: joined.Add(lease / 3)}
		t.subs[k] = s
		if t.nextRenew.IsZero() || s.renewAt.Before(t.nextRenew) {
			t.nextRenew = s.renewAt
		}
	}
	s.refs++
	return s
}

// Lookup returns the Sub of k, or nil if no ListenUntil of it runs here.
func (t *Tracker) Lookup(k Key) *Sub {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.subs[k]
}

// Acked returns what running ListenUntil calls of k acknowledged, or 0.
func (t *Tracker) Acked(k Key) uint64 {
	if s := t.Lookup(k); s != nil {
		return s.Acked()
	}
	return 0
}

// Ack records that s acknowledged the messages up to c; Flush saves it.
func (t *Tracker) Ack(s *Sub, c uint64) {
	storeMax(&s.acked, c)
	if !s.dirty.Swap(true) {
		t.mu.Lock()
		t.dirty = append(t.dirty, s)
		t.mu.Unlock()
	}
}

// Release drops one ListenUntil's hold on s and, with the last one, saves
// its position at once (within 10 s, even if ctx has ended).
func (t *Tracker) Release(ctx context.Context, s *Sub) error {
	t.mu.Lock()
	s.refs--
	last := s.refs == 0
	if last {
		delete(t.subs, s.key)
	}
	t.mu.Unlock()
	acked := s.acked.Load()
	if !last || acked <= s.saved.Load() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := t.save(ctx, []Checkpoint{{Listener: s.key.Listener, Person: s.key.Person, Client: s.key.Client, Created: s.key.Created, Cursor: acked}}); err != nil {
		return fmt.Errorf("save cursor: %w", err)
	}
	storeMax(&s.saved, acked)
	return nil
}

// Flush saves the acknowledged positions not yet saved and the lease
// renewals that are due (all of them if all is set), in chunks of Chunk.
func (t *Tracker) Flush(ctx context.Context, all bool) error {
	now := t.now()
	var renewed []*Sub
	t.mu.Lock()
	dirty := t.dirty
	t.dirty = nil
	for _, s := range dirty {
		s.dirty.Store(false)
	}
	// Lease renewals are due rarely (every lease/3): look at every
	// subscriber only when the earliest one is due.
	if all || !now.Before(t.nextRenew) {
		t.nextRenew = now.Add(t.maxLease)
		for _, s := range t.subs {
			if all || !now.Before(s.renewAt) {
				s.renewAt = now.Add(s.lease / 3)
				renewed = append(renewed, s)
			}
			if s.renewAt.Before(t.nextRenew) {
				t.nextRenew = s.renewAt
			}
		}
	}
	t.mu.Unlock()
	cps := make([]Checkpoint, 0, len(renewed)+len(dirty))
	subs := make([]*Sub, 0, cap(cps))
	add := func(s *Sub, lease bool) {
		subs = append(subs, s)
		cp := Checkpoint{Listener: s.key.Listener, Person: s.key.Person, Client: s.key.Client, Created: s.key.Created, Cursor: s.acked.Load()}
		if lease {
			cp.LeaseExpires = now.Add(s.lease)
		}
		cps = append(cps, cp)
	}
	for _, s := range renewed {
		add(s, true)
	}
	for _, s := range dirty {
		if s.acked.Load() > s.saved.Load() {
			add(s, false)
		}
	}
	if len(cps) == 0 {
		return nil
	}
	for i := 0; i < len(cps); i += Chunk {
		j := min(len(cps), i+Chunk)
		if err := t.save(ctx, cps[i:j]); err != nil {
			// Queue them again; the next Flush retries what is not saved.
			for _, s := range dirty {
				t.Ack(s, s.acked.Load())
			}
			return fmt.Errorf("checkpoint %d subscribers: %w", j-i, err)
		}
		for k := i; k < j; k++ {
			storeMax(&subs[k].saved, cps[k].Cursor)
		}
	}
	return nil
}

func storeMax(v *atomic.Uint64, n uint64) {
	for {
		old := v.Load()
		if n <= old || v.CompareAndSwap(old, n) {
			return
		}
	}
}
