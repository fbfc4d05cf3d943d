// Package countstore wraps a moitessier.Store to count the calls a hub makes
// to it: the benchmarks' measure of how many queries waiting costs.
package countstore

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/likestripes/moitessier"
)

// Wrap returns a store that forwards to s (keeping its Watcher, with its
// HeadComparer, and its MatchAppender, if it has them, and its
// IncarnationReader and IncarnationLeaver) and a counter of the calls made
// to it.
func Wrap(s moitessier.Store) (moitessier.Store, *atomic.Int64) {
	c := &counting{Store: s}
	w, watches := s.(moitessier.Watcher)
	a, appends := s.(moitessier.MatchAppender)
	switch {
	case watches && appends:
		return countingWatcherAppender{countingWatcher{c, w}, appending{c, a}}, &c.calls
	case watches:
		return countingWatcher{c, w}, &c.calls
	case appends:
		return countingAppender{c, appending{c, a}}, &c.calls
	}
	return c, &c.calls
}

// appending forwards MatchAppend, counting one call when it appended (a
// match it answered from its cache, or a miss that only matched, is not
// counted, as MatchCached is not).
type appending struct {
	c *counting
	a moitessier.MatchAppender
}

func (x appending) MatchAppend(ctx context.Context, b *moitessier.Batch, text string, sel moitessier.Selection) ([]moitessier.ListenerInfo, moitessier.MatchStamp, []moitessier.Message, bool, error) {
	ls, st, msgs, appended, err := x.a.MatchAppend(ctx, b, text, sel)
	if appended {
		x.c.calls.Add(1)
	}
	return ls, st, msgs, appended, err
}

type countingAppender struct {
	*counting
	appending
}

type countingWatcherAppender struct {
	countingWatcher
	appending
}

// counting counts the calls a hub makes to its store.
type counting struct {
	moitessier.Store
	calls atomic.Int64
}

func (c *counting) Join(ctx context.Context, l moitessier.ListenerInfo, s moitessier.Subscriber, q moitessier.Quota) (moitessier.ListenerInfo, moitessier.Subscriber, bool, error) {
	c.calls.Add(1)
	return c.Store.Join(ctx, l, s, q)
}
func (c *counting) Listener(ctx context.Context, id string) (moitessier.ListenerInfo, error) {
	c.calls.Add(1)
	return c.Store.Listener(ctx, id)
}
func (c *counting) Subscribers(ctx context.Context, id string, r moitessier.SubscriberRange) ([]moitessier.Subscriber, error) {
	c.calls.Add(1)
	return c.Store.Subscribers(ctx, id, r)
}
func (c *counting) Leave(ctx context.Context, id, p, cl string) (bool, error) {
	c.calls.Add(1)
	return c.Store.Leave(ctx, id, p, cl)
}
func (c *counting) Match(ctx context.Context, scope string) ([]moitessier.ListenerInfo, error) {
	c.calls.Add(1)
	return c.Store.Match(ctx, scope)
}

// MatchCached forwards to the store's MatchCached, uncounted (the store
// answers it from memory but on a miss), or, if the store has none, counts
// a call to Match and returns its answer with no stamp, as the hub would
// have called it.
func (c *counting) MatchCached(ctx context.Context, scope string) ([]moitessier.ListenerInfo, moitessier.MatchStamp, error) {
	if mc, ok := c.Store.(moitessier.MatchCacher); ok {
		return mc.MatchCached(ctx, scope)
	}
	c.calls.Add(1)
	ls, err := c.Store.Match(ctx, scope)
	return ls, nil, err
}

func (c *counting) Append(ctx context.Context, bt *moitessier.Batch) ([]moitessier.Message, bool, error) {
	c.calls.Add(1)
	return c.Store.Append(ctx, bt)
}
func (c *counting) Read(ctx context.Context, id string, after moitessier.Cursor, limit int) ([]moitessier.Message, error) {
	c.calls.Add(1)
	return c.Store.Read(ctx, id, after, limit)
}

// ReadOf forwards to the store's IncarnationReader (every store of this
// module has one), or to Read.
func (c *counting) ReadOf(ctx context.Context, id string, created time.Time, after moitessier.Cursor, limit int) ([]moitessier.Message, error) {
	c.calls.Add(1)
	if r, ok := c.Store.(moitessier.IncarnationReader); ok {
		return r.ReadOf(ctx, id, created, after, limit)
	}
	return c.Store.Read(ctx, id, after, limit)
}

// LeaveOf forwards to the store's IncarnationLeaver (every store of this
// module has one), or reads the listener and then leaves, as a hub does
// with a store without one (two calls, counted).
func (c *counting) LeaveOf(ctx context.Context, id string, created time.Time, p, cl string) (bool, error) {
	if l, ok := c.Store.(moitessier.IncarnationLeaver); ok {
		c.calls.Add(1)
		return l.LeaveOf(ctx, id, created, p, cl)
	}
	info, err := c.Listener(ctx, id)
	if err != nil {
		return false, err
	}
	if !info.Created.Equal(created) {
		return false, fmt.Errorf("countstore: leave %s: %w: no listener of that incarnation", id, moitessier.ErrNotFound)
	}
	return c.Leave(ctx, id, p, cl)
}
func (c *counting) Seek(ctx context.Context, id string, t time.Time) (moitessier.Cursor, error) {
	c.calls.Add(1)
	return c.Store.Seek(ctx, id, t)
}
func (c *counting) Checkpoint(ctx context.Context, cps []moitessier.Checkpoint) error {
	c.calls.Add(1)
	return c.Store.Checkpoint(ctx, cps)
}
func (c *counting) Sweep(ctx context.Context, p moitessier.SweepParams) (moitessier.SweepResult, error) {
	c.calls.Add(1)
	return c.Store.Sweep(ctx, p)
}

type countingWatcher struct {
	*counting
	w moitessier.Watcher
}

func (c countingWatcher) Watch(ctx context.Context, fn func([]moitessier.Head)) error {
	return c.w.Watch(ctx, fn)
}

func (c countingWatcher) Heads(ctx context.Context, ids []string) ([]moitessier.Head, error) {
	c.calls.Add(1)
	return c.w.Heads(ctx, ids)
}

// ChangedHeads forwards to the store's HeadComparer, or works its answer
// out from the store's Heads (see moitessier.CompareHeads): one call.
func (c countingWatcher) ChangedHeads(ctx context.Context, known []moitessier.Head) ([]moitessier.Head, []string, error) {
	c.calls.Add(1)
	return moitessier.CompareHeads(ctx, c.w, known)
}
