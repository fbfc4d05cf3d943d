// Package memstore is the in-memory moitessier.Store: the reference
// implementation of the Store contract, for tests and for embedding where
// nothing needs to outlive the process.
package memstore

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/internal/scopeindex"
)

// Store keeps everything in memory. The zero value is not usable; call New.
type Store struct {
	mu        sync.RWMutex
	listeners map[string]*listener
	index     *scopeindex.Index
	keys      map[keyID]*keyRecord
	closed    bool
	// Per-person counts for Quota: listeners by ListenerInfo.Person,
	// Handler and Shared listeners among them, and subscribers on all
	// listeners.
	owned, handlers, shared, subsOf map[string]int
	// scanned counts the subscribers Subscribers has looked at, so that a
	// test can check that a page costs what it returns.
	scanned atomic.Int64
}

var (
	_ moitessier.Store  = (*Store)(nil)
	_ moitessier.Closer = (*Store)(nil)
)

type listener struct {
	info moitessier.ListenerInfo
	subs map[subID]*moitessier.Subscriber
	// order holds the keys of subs in (person, client) byte order, so that
	// a page of subscribers costs O(log n + page), and a join or leave
	// O(log n).
	order *order
	msgs  msgLog // ascending Seq; the first may be past 1 after a sweep
}

type subID struct{ person, client string }

func (a subID) less(b subID) bool {
	return a.person < b.person || a.person == b.person && a.client < b.client
}

func newListener(info moitessier.ListenerInfo) *listener {
	return &listener{info: info, subs: map[subID]*moitessier.Subscriber{}, order: newOrder()}
}

// addSub stores a subscriber under k.
func (l *listener) addSub(k subID, sub *moitessier.Subscriber) {
	l.subs[k] = sub
	l.order.insert(k)
}

// removeSub deletes the subscriber k.
func (l *listener) removeSub(k subID) {
	delete(l.subs, k)
	l.order.remove(k)
}

type keyID struct{ sender, key string }

type keyRecord struct {
	at       time.Time
	fp       []byte // the request's fingerprint
	refs     []ref
	dispatch string // the batch's Dispatch: a message at a ref with another is not its
}

type ref struct {
	listener string
	seq      moitessier.Cursor
}

// New returns an empty store.
func New() *Store {
	return &Store{listeners: map[string]*listener{}, index: scopeindex.New(), keys: map[keyID]*keyRecord{},
		owned: map[string]int{}, handlers: map[string]int{}, shared: map[string]int{}, subsOf: map[string]int{}}
}

// Close makes every later call fail with moitessier.ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

func (s *Store) check(op string) error {
	if s.closed {
		return fmt.Errorf("memstore: %s: %w", op, moitessier.ErrClosed)
	}
	return nil
}

// snapshot returns the listener's info. Scopes is shared: it is never
// modified after the listener is created.
func (l *listener) snapshot() moitessier.ListenerInfo { return l.info }

// Join implements moitessier.Store. The quota is checked against counts
// kept per person, before anything is written.
func (s *Store) Join(ctx context.Context, li moitessier.ListenerInfo, sub moitessier.Subscriber, q moitessier.Quota) (moitessier.ListenerInfo, moitessier.Subscriber, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check("join"); err != nil {
		return li, sub, false, err
	}
	k := subID{sub.Person, sub.Client}
	l := s.listeners[li.ID]
	if l != nil {
		if old := l.subs[k]; old != nil {
			if sub.LeaseExpires.After(old.LeaseExpires) {
				old.LeaseExpires = sub.LeaseExpires
			}
			return l.snapshot(), *old, false, nil
		}
	}
	var over *moitessier.QuotaError
	switch {
	case l == nil && q.Listeners > 0 && s.owned[li.Person] >= q.Listeners:
		over = &moitessier.QuotaError{Person: li.Person, Kind: moitessier.QuotaListeners, Limit: q.Listeners}
	case l == nil && li.Type == moitessier.Handler && q.Handlers > 0 && s.handlers[li.Person] >= q.Handlers:
		over = &moitessier.QuotaError{Person: li.Person, Kind: moitessier.QuotaHandlers, Limit: q.Handlers}
	case l == nil && li.Type == moitessier.Shared && q.Shared > 0 && s.shared[li.Person] >= q.Shared:
		over = &moitessier.QuotaError{Person: li.Person, Kind: moitessier.QuotaShared, Limit: q.Shared}
	case q.Subscriptions > 0 && s.subsOf[sub.Person] >= q.Subscriptions:
		over = &moitessier.QuotaError{Person: sub.Person, Kind: moitessier.QuotaSubscriptions, Limit: q.Subscriptions}
	}
	if over != nil {
		return li, sub, false, fmt.Errorf("memstore: join %s: %w", li.ID, over)
	}
	created := l == nil
	if created {
		li.Scopes = slices.Clone(li.Scopes)
		li.Head = 0
		l = newListener(li)
		s.listeners[li.ID] = l
		s.index.Add(li.ID, li.Scopes)
		s.owned[li.Person]++
		switch li.Type {
		case moitessier.Handler:
			s.handlers[li.Person]++
		case moitessier.Shared:
			s.shared[li.Person]++
		}
	}
	sub.Cursor = min(sub.Cursor, l.info.Head)
	l.addSub(k, &sub)
	s.subsOf[sub.Person]++
	return l.snapshot(), sub, created, nil
}

// dec lowers a per-person count, forgetting it at 0.
func dec(m map[string]int, person string) {
	if m[person] <= 1 {
		delete(m, person)
	} else {
		m[person]--
	}
}

// Listener implements moitessier.Store.
func (s *Store) Listener(ctx context.Context, id string) (moitessier.ListenerInfo, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.check("listener"); err != nil {
		return moitessier.ListenerInfo{}, err
	}
	l := s.listeners[id]
	if l == nil {
		return moitessier.ListenerInfo{}, fmt.Errorf("memstore: listener %s: %w", id, moitessier.ErrNotFound)
	}
	return l.snapshot(), nil
}

// Subscribers implements moitessier.Store. A page is read from the
// listener's ordered index: O(log n) to find its start, then one step per
// subscriber returned.
func (s *Store) Subscribers(ctx context.Context, id string, r moitessier.SubscriberRange) ([]moitessier.Subscriber, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.check("subscribers"); err != nil {
		return nil, err
	}
	l := s.listeners[id]
	if l == nil {
		return nil, fmt.Errorf("memstore: subscribers of %s: %w", id, moitessier.ErrNotFound)
	}
	n := len(l.subs)
	if r.Limit > 0 {
		n = min(n, r.Limit)
	}
	out := make([]moitessier.Subscriber, 0, n)
	l.order.ascend(subID{r.Person, r.Client}, func(k subID) bool {
		s.scanned.Add(1)
		out = append(out, *l.subs[k])
		return r.Limit <= 0 || len(out) < r.Limit
	})
	return out, nil
}

// Leave implements moitessier.Store.
func (s *Store) Leave(ctx context.Context, id, person, client string) (bool, error) {
	return s.leave(id, nil, person, client)
}

var _ moitessier.IncarnationLeaver = (*Store)(nil)

// LeaveOf implements moitessier.IncarnationLeaver.
func (s *Store) LeaveOf(ctx context.Context, id string, created time.Time, person, client string) (bool, error) {
	return s.leave(id, &created, person, client)
}

// leave is Leave, or LeaveOf if created is not nil.
func (s *Store) leave(id string, created *time.Time, person, client string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check("leave"); err != nil {
		return false, err
	}
	l := s.listeners[id]
	if l != nil && created != nil && !l.info.Created.Equal(*created) {
		return false, fmt.Errorf("memstore: leave %s: %w: no listener of that incarnation", id, moitessier.ErrNotFound)
	}
	if l == nil || l.subs[subID{person, client}] == nil {
		return false, fmt.Errorf("memstore: leave %s: subscriber %q/%q: %w", id, person, client, moitessier.ErrNotFound)
	}
	l.removeSub(subID{person, client})
	dec(s.subsOf, person)
	if len(l.subs) > 0 {
		return false, nil
	}
	s.deleteListener(l)
	return true, nil
}

// deleteListener removes a listener that has no subscriber left.
func (s *Store) deleteListener(l *listener) {
	delete(s.listeners, l.info.ID)
	s.index.Remove(l.info.ID, l.info.Scopes)
	dec(s.owned, l.info.Person)
	switch l.info.Type {
	case moitessier.Handler:
		dec(s.handlers, l.info.Person)
	case moitessier.Shared:
		dec(s.shared, l.info.Person)
	}
}

// Match implements moitessier.Store.
func (s *Store) Match(ctx context.Context, scope string) ([]moitessier.ListenerInfo, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.check("match"); err != nil {
		return nil, err
	}
	var out []moitessier.ListenerInfo
	s.index.Match(scope, func(id string) {
		if l := s.listeners[id]; l != nil {
			out = append(out, l.snapshot())
		}
	})
	return out, nil
}

// Append implements moitessier.Store.
func (s *Store) Append(ctx context.Context, b *moitessier.Batch) ([]moitessier.Message, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, fmt.Errorf("memstore: append: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check("append"); err != nil {
		return nil, false, err
	}
	kid := keyID{b.Sender, b.Key}
	if b.Key != "" {
		if rec := s.keys[kid]; rec != nil && !rec.at.Before(b.KeySince) {
			if !b.SameRequest(rec.fp) {
				return nil, false, fmt.Errorf("memstore: append %s: key %q: %w", b.Dispatch, b.Key, moitessier.ErrIdempotencyMismatch)
			}
			var out []moitessier.Message
			for _, r := range rec.refs {
				// A message of another dispatch at the ref: the listener
				// was deleted and made again, and renumbered from 1.
				if m, ok := s.find(r); ok && m.Dispatch == rec.dispatch {
					out = append(out, m)
				}
			}
			return out, true, nil
		}
	}
	out := make([]moitessier.Message, 0, len(b.Entries))
	for _, e := range b.Entries {
		l := s.listeners[e.Listener]
		if l == nil {
			continue
		}
		l.info.Head++
		m := moitessier.Message{Listener: e.Listener, Seq: l.info.Head, Dispatch: b.Dispatch, Scope: b.Scope, Sender: b.Sender, Text: e.Text, Created: b.Created}
		l.msgs.append(m)
		out = append(out, m)
	}
	if b.Key != "" {
		rec := &keyRecord{at: b.Created, fp: slices.Clone(b.Fingerprint), refs: make([]ref, len(out)), dispatch: b.Dispatch}
		for i, m := range out {
			rec.refs[i] = ref{m.Listener, m.Seq}
		}
		s.keys[kid] = rec
	}
	return out, false, nil
}

// find returns a stored message by listener and sequence number.
func (s *Store) find(r ref) (moitessier.Message, bool) {
	l := s.listeners[r.listener]
	if l == nil {
		return moitessier.Message{}, false
	}
	i := l.after(r.seq - 1)
	if i < l.msgs.len() && l.msgs.at(i).Seq == r.seq {
		return *l.msgs.at(i), true
	}
	return moitessier.Message{}, false
}

// after returns the index of the first message with Seq > c.
func (l *listener) after(c moitessier.Cursor) int {
	return l.msgs.search(func(m *moitessier.Message) bool { return m.Seq > c })
}

// Read implements moitessier.Store.
func (s *Store) Read(ctx context.Context, id string, after moitessier.Cursor, limit int) ([]moitessier.Message, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.check("read"); err != nil {
		return nil, err
	}
	return s.listeners[id].read(after, limit), nil
}

var _ moitessier.IncarnationReader = (*Store)(nil)

// ReadOf implements moitessier.IncarnationReader.
func (s *Store) ReadOf(ctx context.Context, id string, created time.Time, after moitessier.Cursor, limit int) ([]moitessier.Message, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.check("read"); err != nil {
		return nil, err
	}
	l := s.listeners[id]
	if l == nil || !l.info.Created.Equal(created) {
		return nil, fmt.Errorf("memstore: read %s: %w: no listener of that incarnation", id, moitessier.ErrNotFound)
	}
	return l.read(after, limit), nil
}

// read returns up to limit of l's messages after after; l may be nil.
func (l *listener) read(after moitessier.Cursor, limit int) []moitessier.Message {
	if l == nil || limit <= 0 {
		return nil
	}
	i := l.after(after)
	j := i + min(limit, l.msgs.len()-i) // limit may be near MaxInt
	return l.msgs.copyRange(i, j)
}

// Seek implements moitessier.Store.
func (s *Store) Seek(ctx context.Context, id string, t time.Time) (moitessier.Cursor, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.check("seek"); err != nil {
		return 0, err
	}
	l := s.listeners[id]
	if l == nil {
		return 0, fmt.Errorf("memstore: seek %s: %w", id, moitessier.ErrNotFound)
	}
	i := l.msgs.search(func(m *moitessier.Message) bool { return !m.Created.Before(t) })
	if i < l.msgs.len() {
		return l.msgs.at(i).Seq - 1, nil
	}
	return l.info.Head, nil
}

// Checkpoint implements moitessier.Store.
func (s *Store) Checkpoint(ctx context.Context, cps []moitessier.Checkpoint) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check("checkpoint"); err != nil {
		return err
	}
	for _, cp := range cps {
		l := s.listeners[cp.Listener]
		if l == nil || !cp.Created.IsZero() && !cp.Created.Equal(l.info.Created) {
			continue
		}
		sub := l.subs[subID{cp.Person, cp.Client}]
		if sub == nil {
			continue
		}
		if cp.Cursor > sub.Cursor {
			sub.Cursor = cp.Cursor
		}
		if !cp.LeaseExpires.IsZero() {
			sub.LeaseExpires = cp.LeaseExpires
		}
	}
	return nil
}

// Sweep implements moitessier.Store. Memory has no long write lock to avoid,
// so it sweeps everything at once.
func (s *Store) Sweep(ctx context.Context, p moitessier.SweepParams) (moitessier.SweepResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var res moitessier.SweepResult
	if err := s.check("sweep"); err != nil {
		return res, err
	}
	for _, l := range s.listeners {
		for k, sub := range l.subs {
			if sub.LeaseExpires.Before(p.Now) {
				l.removeSub(k)
				dec(s.subsOf, k.person)
				res.Subscribers++
			}
		}
		if len(l.subs) == 0 {
			res.Expired = append(res.Expired, l.snapshot())
			res.Messages += l.msgs.len() // removed with it, as the other stores count them
			s.deleteListener(l)
			continue
		}
		drop := 0
		if p.MaxAge > 0 {
			cutoff := p.Now.Add(-p.MaxAge)
			drop = l.msgs.search(func(m *moitessier.Message) bool { return !m.Created.Before(cutoff) })
		}
		if p.MaxCount > 0 && l.msgs.len()-drop > p.MaxCount {
			drop = l.msgs.len() - p.MaxCount
		}
		if drop > 0 {
			l.msgs.dropOldest(drop)
			res.Messages += drop
		}
	}
	for k, rec := range s.keys {
		if rec.at.Before(p.KeysBefore) {
			delete(s.keys, k)
			res.Keys++
		}
	}
	return res, nil
}
