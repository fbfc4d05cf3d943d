package clouddatastore

import (
	"context"
	"slices"

	"cloud.google.com/go/datastore"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/internal/scopeindex"
)

// matchStamp is the state a Match answer was read at: the namespace's
// pattern version and the scope's version (0: no listener hears it).
type matchStamp struct{ patterns, scope int64 }

type matchEntry struct {
	ls    []moitessier.ListenerInfo
	stamp matchStamp
}

// Match returns every listener one of whose scopes matches scope.
//
// Concrete scopes are found by an equality query on the listeners' indexed
// Scopes. Wildcard patterns are matched in Go against this process's index
// of every pattern, checked against the namespace's pattern version, which
// every creation or deletion of a pattern listener changes in its
// transaction: Match reads the version first and reloads the index if it
// changed, so a listener created by any process before Match began is
// always found. The answer is kept for MatchCached.
func (s *Store) Match(ctx context.Context, scope string) ([]moitessier.ListenerInfo, error) {
	e, err := s.match(ctx, scope)
	return e.ls, err
}

// MatchCached is Match answered from this process's cache of recent
// answers when it has one for scope; see moitessier.MatchCacher. The stamp
// holds the pattern version and the scope's version the answer was read
// at; Append reads both in its transaction and fails with ErrStale, writing
// nothing, if either changed.
func (s *Store) MatchCached(ctx context.Context, scope string) ([]moitessier.ListenerInfo, any, error) {
	if err := s.check("match"); err != nil {
		return nil, nil, err
	}
	if e, ok := s.mc.Get(scope); ok {
		return e.ls, e.stamp, nil
	}
	e, err := s.match(ctx, scope)
	if err != nil {
		return nil, nil, err
	}
	return e.ls, e.stamp, nil
}

// match reads the versions, the listeners the pattern index names and the
// listeners that hear scope itself, and caches the answer. The versions are
// read before the listeners, so the stamp is never newer than the answer.
func (s *Store) match(ctx context.Context, scope string) (matchEntry, error) {
	const op = "match"
	if err := s.check(op); err != nil {
		return matchEntry{}, err
	}
	var (
		st    matchStamp
		byPat []listenerEnt
		pids  []string
	)
	for attempt := 0; ; attempt++ {
		ids, cached := s.pat.Match(scope)
		keys := make([]*datastore.Key, 0, 2+len(ids))
		keys = append(keys, s.metaKey(), s.scopeKey(scope))
		for _, id := range ids {
			keys = append(keys, s.listenerKey(id))
		}
		var (
			meta metaEnt
			sc   scopeEnt
		)
		ls := make([]listenerEnt, len(ids))
		ents := make([]any, len(keys))
		ents[0], ents[1] = &meta, &sc
		for i := range ls {
			ents[2+i] = &ls[i]
		}
		found, err := s.lookup(ctx, keys, ents)
		if err != nil {
			return matchEntry{}, s.wrap(op, err)
		}
		// The stamp names the pattern index the answer came from.
		st = matchStamp{patterns: cached, scope: 0}
		if found[1] {
			st.scope = sc.Version
		}
		if meta.Patterns != cached && attempt == 0 {
			if err := s.reloadPatterns(ctx, meta.Patterns); err != nil {
				return matchEntry{}, s.wrap(op, err)
			}
			continue
		}
		byPat, pids = byPat[:0], pids[:0]
		for i, id := range ids {
			if found[2+i] {
				byPat = append(byPat, ls[i])
				pids = append(pids, id)
			}
		}
		break
	}
	var ents []listenerEnt
	keys, err := s.getAll(ctx, datastore.NewQuery(kindListener).Namespace(s.ns).FilterField("Scopes", "=", scope), &ents)
	if err != nil {
		return matchEntry{}, s.wrap(op, err)
	}
	out := make([]moitessier.ListenerInfo, 0, len(keys)+len(pids))
	seen := make(map[string]bool, len(keys))
	for i, k := range keys {
		id := listenerID(k)
		seen[id] = true
		out = append(out, ents[i].info(id))
	}
	for i, id := range pids {
		if !seen[id] {
			out = append(out, byPat[i].info(id))
		}
	}
	e := matchEntry{ls: out, stamp: st}
	s.mc.Put(scope, matchEntry{ls: slices.Clone(out), stamp: st})
	return e, nil
}

// lookup reads keys into the pointers ents outside a transaction,
// reporting which exist; at most 1000 keys per call.
func (s *Store) lookup(ctx context.Context, keys []*datastore.Key, ents []any) ([]bool, error) {
	found := make([]bool, len(keys))
	for i := 0; i < len(keys); i += 1000 {
		j := min(len(keys), i+1000)
		var f []bool
		err := s.retry(ctx, "lookup", func() error {
			var err error
			f, err = getInto(func(k []*datastore.Key, d []any) error { return s.client.GetMulti(ctx, k, d) }, keys[i:j], ents[i:j])
			return err
		})
		if err != nil {
			return nil, err
		}
		copy(found[i:j], f)
	}
	return found, nil
}

// txLookup is lookup inside tx.
func txLookup(tx *datastore.Transaction, keys []*datastore.Key, ents []any) ([]bool, error) {
	found := make([]bool, len(keys))
	for i := 0; i < len(keys); i += 1000 {
		j := min(len(keys), i+1000)
		f, err := getInto(func(k []*datastore.Key, d []any) error { return tx.GetMulti(k, d) }, keys[i:j], ents[i:j])
		if err != nil {
			return nil, err
		}
		copy(found[i:j], f)
	}
	return found, nil
}

// reloadPatterns reloads the pattern index unless it is at version v
// already. The version is read before the query, so the index holds at
// least every pattern of version v.
func (s *Store) reloadPatterns(ctx context.Context, v int64) error {
	cur := s.pat.Version()
	if cur == v {
		return nil
	}
	var ents []listenerEnt
	keys, err := s.getAll(ctx, datastore.NewQuery(kindListener).Namespace(s.ns).FilterField("Wild", "=", true), &ents)
	if err != nil {
		return err
	}
	idx := scopeindex.New()
	for i, k := range keys {
		var ps []string
		for _, p := range ents[i].Scopes {
			if moitessier.IsPattern(p) {
				ps = append(ps, p)
			}
		}
		idx.Add(listenerID(k), ps)
	}
	s.pat.Set(idx, v, false)
	return nil
}
