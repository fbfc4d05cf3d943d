package clouddatastore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"cloud.google.com/go/datastore"

	"github.com/likestripes/moitessier"
)

// Join stores l unless it exists and adds sub as its subscriber unless it
// exists, within q; see moitessier.Store. It is one transaction: it reads
// the listener and the subscriber and writes the subscriber (a new one, or
// a later lease). Creating the subscriber also reads and writes the
// listener (its subscriber count) and the subscribing person's counts;
// creating the listener also its owner's counts and its scopes' versions.
// A renewal is never refused; a creation past q writes nothing and returns
// a *moitessier.QuotaError.
func (s *Store) Join(ctx context.Context, l moitessier.ListenerInfo, sub moitessier.Subscriber, q moitessier.Quota) (moitessier.ListenerInfo, moitessier.Subscriber, bool, error) {
	const op = "join"
	if err := s.check(op); err != nil {
		return moitessier.ListenerInfo{}, moitessier.Subscriber{}, false, err
	}
	var (
		info    moitessier.ListenerInfo
		stored  moitessier.Subscriber
		created bool
	)
	lk, sk := s.listenerKey(l.ID), s.subKey(l.ID, sub.Person, sub.Client)
	err := s.runTx(ctx, op, func(tx *datastore.Transaction) error {
		created = false
		var (
			le listenerEnt
			se subEnt
		)
		found, err := txLookup(tx, []*datastore.Key{lk, sk}, []any{&le, &se})
		if err != nil {
			return err
		}
		if found[0] && found[1] {
			if lease := toNS(sub.LeaseExpires); lease > se.Lease {
				se.Lease = lease
				if _, err := tx.Put(sk, &se); err != nil {
					return err
				}
			}
			info, stored = le.info(l.ID), se.sub()
			return nil
		}
		created = !found[0]
		names := []string{sub.Person}
		if created && l.Person != sub.Person {
			names = append(names, l.Person)
		}
		persons, err := s.loadPersons(tx, names)
		if err != nil {
			return err
		}
		if created {
			owner := persons[l.Person]
			switch {
			case q.Listeners > 0 && owner.Listeners >= int64(q.Listeners):
				return &moitessier.QuotaError{Person: l.Person, Kind: moitessier.QuotaListeners, Limit: q.Listeners}
			case l.Type == moitessier.Handler && q.Handlers > 0 && owner.Handlers >= int64(q.Handlers):
				return &moitessier.QuotaError{Person: l.Person, Kind: moitessier.QuotaHandlers, Limit: q.Handlers}
			case l.Type == moitessier.Shared && q.Shared > 0 && owner.Shared >= int64(q.Shared):
				return &moitessier.QuotaError{Person: l.Person, Kind: moitessier.QuotaShared, Limit: q.Shared}
			}
			owner.Listeners++
			switch l.Type {
			case moitessier.Handler:
				owner.Handlers++
			case moitessier.Shared:
				owner.Shared++
			}
			le = listenerEnt{
				Type: int64(l.Type), Person: l.Person, Client: l.Client, Scopes: l.Scopes,
				Created: toNS(l.Created), Inc: newIncarnation(), Touched: s.cfg.Now().UnixNano(),
			}
			for _, p := range l.Scopes {
				le.Wild = le.Wild || moitessier.IsPattern(p)
			}
			if err := s.changeScopes(tx, l.Scopes, +1); err != nil {
				return err
			}
		}
		subber := persons[sub.Person]
		if q.Subscriptions > 0 && subber.Subs >= int64(q.Subscriptions) {
			return &moitessier.QuotaError{Person: sub.Person, Kind: moitessier.QuotaSubscriptions, Limit: q.Subscriptions}
		}
		subber.Subs++
		if err := s.savePersons(tx, persons); err != nil {
			return err
		}
		se = subEnt{Person: sub.Person, Client: sub.Client, Cursor: min(toSeq(sub.Cursor), le.Head), Joined: toNS(sub.Joined), Lease: toNS(sub.LeaseExpires)}
		le.Subs++
		if _, err := tx.Put(sk, &se); err != nil {
			return err
		}
		if _, err := tx.Put(lk, &le); err != nil {
			return err
		}
		info, stored = le.info(l.ID), se.sub()
		return nil
	})
	if err != nil {
		return moitessier.ListenerInfo{}, moitessier.Subscriber{}, false, s.wrap(op, fmt.Errorf("listener %s: %w", l.ID, err))
	}
	if created {
		s.mc.DropAll()
	}
	return info, stored, created, nil
}

// loadPersons reads the counts of the named persons in tx; a person with
// no entity counts zero.
func (s *Store) loadPersons(tx *datastore.Transaction, names []string) (map[string]*personEnt, error) {
	keys := make([]*datastore.Key, len(names))
	ps := make([]personEnt, len(names))
	ents := make([]any, len(names))
	for i, n := range names {
		keys[i], ents[i] = s.personKey(n), &ps[i]
	}
	if _, err := txLookup(tx, keys, ents); err != nil {
		return nil, err
	}
	m := make(map[string]*personEnt, len(names))
	for i, n := range names {
		m[n] = &ps[i]
	}
	return m, nil
}

// savePersons writes counts read by loadPersons, deleting those at zero.
func (s *Store) savePersons(tx *datastore.Transaction, m map[string]*personEnt) error {
	for n, p := range m {
		k := s.personKey(n)
		if p.Listeners <= 0 && p.Handlers <= 0 && p.Shared <= 0 && p.Subs <= 0 {
			if err := tx.Delete(k); err != nil {
				return err
			}
			continue
		}
		if _, err := tx.Put(k, p); err != nil {
			return err
		}
	}
	return nil
}

// changeScopes records in tx that a listener with these scopes was created
// (delta +1) or deleted (-1): every concrete scope's version changes and
// its count moves (the scope entity goes with its last listener), and a
// pattern changes the pattern version.
func (s *Store) changeScopes(tx *datastore.Transaction, scopes []string, delta int64) error {
	var keys []*datastore.Key
	wild := false
	for _, p := range scopes {
		if moitessier.IsPattern(p) {
			wild = true
		} else {
			keys = append(keys, s.scopeKey(p))
		}
	}
	if wild {
		keys = append(keys, s.metaKey())
	}
	if len(keys) == 0 {
		return nil
	}
	ents := make([]any, len(keys))
	scs := make([]scopeEnt, len(keys))
	var meta metaEnt
	for i := range keys {
		ents[i] = &scs[i]
	}
	if wild {
		ents[len(keys)-1] = &meta
	}
	found, err := txLookup(tx, keys, ents)
	if err != nil {
		return err
	}
	n := len(keys)
	if wild {
		n--
		if !found[n] {
			return fmt.Errorf("the store's meta entity is missing")
		}
		meta.Patterns = newVersion()
		if _, err := tx.Put(keys[n], &meta); err != nil {
			return err
		}
	}
	for i := range n {
		sc := &scs[i]
		if !found[i] {
			*sc = scopeEnt{}
		}
		sc.Count += delta
		if sc.Count <= 0 {
			if err := tx.Delete(keys[i]); err != nil {
				return err
			}
			continue
		}
		sc.Version = newVersion()
		if _, err := tx.Put(keys[i], sc); err != nil {
			return err
		}
	}
	return nil
}

// deleteListener deletes, in tx, the listener le (whose subscribers are
// already deleted): its entity goes, a tombstone records the incarnation
// (Sweep deletes its messages, Heads reports it gone), its scopes'
// versions change, and its owner's counts in persons (which must hold
// le.Person; the caller saves them) go down.
func (s *Store) deleteListener(tx *datastore.Transaction, id string, le *listenerEnt, persons map[string]*personEnt) error {
	if err := tx.Delete(s.listenerKey(id)); err != nil {
		return err
	}
	owner := persons[le.Person]
	owner.Listeners--
	switch moitessier.ListenerType(le.Type) {
	case moitessier.Handler:
		owner.Handlers--
	case moitessier.Shared:
		owner.Shared = max(owner.Shared-1, 0)
	}
	gen := genName(id, le.Inc)
	if _, err := tx.Put(s.tombKey(gen), &tombEnt{Listener: id, Inc: le.Inc, At: s.cfg.Now().UnixNano()}); err != nil {
		return err
	}
	return s.changeScopes(tx, le.Scopes, -1)
}

// Listener returns the listener with the given ID, or ErrNotFound.
func (s *Store) Listener(ctx context.Context, id string) (moitessier.ListenerInfo, error) {
	const op = "listener"
	if err := s.check(op); err != nil {
		return moitessier.ListenerInfo{}, err
	}
	var le listenerEnt
	err := s.get(ctx, s.listenerKey(id), &le)
	if errors.Is(err, datastore.ErrNoSuchEntity) {
		return moitessier.ListenerInfo{}, fmt.Errorf("clouddatastore: listener %s: %w", id, moitessier.ErrNotFound)
	}
	if err != nil {
		return moitessier.ListenerInfo{}, s.wrap(op, err)
	}
	return le.info(id), nil
}

// Subscribers returns the listener's subscribers in the range r, in
// (Person, Client) byte order, which is their keys' order: one ancestor
// query from the first key at or after r's start, so a page costs what it
// returns. It returns ErrNotFound if the listener does not exist.
func (s *Store) Subscribers(ctx context.Context, listenerID string, r moitessier.SubscriberRange) ([]moitessier.Subscriber, error) {
	const op = "subscribers"
	if err := s.check(op); err != nil {
		return nil, err
	}
	lk := s.listenerKey(listenerID)
	var le listenerEnt
	err := s.get(ctx, lk, &le)
	if errors.Is(err, datastore.ErrNoSuchEntity) {
		return nil, fmt.Errorf("clouddatastore: subscribers of %s: %w", listenerID, moitessier.ErrNotFound)
	}
	if err != nil {
		return nil, s.wrap(op, err)
	}
	q := datastore.NewQuery(kindSub).Namespace(s.ns).Ancestor(lk).Order("__key__")
	if r.Person != "" || r.Client != "" {
		q = q.FilterField("__key__", ">=", s.subKey(listenerID, r.Person, r.Client))
	}
	if r.Limit > 0 {
		q = q.Limit(r.Limit)
	}
	var ents []subEnt
	if _, err := s.getAll(ctx, q, &ents); err != nil {
		return nil, s.wrap(op, err)
	}
	subs := make([]moitessier.Subscriber, len(ents))
	for i := range ents {
		subs[i] = ents[i].sub()
	}
	return subs, nil
}

// Leave removes one subscriber and, if it was the last, the listener, in
// one transaction; see deleteListener for what goes with the listener. It
// returns ErrNotFound if there is no such subscriber.
func (s *Store) Leave(ctx context.Context, listenerID, person, client string) (bool, error) {
	return s.leave(ctx, listenerID, nil, person, client)
}

var _ moitessier.IncarnationLeaver = (*Store)(nil)

// LeaveOf implements moitessier.IncarnationLeaver: Leave, in a transaction
// that leaves only while the listener is the incarnation created.
func (s *Store) LeaveOf(ctx context.Context, listenerID string, created time.Time, person, client string) (bool, error) {
	return s.leave(ctx, listenerID, &created, person, client)
}

// leave is Leave, or LeaveOf if created is not nil.
func (s *Store) leave(ctx context.Context, listenerID string, created *time.Time, person, client string) (bool, error) {
	const op = "leave"
	if err := s.check(op); err != nil {
		return false, err
	}
	var deleted bool
	lk, sk := s.listenerKey(listenerID), s.subKey(listenerID, person, client)
	err := s.runTx(ctx, op, func(tx *datastore.Transaction) error {
		deleted = false
		var (
			le listenerEnt
			se subEnt
		)
		found, err := txLookup(tx, []*datastore.Key{lk, sk}, []any{&le, &se})
		if err != nil {
			return err
		}
		if found[0] && created != nil && le.Created != toNS(*created) {
			return fmt.Errorf("listener %s: %w: no listener of that incarnation", listenerID, moitessier.ErrNotFound)
		}
		if !found[0] || !found[1] {
			return fmt.Errorf("subscriber %q/%q of %s: %w", person, client, listenerID, moitessier.ErrNotFound)
		}
		if err := tx.Delete(sk); err != nil {
			return err
		}
		le.Subs--
		names := []string{person}
		if le.Subs <= 0 && le.Person != person {
			names = append(names, le.Person)
		}
		persons, err := s.loadPersons(tx, names)
		if err != nil {
			return err
		}
		persons[person].Subs--
		if le.Subs > 0 {
			if _, err := tx.Put(lk, &le); err != nil {
				return err
			}
		} else {
			deleted = true
			if err := s.deleteListener(tx, listenerID, &le, persons); err != nil {
				return err
			}
		}
		return s.savePersons(tx, persons)
	})
	if errors.Is(err, moitessier.ErrNotFound) {
		return false, fmt.Errorf("clouddatastore: leave: %w", err)
	}
	if err != nil {
		return false, s.wrap(op, err)
	}
	if deleted {
		s.mc.DropAll()
	}
	return deleted, nil
}
