package clouddatastore

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"cloud.google.com/go/datastore"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/internal/donectx"
)

// Watch calls fn with the heads of listeners that received messages in
// other processes, as Config.Wake delivers them, until ctx is done or the
// store is closed. Without a Waker it only waits: other processes'
// messages are then found by the hub's catch-up reads (Heads).
//
// The hub starts Watch on a goroutine of its own and does not wait for it,
// so its listeners may join, and other processes dispatch to them, before
// Watch runs. The Pub/Sub Waker New opens covers that time at no cost:
// its subscription exists once New returns, and it starts receiving only
// with the first Watch call, so the wake-ups published in between wait in
// the subscription and reach that call. (Heads does not: the hub first
// calls it a CatchUpInterval after it started.) A Waker given in
// Config.Wake should do the same.
func (s *Store) Watch(ctx context.Context, fn func([]moitessier.Head)) error {
	const op = "watch"
	if err := s.check(op); err != nil {
		return err
	}
	ctx, cancel := donectx.WithDone(ctx, s.done)
	defer cancel()
	var err error
	if s.wake != nil {
		err = s.wake.Watch(ctx, fn)
	} else {
		<-ctx.Done()
	}
	if s.closed.Load() {
		return fmt.Errorf("clouddatastore: %s: %w", op, moitessier.ErrClosed)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return s.wrap(op, err)
}

// headTracker is what Heads knows of the listeners the hub asked about.
type headTracker struct {
	mu    sync.Mutex
	known map[string]knownHead
	// since is the store clock (Unix ns) at which the previous call began;
	// 0 before the first.
	since int64
}

type knownHead struct {
	inc     string
	head    int64
	created int64 // the incarnation's creation time, for moitessier.Head
}

// Heads returns the current heads of the given listeners, omitting those
// that no longer exist. The hub calls it every few seconds with every
// listener that has subscribers in this process, so it must not read each
// of them: it reads a listener once, when first asked about it, and after
// that only finds what changed, with two queries whatever the number of
// listeners — listeners whose head moved (or that were created) since the
// previous call, by their indexed Touched time, and listeners deleted
// since, by their tombstones — each looking Config.CatchUpMargin further
// back to cover commits in flight and clock differences. An idle listener
// so costs no read, and a call with nothing changed two (a query that
// finds nothing is billed as one entity read).
func (s *Store) Heads(ctx context.Context, ids []string) ([]moitessier.Head, error) {
	const op = "heads"
	if err := s.check(op); err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return nil, nil
	}
	t := &s.heads
	t.mu.Lock()
	defer t.mu.Unlock()
	start := s.cfg.Now().UnixNano()
	if t.known == nil {
		t.known = map[string]knownHead{}
	}
	askedSet := make(map[string]bool, len(ids))
	for _, id := range ids {
		askedSet[id] = true
	}
	asked := func(id string) bool { return askedSet[id] }
	if t.since != 0 && start-t.since > int64(s.cfg.TombstoneFor-s.cfg.CatchUpMargin) {
		// Too long since the last call: tombstones may be gone. Read all.
		clear(t.known)
	}
	var changed []string // known listeners whose head moved
	if t.since != 0 && len(t.known) > 0 {
		from := t.since - int64(s.cfg.CatchUpMargin)
		// Keys-only queries: billed as one entity read each, whatever they find.
		tks, err := s.getAll(ctx, datastore.NewQuery(kindTomb).Namespace(s.ns).FilterField("At", ">=", from).KeysOnly(), nil)
		if err != nil {
			return nil, s.wrap(op, err)
		}
		for _, k := range tks {
			id, inc := tombGen(k)
			if kh, ok := t.known[id]; ok && kh.inc == inc {
				delete(t.known, id)
			}
		}
		lks, err := s.getAll(ctx, datastore.NewQuery(kindListener).Namespace(s.ns).FilterField("Touched", ">=", from).KeysOnly(), nil)
		if err != nil {
			return nil, s.wrap(op, err)
		}
		for _, k := range lks {
			if id := listenerID(k); asked(id) {
				changed = append(changed, id)
			}
		}
	}
	// Read the listeners first asked about, and those that changed.
	missing := changed
	for _, id := range ids {
		if _, ok := t.known[id]; !ok && !slices.Contains(changed, id) {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		keys := make([]*datastore.Key, len(missing))
		les := make([]listenerEnt, len(missing))
		ents := make([]any, len(missing))
		for i, id := range missing {
			keys[i], ents[i] = s.listenerKey(id), &les[i]
		}
		found, err := s.lookup(ctx, keys, ents)
		if err != nil {
			return nil, s.wrap(op, err)
		}
		for i, id := range missing {
			if found[i] {
				t.known[id] = knownHead{inc: les[i].Inc, head: les[i].Head, created: les[i].Created}
			} else {
				delete(t.known, id)
			}
		}
	}
	for id := range t.known {
		if !asked(id) {
			delete(t.known, id)
		}
	}
	t.since = start
	heads := make([]moitessier.Head, 0, len(ids))
	for _, id := range ids {
		if k, ok := t.known[id]; ok {
			heads = append(heads, moitessier.Head{Listener: id, Seq: moitessier.Cursor(k.head), Created: fromNS(k.created)})
		}
	}
	return heads, nil
}

// tombGen returns the listener and incarnation a tombstone key names.
func tombGen(k *datastore.Key) (id, inc string) {
	gen := k.Name[1:]
	i := strings.LastIndexByte(gen, '/')
	if i < 0 {
		return gen, ""
	}
	return gen[:i], gen[i+1:]
}
