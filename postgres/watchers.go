package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/likestripes/moitessier"
)

// An append sends its NOTIFY only when a hub other than its own may be
// waiting for it. A running Watch has a row in the schema's watchers table
// (migration 6); an append passes must_notify, as self, the id of its
// store's Watch when one hub alone uses the store (that hub publishes what
// it dispatches to its own subscribers, so its Watch need not hear of it),
// selfNone otherwise, and AppendTx selfAlways. With one hub on a database,
// the common case, appends notify no one: no NOTIFY to queue and deliver,
// no LISTEN connection to wake.
//
// Looking costs the server a little (a function, a lock, a lookup): when
// a look found someone to notify, the appends of the next second (seen)
// notify without looking, which is always safe, and then look again.
//
// A Watch registers before it reads the heads of the listeners: it writes
// its row, then takes the schema's gate exclusively, which waits for every
// append that took it shared (must_notify does) and may have looked at the
// table before the row was there. See the migration for why nothing is
// missed.

var _ moitessier.HubAttacher = (*Store)(nil)

// Values of must_notify's self other than a Watch's id (hexadecimal).
const (
	// selfNone leaves no Watch out.
	selfNone = "-"
	// selfAlways notifies, without looking: AppendTx's transaction
	// commits after the call, and a hub hears of it only by NOTIFY; it
	// could also hold the gate for long, and wait for other locks while it
	// does. Appends pass it too for a while after a look found someone to
	// notify.
	selfAlways = ""
)

// watchers tracks the hubs attached to a store and its running Watch
// calls, and derives self from them.
type watchers struct {
	mu      sync.Mutex
	hubs    int
	watches []string               // ids of the running Watch calls
	self    atomic.Pointer[string] // nil: selfNone

	seen atomic.Int64 // UnixNano until which appends notify without looking
}

// seenFor is how long the appends notify without looking after a look
// found someone to notify.
const seenFor = time.Second

// saw records what an append that passed self found: whether it notified.
func (w *watchers) saw(self string, notified bool) {
	if notified && self != selfAlways {
		w.seen.Store(time.Now().Add(seenFor).UnixNano())
	}
}

// AttachHub implements moitessier.HubAttacher: while one hub alone is
// attached and one Watch runs, appends made through Append (and
// MatchAppend) leave that Watch out of their notification.
func (s *Store) AttachHub() (detach func()) {
	w := &s.watchers
	w.mu.Lock()
	w.hubs++
	w.update()
	w.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			w.mu.Lock()
			w.hubs--
			w.update()
			w.mu.Unlock()
		})
	}
}

// selfID is the self an Append passes must_notify.
func (w *watchers) selfID() string {
	if time.Now().UnixNano() < w.seen.Load() {
		return selfAlways
	}
	if p := w.self.Load(); p != nil {
		return *p
	}
	return selfNone
}

// update sets self from hubs and watches; w.mu is held.
func (w *watchers) update() {
	if w.hubs == 1 && len(w.watches) == 1 {
		id := w.watches[0]
		w.self.Store(&id)
		return
	}
	w.self.Store(nil)
}

// start records a running Watch and returns its id.
func (w *watchers) start() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	w.mu.Lock()
	w.watches = append(w.watches, id)
	w.update()
	w.mu.Unlock()
	return id
}

// stop records the end of a Watch.
func (w *watchers) stop(id string) {
	w.mu.Lock()
	for i, x := range w.watches {
		if x == id {
			w.watches = append(w.watches[:i], w.watches[i+1:]...)
			break
		}
	}
	w.update()
	w.mu.Unlock()
}

// register writes the row of Watch id for conn, its LISTEN connection
// (whose LISTEN is already active), deletes the rows of watchers whose
// connection is gone, and takes the gate exclusively, so that every append
// that did not see the row has committed when it returns.
func (s *Store) register(ctx context.Context, conn *pgx.Conn, id string) error {
	if _, err := conn.Exec(ctx, s.q.registerWatcher, id); err != nil {
		return fmt.Errorf("register the watch: %w", err)
	}
	if _, err := conn.Exec(ctx, s.q.deleteGoneWatchers); err != nil {
		return fmt.Errorf("delete the rows of watches gone: %w", err)
	}
	if _, err := conn.Exec(ctx, s.q.gate); err != nil {
		return fmt.Errorf("wait for the appends under way: %w", err)
	}
	return nil
}
