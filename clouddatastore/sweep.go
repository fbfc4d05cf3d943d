package clouddatastore

import (
	"context"
	"errors"
	"slices"

	"cloud.google.com/go/datastore"

	"github.com/likestripes/moitessier"
)

// Sweep removes what has expired, each step found through a built-in
// single-property index and done in batches of at most p.BatchSize (and
// Config.MaxMutations) entities:
//
//  1. subscribers whose lease ended before p.Now (a keys-only query on
//     Lease), in one transaction per listener that re-reads their leases,
//     lowers the listener's subscriber count and, at zero, deletes the
//     listener as Leave does;
//  2. the messages of deleted incarnations (found through their
//     tombstones), by keys-only ancestor queries and blind deletes; a
//     tombstone goes once its messages are gone and it is older than
//     Config.TombstoneFor;
//  3. messages created before p.Now-p.MaxAge (a keys-only query on
//     Created);
//  4. with p.MaxCount, the messages of each listener below its head minus
//     MaxCount: this reads every listener, once per Sweep;
//  5. idempotency keys recorded before p.KeysBefore.
//
// Deleting messages needs no transaction: a deleted message is never
// written again (sequence numbers only grow, and a new incarnation has new
// keys).
func (s *Store) Sweep(ctx context.Context, p moitessier.SweepParams) (moitessier.SweepResult, error) {
	const op = "sweep"
	var res moitessier.SweepResult
	if err := s.check(op); err != nil {
		return res, err
	}
	batch := p.BatchSize
	if batch <= 0 {
		batch = 1000
	}
	batch = min(batch, s.cfg.MaxMutations)
	if err := s.sweepSubscribers(ctx, p, batch, &res); err != nil {
		return res, s.wrap(op, err)
	}
	if err := s.sweepTombs(ctx, batch, &res); err != nil {
		return res, s.wrap(op, err)
	}
	if p.MaxAge > 0 {
		q := datastore.NewQuery(kindMsg).Namespace(s.ns).FilterField("Created", "<", toNS(p.Now.Add(-p.MaxAge))).KeysOnly()
		n, err := s.deleteAll(ctx, q, batch)
		res.Messages += n
		if err != nil {
			return res, s.wrap(op, err)
		}
	}
	if p.MaxCount > 0 {
		if err := s.sweepCounts(ctx, p.MaxCount, batch, &res); err != nil {
			return res, s.wrap(op, err)
		}
	}
	q := datastore.NewQuery(kindKey).Namespace(s.ns).FilterField("At", "<", toNS(p.KeysBefore)).KeysOnly()
	n, err := s.deleteAll(ctx, q, batch)
	res.Keys += n
	if err != nil {
		return res, s.wrap(op, err)
	}
	return res, nil
}

// deleteAll deletes what a keys-only query finds, batch keys at a time,
// until it finds nothing more, and returns how many it deleted.
func (s *Store) deleteAll(ctx context.Context, q *datastore.Query, batch int) (int, error) {
	total := 0
	for {
		keys, err := s.getAll(ctx, q.Limit(batch), nil)
		if err != nil {
			return total, err
		}
		if len(keys) == 0 {
			return total, nil
		}
		if err := s.retry(ctx, "delete", func() error { return s.client.DeleteMulti(ctx, keys) }); err != nil {
			return total, err
		}
		total += len(keys)
		if len(keys) < batch {
			return total, nil
		}
	}
}

// sweepSubscribers removes expired subscribers, and the listeners they
// leave empty.
func (s *Store) sweepSubscribers(ctx context.Context, p moitessier.SweepParams, batch int, res *moitessier.SweepResult) error {
	now := toNS(p.Now)
	q := datastore.NewQuery(kindSub).Namespace(s.ns).FilterField("Lease", "<", now).KeysOnly().Limit(batch)
	for {
		keys, err := s.getAll(ctx, q, nil)
		if err != nil {
			return err
		}
		if len(keys) == 0 {
			return nil
		}
		byListener := map[string][]*datastore.Key{}
		var order []string
		for _, k := range keys {
			id := listenerID(k.Parent)
			if byListener[id] == nil {
				order = append(order, id)
			}
			byListener[id] = append(byListener[id], k)
		}
		slices.Sort(order)
		progress := 0
		// One transaction writes a subscriber and its person's count per
		// expired subscriber, and, deleting the listener, up to
		// MaxScopesPerListener scope versions and a few more.
		chunk := max(1, (s.cfg.MaxMutations-moitessier.MaxScopesPerListener-8)/2)
		for _, id := range order {
			ks := byListener[id]
			for i := 0; i < len(ks); i += chunk {
				n, deleted, info, err := s.expire(ctx, id, ks[i:min(len(ks), i+chunk)], now)
				if err != nil {
					return err
				}
				progress += n
				res.Subscribers += n
				if deleted {
					res.Expired = append(res.Expired, info)
					s.mc.DropAll()
				}
			}
		}
		if len(keys) < batch || progress == 0 {
			return nil
		}
	}
}

// expire removes, in one transaction, those of a listener's subscribers
// (keys, at most one commit's worth) whose lease still ends before now,
// and the listener if none remains.
func (s *Store) expire(ctx context.Context, id string, keys []*datastore.Key, now int64) (n int, deleted bool, info moitessier.ListenerInfo, err error) {
	lk := s.listenerKey(id)
	err = s.runTx(ctx, "expire", func(tx *datastore.Transaction) error {
		n, deleted = 0, false
		var le listenerEnt
		subs := make([]subEnt, len(keys))
		ents := make([]any, 0, 1+len(keys))
		ents = append(ents, &le)
		for i := range subs {
			ents = append(ents, &subs[i])
		}
		found, err := txLookup(tx, append([]*datastore.Key{lk}, keys...), ents)
		if err != nil {
			return err
		}
		var gone []*datastore.Key
		for i, k := range keys {
			if found[1+i] && subs[i].Lease < now {
				gone = append(gone, k)
			}
		}
		if len(gone) == 0 {
			return errRollback
		}
		if err := tx.DeleteMulti(gone); err != nil {
			return err
		}
		n = len(gone)
		var names []string
		drop := map[string]int64{}
		for i := range keys {
			if found[1+i] && subs[i].Lease < now {
				if drop[subs[i].Person] == 0 {
					names = append(names, subs[i].Person)
				}
				drop[subs[i].Person]++
			}
		}
		le.Subs -= int64(n)
		last := found[0] && le.Subs <= 0
		if last && drop[le.Person] == 0 {
			names = append(names, le.Person)
		}
		persons, err := s.loadPersons(tx, names)
		if err != nil {
			return err
		}
		for p, d := range drop {
			persons[p].Subs -= d
		}
		switch {
		case !found[0]:
			// subscribers left behind by a listener already gone
		case !last:
			if _, err := tx.Put(lk, &le); err != nil {
				return err
			}
		default:
			deleted, info = true, le.info(id)
			if err := s.deleteListener(tx, id, &le, persons); err != nil {
				return err
			}
		}
		return s.savePersons(tx, persons)
	})
	if errors.Is(err, errRollback) {
		err = nil
	}
	return n, deleted, info, err
}

// sweepTombs deletes the messages of deleted incarnations, and the
// tombstones whose messages are gone and that every process's Heads has
// had time to see.
func (s *Store) sweepTombs(ctx context.Context, batch int, res *moitessier.SweepResult) error {
	// Keys-only: a tombstone's key names its incarnation.
	keys, err := s.getAll(ctx, datastore.NewQuery(kindTomb).Namespace(s.ns).KeysOnly(), nil)
	if err != nil || len(keys) == 0 {
		return err
	}
	for _, k := range keys {
		id, inc := tombGen(k)
		gname := genName(id, inc)
		n, err := s.deleteAll(ctx, datastore.NewQuery(kindMsg).Namespace(s.ns).Ancestor(s.genKey(gname)).KeysOnly(), batch)
		res.Messages += n
		if err != nil {
			return err
		}
		s.trimmed.Delete(gname)
	}
	// Tombstones old enough that every Heads has seen them go now that
	// their messages are gone.
	keep := s.cfg.Now().Add(-s.cfg.TombstoneFor).UnixNano()
	q := datastore.NewQuery(kindTomb).Namespace(s.ns).FilterField("At", "<", keep).KeysOnly()
	_, err = s.deleteAll(ctx, q, batch)
	return err
}

// sweepCounts keeps at most max messages per listener. It reads every
// listener, a page at a time, and for those whose head is more than max
// past what this process last trimmed, deletes the messages at or below
// head-max.
func (s *Store) sweepCounts(ctx context.Context, maxCount, batch int, res *moitessier.SweepResult) error {
	var last *datastore.Key
	for {
		q := datastore.NewQuery(kindListener).Namespace(s.ns).Order("__key__").Limit(500)
		if last != nil {
			q = q.FilterField("__key__", ">", last)
		}
		var les []listenerEnt
		keys, err := s.getAll(ctx, q, &les)
		if err != nil {
			return err
		}
		for i, k := range keys {
			le := &les[i]
			upTo := le.Head - int64(maxCount)
			if upTo <= 0 {
				continue
			}
			gname := genName(listenerID(k), le.Inc)
			if t, ok := s.trimmed.Load(gname); ok && t.(int64) >= upTo {
				continue
			}
			gen := s.genKey(gname)
			q := datastore.NewQuery(kindMsg).Namespace(s.ns).Ancestor(gen).
				FilterField("__key__", "<=", s.msgKey(gen, upTo)).KeysOnly()
			n, err := s.deleteAll(ctx, q, batch)
			res.Messages += n
			if err != nil {
				return err
			}
			s.trimmed.Store(gname, upTo)
		}
		if len(keys) < 500 {
			return nil
		}
		last = keys[len(keys)-1]
	}
}
