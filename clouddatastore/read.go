package clouddatastore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"cloud.google.com/go/datastore"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/internal/checkpoints"
)

// Read returns up to limit messages of a listener with Seq > after, in
// order. It reads the listener (its head and incarnation) and, only if the
// head is past after, queries the incarnation's messages by key from
// after+1: Datastore's built-in key index serves the query, and the
// messages come back in sequence order.
func (s *Store) Read(ctx context.Context, listenerID string, after moitessier.Cursor, limit int) ([]moitessier.Message, error) {
	return s.read(ctx, listenerID, nil, after, limit)
}

var _ moitessier.IncarnationReader = (*Store)(nil)

// ReadOf implements moitessier.IncarnationReader: Read, of the incarnation
// whose listener entity names created (the messages read are children of
// that entity's incarnation key), or an error wrapping ErrNotFound.
func (s *Store) ReadOf(ctx context.Context, listenerID string, created time.Time, after moitessier.Cursor, limit int) ([]moitessier.Message, error) {
	return s.read(ctx, listenerID, &created, after, limit)
}

// read is Read, or ReadOf if created is not nil.
func (s *Store) read(ctx context.Context, listenerID string, created *time.Time, after moitessier.Cursor, limit int) ([]moitessier.Message, error) {
	const op = "read"
	if err := s.check(op); err != nil {
		return nil, err
	}
	if created == nil && (limit <= 0 || after >= moitessier.Resume) {
		return nil, nil
	}
	var le listenerEnt
	err := s.get(ctx, s.listenerKey(listenerID), &le)
	switch {
	case created != nil && (errors.Is(err, datastore.ErrNoSuchEntity) || err == nil && !fromNS(le.Created).Equal(*created)):
		return nil, fmt.Errorf("clouddatastore: read %s: %w: no listener of that incarnation", listenerID, moitessier.ErrNotFound)
	case errors.Is(err, datastore.ErrNoSuchEntity):
		return nil, nil
	case err != nil:
		return nil, s.wrap(op, err)
	}
	if limit <= 0 || after >= moitessier.Resume {
		return nil, nil
	}
	a := toSeq(after)
	if le.Head <= a {
		return nil, nil
	}
	n := int(min(int64(limit), le.Head-a))
	gen := s.genKey(genName(listenerID, le.Inc))
	q := datastore.NewQuery(kindMsg).Namespace(s.ns).Ancestor(gen).
		FilterField("__key__", ">", s.msgKey(gen, max(a, 0))).Order("__key__").Limit(n)
	if a <= 0 {
		q = datastore.NewQuery(kindMsg).Namespace(s.ns).Ancestor(gen).Order("__key__").Limit(n)
	}
	var ents []msgEnt
	keys, err := s.getAll(ctx, q, &ents)
	if err != nil {
		return nil, s.wrap(op, err)
	}
	msgs := make([]moitessier.Message, len(keys))
	for i, k := range keys {
		m := &ents[i]
		msgs[i] = moitessier.Message{
			Listener: listenerID, Seq: moitessier.Cursor(k.ID), Dispatch: m.Dispatch,
			Scope: m.Scope, Sender: m.Sender, Text: m.Text, Created: fromNS(m.Created),
		}
	}
	return msgs, nil
}

// firstFrom returns the seq and creation time of the incarnation's first
// message with seq >= from, or ok false.
func (s *Store) firstFrom(ctx context.Context, gen *datastore.Key, from int64) (seq, created int64, ok bool, err error) {
	q := datastore.NewQuery(kindMsg).Namespace(s.ns).Ancestor(gen).Order("__key__").Limit(1)
	if from > 1 {
		q = q.FilterField("__key__", ">=", s.msgKey(gen, from))
	}
	var ents []msgEnt
	keys, err := s.getAll(ctx, q, &ents)
	if err != nil || len(keys) == 0 {
		return 0, 0, false, err
	}
	return keys[0].ID, ents[0].Created, true, nil
}

// Seek returns the cursor just before the listener's first message created
// at or after t, or ErrNotFound. A listener's messages are in time order
// (the hub stamps them just before the append), so Seek binary-searches
// its sequence with one single-entity key query per step: about log2(n)
// queries for n kept messages, and no composite index.
func (s *Store) Seek(ctx context.Context, listenerID string, t time.Time) (moitessier.Cursor, error) {
	const op = "seek"
	if err := s.check(op); err != nil {
		return 0, err
	}
	var le listenerEnt
	err := s.get(ctx, s.listenerKey(listenerID), &le)
	if errors.Is(err, datastore.ErrNoSuchEntity) {
		return 0, fmt.Errorf("clouddatastore: seek %s: %w", listenerID, moitessier.ErrNotFound)
	}
	if err != nil {
		return 0, s.wrap(op, err)
	}
	gen := s.genKey(genName(listenerID, le.Inc))
	ts := toNS(t)
	first, created, ok, err := s.firstFrom(ctx, gen, 1)
	if err != nil {
		return 0, s.wrap(op, err)
	}
	if !ok {
		return moitessier.Cursor(le.Head), nil
	}
	if created >= ts {
		return moitessier.Cursor(first - 1), nil
	}
	// Every kept message at or below lo was created before t; every one
	// at or above hi at or after it. answer is the first kept one at or
	// above hi (head+1: none).
	lo, hi, answer := first, le.Head+1, le.Head+1
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		seq, created, ok, err := s.firstFrom(ctx, gen, mid)
		if err != nil {
			return 0, s.wrap(op, err)
		}
		switch {
		case !ok || seq >= hi:
			hi = mid // nothing kept in [mid, hi)
		case created < ts:
			lo = seq
		default:
			hi, answer = seq, seq
		}
	}
	return moitessier.Cursor(answer - 1), nil
}

// incarnations returns, in tx, the creation time (Unix ns) of each listener
// that a checkpoint of cps names an incarnation of; a listener that does
// not exist is missing from the map.
func (s *Store) incarnations(tx *datastore.Transaction, cps []moitessier.Checkpoint) (map[string]int64, error) {
	var ids []string
	for _, c := range cps {
		if !c.Created.IsZero() && (len(ids) == 0 || ids[len(ids)-1] != c.Listener) {
			ids = append(ids, c.Listener) // cps is sorted by listener
		}
	}
	keys := make([]*datastore.Key, len(ids))
	ls := make([]listenerEnt, len(ids))
	ents := make([]any, len(ids))
	for i, id := range ids {
		keys[i], ents[i] = s.listenerKey(id), &ls[i]
	}
	found, err := txLookup(tx, keys, ents)
	if err != nil {
		return nil, err
	}
	created := make(map[string]int64, len(ids))
	for i, id := range ids {
		if found[i] {
			created[id] = ls[i].Created
		}
	}
	return created, nil
}

// Checkpoint saves subscribers' cursors and leases. Each chunk of at most
// Config.MaxMutations subscribers is one transaction that reads them and
// writes those that moved; a Checkpoint of more is several transactions,
// each subscriber's change atomic on its own.
func (s *Store) Checkpoint(ctx context.Context, cps []moitessier.Checkpoint) error {
	const op = "checkpoint"
	if err := s.check(op); err != nil {
		return err
	}
	if len(cps) == 0 {
		return nil
	}
	all := checkpoints.Merge(cps)
	for i := 0; i < len(all); i += s.cfg.MaxMutations {
		chunk := all[i:min(len(all), i+s.cfg.MaxMutations)]
		keys := make([]*datastore.Key, len(chunk))
		for k, c := range chunk {
			keys[k] = s.subKey(c.Listener, c.Person, c.Client)
		}
		err := s.runTx(ctx, op, func(tx *datastore.Transaction) error {
			subs := make([]subEnt, len(chunk))
			ents := make([]any, len(chunk))
			for k := range subs {
				ents[k] = &subs[k]
			}
			found, err := txLookup(tx, keys, ents)
			if err != nil {
				return err
			}
			created, err := s.incarnations(tx, chunk)
			if err != nil {
				return err
			}
			var (
				pk []*datastore.Key
				pv []*subEnt
			)
			// Checkpoints of one subscriber (of incarnations named and
			// not) change one copy of it, written once.
			type subscriber struct{ l, p, c string }
			copyOf := make(map[subscriber]int, len(chunk)) // index in subs
			put := make(map[int]bool, len(chunk))
			for k, c := range chunk {
				if !found[k] {
					continue // the subscriber no longer exists
				}
				if !c.Created.IsZero() && created[c.Listener] != toNS(c.Created) {
					continue // another incarnation of the listener
				}
				i, ok := copyOf[subscriber{c.Listener, c.Person, c.Client}]
				if !ok {
					i = k
					copyOf[subscriber{c.Listener, c.Person, c.Client}] = k
				}
				se := &subs[i]
				changed := false
				if cur := toSeq(c.Cursor); cur > se.Cursor {
					se.Cursor, changed = cur, true
				}
				if !c.LeaseExpires.IsZero() && toNS(c.LeaseExpires) != se.Lease {
					se.Lease, changed = toNS(c.LeaseExpires), true
				}
				if changed && !put[i] {
					put[i] = true
					pk, pv = append(pk, keys[i]), append(pv, se)
				}
			}
			if len(pk) == 0 {
				return errRollback
			}
			_, err = tx.PutMulti(pk, pv)
			return err
		})
		if err != nil && !errors.Is(err, errRollback) {
			return s.wrap(op, err)
		}
	}
	return nil
}
