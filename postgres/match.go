package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/internal/scopeindex"
)

// Match returns every listener one of whose scopes matches scope.
//
// Concrete scopes are looked up in the listener_scopes index. Wildcard
// patterns are matched in Go against a cached index of all patterns; the
// query also returns the schema's pattern version, which every creation or
// deletion of a pattern listener raises in its transaction. If the version
// differs from the cache's, the cache is reloaded and the query repeated, so
// a listener created by any process before Match began is always found.
// The answer is kept for MatchCached.
func (s *Store) Match(ctx context.Context, scope string) ([]moitessier.ListenerInfo, error) {
	ls, _, err := s.match(ctx, scope)
	return ls, err
}

// MatchCached is Match answered from this process's cache of recent
// answers, when it has one for scope; see moitessier.MatchCacher. The
// stamp is the pattern version and the scope's version (a random number
// written by each creation or deletion of a listener on it) the answer was
// read at; Append checks both in its statement, so a cached answer costs no
// round trip and nothing is stored from one that is out of date. A closed
// store answers ErrClosed, as every method does, even with an answer
// cached.
func (s *Store) MatchCached(ctx context.Context, scope string) ([]moitessier.ListenerInfo, moitessier.MatchStamp, error) {
	if err := s.check("match"); err != nil {
		return nil, nil, err
	}
	if e, ok := s.mc.Get(scope); ok {
		return e.ls, e.stamp, nil
	}
	ls, st, err := s.match(ctx, scope)
	if err != nil || st == nil {
		return ls, nil, err
	}
	return ls, *st, nil
}

// match runs the Match query and caches the answer if it is complete at
// its stamp.
func (s *Store) match(ctx context.Context, scope string) ([]moitessier.ListenerInfo, *matchStamp, error) {
	const op = "match"
	if err := s.check(op); err != nil {
		return nil, nil, err
	}
	ids, cached := s.pat.Match(scope)
	ls, st, err := s.matchQuery(ctx, scope, ids)
	if err != nil {
		return nil, nil, s.wrap(op, err)
	}
	if st.patterns != cached {
		// Reload: the index then holds every pattern committed before
		// this call began, so the second answer is complete.
		if err := s.reloadPatterns(ctx, st.patterns); err != nil {
			return nil, nil, s.wrap(op, err)
		}
		ids, cached = s.pat.Match(scope)
		ls, st, err = s.matchQuery(ctx, scope, ids)
		if err != nil {
			return nil, nil, s.wrap(op, err)
		}
	}
	if st.patterns != cached {
		// A pattern listener was created between the reload and the
		// query: the answer is complete for a Match, which may miss a
		// listener created after it began, but not at its stamp.
		return ls, nil, nil
	}
	s.mc.Put(scope, matchEntry{ls: slices.Clone(ls), stamp: st})
	return ls, &st, nil
}

func (s *Store) matchQuery(ctx context.Context, scope string, ids []string) ([]moitessier.ListenerInfo, matchStamp, error) {
	var st matchStamp
	if ids == nil {
		ids = []string{}
	}
	rows, err := s.pool.Query(ctx, s.q.match, scope, ids)
	if err != nil {
		return nil, st, err
	}
	defer rows.Close()
	var ls []moitessier.ListenerInfo
	for rows.Next() {
		var (
			id, person, client *string
			typ                *int
			scopes             []string
			created, head      *int64
		)
		if err := rows.Scan(&st.patterns, &st.scope, &id, &typ, &person, &client, &scopes, &created, &head); err != nil {
			return nil, st, err
		}
		if id == nil {
			continue
		}
		ls = append(ls, moitessier.ListenerInfo{ID: *id, Type: moitessier.ListenerType(*typ), Person: *person, Client: *client, Scopes: scopes, Created: fromNS(*created), Head: moitessier.Cursor(*head)})
	}
	return ls, st, rows.Err()
}

// matchStamp is the state a Match answer was read at: the schema's pattern
// version and the scope's version.
type matchStamp struct{ patterns, scope int64 }

type matchEntry struct {
	ls    []moitessier.ListenerInfo
	stamp matchStamp
}

// maxSeeded bounds the cached Match answers seed adds a listener to: those
// of fewer listeners. It copies the answer, so that the joins of n
// listeners of one scope would otherwise copy n²/2 of them.
const maxSeeded = 64

// seed brings this process's cached Match answers of the scopes of l, a
// listener a join just created with the tag tag, up to date with that join
// (see migration 10: it changed each concrete scope's version by an
// exclusive or with tag). A scope with an answer gets it with l added, at
// its version changed so (one of maxSeeded listeners or more, or one that
// already holds a listener of l's ID, is dropped instead). A scope without
// gets l alone, at version tag, as if no listener had it (version 0), if
// no pattern of the process's index matches it, and if the cache has
// room: a seed drops no answer a dispatch read. These are
// guesses, right when no other change came to the scope in between (from
// another process, say): every dispatch from a cached answer checks its
// stamp, and one out of date costs that dispatch a Match. A listener with a
// pattern changes the pattern version, and so every answer's stamp: its join
// drops them all, and nothing is seeded until the process's index of
// patterns is reloaded (by the next Match). An index never loaded is loaded
// here, once, so that the joins before a process's first dispatch seed too.
func (s *Store) seed(ctx context.Context, l moitessier.ListenerInfo, tag int64) {
	for _, scope := range l.Scopes {
		if moitessier.IsPattern(scope) {
			s.patternsChanged()
			return
		}
	}
	if s.pat.Version() < 0 {
		_ = s.reloadPatterns(ctx, 0) // on failure, no scope is seeded
	}
	if s.pat.Version() <= s.patternMade.Load() {
		return
	}
	for _, scope := range l.Scopes {
		if e, ok := s.mc.Get(scope); ok {
			if len(e.ls) >= maxSeeded {
				s.mc.Drop(scope) // out of date, and too long to copy at every join
				continue
			}
			if slices.ContainsFunc(e.ls, func(x moitessier.ListenerInfo) bool { return x.ID == l.ID }) {
				// An earlier creation of l, whose deletion this answer
				// has not seen (its unseed, if this process deleted it,
				// may be yet to come), or l itself, read by a Match
				// after the join: either way out of date.
				s.mc.Drop(scope)
				continue
			}
			ls := make([]moitessier.ListenerInfo, len(e.ls), len(e.ls)+1)
			copy(ls, e.ls)
			s.mc.Put(scope, matchEntry{ls: append(ls, l), stamp: matchStamp{patterns: e.stamp.patterns, scope: e.stamp.scope ^ tag}})
			continue
		}
		if ids, pv := s.pat.Match(scope); pv >= 0 && len(ids) == 0 {
			s.mc.PutIfRoom(scope, matchEntry{ls: []moitessier.ListenerInfo{l}, stamp: matchStamp{patterns: pv, scope: tag}})
		}
	}
}

// patternsChanged is called when this process created or deleted a
// listener with a pattern, which changed the pattern version and so every
// cached answer's stamp: it drops them all, and stops seed until the
// index of patterns is reloaded past its version now.
func (s *Store) patternsChanged() {
	s.patternMade.Store(s.pat.Version())
	s.mc.DropAll()
}

// unseed brings this process's cached Match answers of the scopes of l up
// to date with l's deletion, which this process just committed, as seed
// does with a creation: the deletion of l's rows changed each concrete
// scope's version by an exclusive or with l's tag (migration 10). An
// answer that holds l, the same creation of it (l.Created: a listener
// deleted and made again keeps its ID, and a join in this process may
// have seeded the new one first), gets it taken out, at its version
// changed so. One that does not hold it is out of date, and is dropped, as
// are those of a listener without a tag (0: made by an older version of
// this package, its deletion set random versions), an answer left with no
// listener (a dispatch would check it with a Match anyway), and one of
// maxSeeded listeners or more (too long to copy at every deletion). A
// listener with a pattern: see patternsChanged. Like seed, these are
// guesses, which every dispatch checks by the stamp.
func (s *Store) unseed(l moitessier.ListenerInfo, tag int64, wild bool) {
	if wild {
		s.patternsChanged()
		return
	}
	for _, scope := range l.Scopes {
		e, ok := s.mc.Get(scope)
		if !ok {
			continue
		}
		i := slices.IndexFunc(e.ls, func(x moitessier.ListenerInfo) bool { return x.ID == l.ID && x.Created.Equal(l.Created) })
		if tag == 0 || i < 0 || len(e.ls) == 1 || len(e.ls) >= maxSeeded {
			s.mc.Drop(scope)
			continue
		}
		ls := slices.Delete(slices.Clone(e.ls), i, i+1)
		s.mc.Put(scope, matchEntry{ls: ls, stamp: matchStamp{patterns: e.stamp.patterns, scope: e.stamp.scope ^ tag}})
	}
}

// reloadPatterns reloads the pattern cache unless it is at least at version
// atLeast already.
func (s *Store) reloadPatterns(ctx context.Context, atLeast int64) error {
	cur := s.pat.Version()
	if cur >= atLeast {
		return nil
	}
	rows, err := s.pool.Query(ctx, s.q.loadPatterns)
	if err != nil {
		return err
	}
	defer rows.Close()
	var (
		version int64
		byID    = map[string][]string{}
	)
	for rows.Next() {
		var id, pattern *string
		if err := rows.Scan(&version, &id, &pattern); err != nil {
			return err
		}
		if id != nil {
			byID[*id] = append(byID[*id], *pattern)
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	idx := scopeindex.New()
	for id, ps := range byID {
		idx.Add(id, ps)
	}
	s.pat.Set(idx, version, true)
	return nil
}

// MatchAppend is MatchCached that, on a scope it has no answer for,
// matches and appends in one statement, one round trip; see
// moitessier.MatchAppender. Its answer is cached as Match's is. If the
// pattern index is out of date, or a Handler listener matched a dispatch
// with handlers, nothing is appended: it then answers as MatchCached does
// (reloading the index for the first). A closed store answers ErrClosed,
// even with an answer cached. When the statement's outcome is unknown
// (the caller gave up while it ran), the heads of the listeners it may
// have written to are notified (see notifyScopeLater): the hub will not
// publish what it wrote, and its own Watch may not have heard of it.
func (s *Store) MatchAppend(ctx context.Context, b *moitessier.Batch, text string, sel moitessier.Selection) ([]moitessier.ListenerInfo, moitessier.MatchStamp, []moitessier.Message, bool, error) {
	const op = "match and append"
	if err := s.check(op); err != nil {
		return nil, nil, nil, false, err
	}
	if e, ok := s.mc.Get(b.Scope); ok {
		return e.ls, e.stamp, nil, false, nil
	}
	ids, version := s.pat.Match(b.Scope)
	if ids == nil {
		ids = []string{}
	}
	to := sel.To
	if to == nil {
		to = []string{}
	}
	var (
		ls   []moitessier.ListenerInfo
		msgs []moitessier.Message
		st   matchStamp
		ok   bool
		self string // of the last statement sent
	)
	// single: the dispatch takes every listener of the scope but other
	// persons' Private ones, and no pattern listener matches it, so
	// matchAppendSingle can try first.
	single := len(ids) == 0 && len(to) == 0 && !sel.Addressed && !sel.Handlers
	bctx, cancel := s.cmb.bound(ctx)
	defer cancel()
	err := retry(bctx, func() error {
		return s.onConn(bctx, func(q queryer) error {
			self = s.watchers.selfFor(ctx)
			// send sends one of the two statements and reads its rows.
			send := func(sql string, args ...any) error {
				rows, err := q.Query(bctx, sql, args...)
				if err != nil {
					return err
				}
				var sent bool
				ls, msgs, st, ok, sent, err = scanMatchAppend(rows, b, text)
				if err == nil && len(msgs) > 0 {
					s.watchers.saw(self, sent)
				}
				return err
			}
			if single {
				err := send(s.q.matchAppendSingle, b.Scope, version, b.Sender,
					int(moitessier.Private), []byte(text), b.Dispatch, toNS(b.Created), s.channel, self)
				if err != nil || !ok || len(ls) < 2 {
					return err
				}
				// The scope has several listeners: nothing was written.
			}
			err := send(s.q.matchAppend, b.Scope, ids, version, b.Sender, to, sel.Addressed, sel.Handlers,
				int(moitessier.Private), int(moitessier.Handler), []byte(text), b.Dispatch, toNS(b.Created), s.channel, s.cfg.NotifyBatch, self)
			return err
		})
	})
	if err = outcome(err); err != nil {
		if isWatch(self) && errors.Is(err, moitessier.ErrOutcomeUnknown) {
			s.notifyScopeLater(b.Scope, ids)
		}
		return nil, nil, nil, false, s.wrap(op, fmt.Errorf("dispatch %s to %q: %w", b.Dispatch, b.Scope, err))
	}
	if st.patterns != version {
		// The index missed a pattern listener: nothing was written.
		// Match reloads it.
		ls, st, err := s.match(ctx, b.Scope)
		if err != nil || st == nil {
			return ls, nil, nil, false, err
		}
		return ls, *st, nil, false, nil
	}
	s.mc.Put(b.Scope, matchEntry{ls: slices.Clone(ls), stamp: st})
	return ls, st, msgs, ok, nil
}

// scanMatchAppend reads the rows of the matchAppend statement: the matched
// listeners, the messages written for b, the versions read, whether it
// appended, and whether it sent a NOTIFY.
func scanMatchAppend(rows pgx.Rows, b *moitessier.Batch, text string) ([]moitessier.ListenerInfo, []moitessier.Message, matchStamp, bool, bool, error) {
	defer rows.Close()
	var (
		ls   []moitessier.ListenerInfo
		msgs []moitessier.Message
		st   matchStamp
		ok   bool
		sent bool // a NOTIFY was sent (a payload on every row)
	)
	for rows.Next() {
		var (
			id, person, client *string
			typ                *int
			scopes             []string
			created, head, seq *int64
			notified           int64
		)
		if err := rows.Scan(&st.patterns, &st.scope, &ok, &id, &typ, &person, &client, &scopes, &created, &head, &seq, &notified); err != nil {
			return nil, nil, st, false, false, err
		}
		sent = notified > 0
		if id == nil {
			continue
		}
		ls = append(ls, moitessier.ListenerInfo{ID: *id, Type: moitessier.ListenerType(*typ), Person: *person, Client: *client, Scopes: scopes, Created: fromNS(*created), Head: moitessier.Cursor(*head)})
		if seq != nil {
			msgs = append(msgs, moitessier.Message{
				Listener: *id, Seq: moitessier.Cursor(*seq), Dispatch: b.Dispatch,
				Scope: b.Scope, Sender: b.Sender, Text: text, Created: b.Created,
			})
		}
	}
	return ls, msgs, st, ok, sent, rows.Err()
}
