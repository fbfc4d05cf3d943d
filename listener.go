package moitessier

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/likestripes/moitessier/internal/cursors"
	"github.com/likestripes/moitessier/internal/live"
)

// CheckFunc is called by ListenUntil every interval: is the client still
// there? An error ends ListenUntil, which returns it.
type CheckFunc func(ctx context.Context) error

// RespondFunc receives new messages in ListenUntil, in sequence order, as
// soon as they are stored (e.g. to write them to a websocket). The slice is
// shared with other subscribers: read it, do not modify it. Returning nil
// acknowledges the messages (the subscriber's server-held cursor moves past
// them); returning [AckLater] takes them without acknowledging them, for a
// caller that acknowledges later with [Listener.AckDelivered], on evidence
// that its client received them; any other error ends ListenUntil without
// acknowledging them.
type RespondFunc func(ctx context.Context, msgs []Message) error

// AckLater is returned by a [RespondFunc] that took the messages but does
// not acknowledge them yet: ListenUntil goes on after them, and the
// subscriber's server-held cursor stays where it was until the caller calls
// [Listener.AckDelivered] (or [Listener.Ack]). It is not an error: it is
// never returned by ListenUntil.
//
// Writing to a socket is no proof that the client received what was
// written (the connection may be dying), so transports that want a client
// that comes back without a cursor to miss nothing acknowledge on evidence
// instead: an acknowledgement from the client, or from its TCP stack.
//
//lint:ignore ST1012 AckLater is a signal, not a failure; its name is part of the API.
var AckLater = errors.New("moitessier: acknowledge later")

// Listener is one subscriber's handle on a listener, returned by
// Hub.NewListener or Hub.Open. It is safe for concurrent use.
type Listener struct {
	hub            *Hub
	info           ListenerInfo
	person, client string
	lease          time.Duration

	closeMu sync.Mutex // serialises Close
	done    chan struct{}

	// alarms are the running ListenUntil calls' alarms, which Close
	// rings once done is closed.
	alarmsMu sync.Mutex
	alarms   []*alarm
}

// ID returns the listener's ID.
func (l *Listener) ID() string { return l.info.ID }

// Info returns the listener's description as of when the handle was made.
func (l *Listener) Info() ListenerInfo { return l.info }

// Subscriber returns the person and client this handle acts for.
func (l *Listener) Subscriber() (person, client string) { return l.person, l.client }

// subKey names this handle's subscriber on the incarnation of the listener
// created at created, for the cursor tracker.
func (l *Listener) subKey(created time.Time) cursors.Key {
	return cursors.Key{Listener: l.info.ID, Person: l.person, Client: l.client, Created: created.UnixNano()}
}

func (l *Listener) checkOpen(op string) error {
	select {
	case <-l.done:
		return fmt.Errorf("%s %s: %w", op, l.info.ID, ErrClosed)
	default:
	}
	return l.hub.checkOpen(op)
}

// join subscribes for NewListener and Open: it renews the subscriber's
// lease, returning the stored listener and subscriber, and creates the
// listener if it is missing and create is set (NewListener). For Open,
// which found the listener, a listener deleted since is not created again
// (under the Created of the incarnation that was deleted): join undoes
// what Join created and returns ErrNotFound. A subscriber it creates
// starts at start.
func (l *Listener) join(ctx context.Context, now time.Time, start Start, create bool) (ListenerInfo, Subscriber, error) {
	h := l.hub
	from, err := l.startCursor(ctx, start)
	if err != nil {
		return ListenerInfo{}, Subscriber{}, err
	}
	sub := Subscriber{Person: l.person, Client: l.client, Cursor: from, Joined: now, LeaseExpires: now.Add(l.lease)}
	info, stored, created, err := h.store.Join(ctx, l.info, sub, h.joinQuota(l.info.Person, l.person))
	if err != nil {
		return info, stored, err
	}
	if created && !create {
		l.undoCreate(ctx)
		return info, stored, fmt.Errorf("%w: the listener was deleted", ErrNotFound)
	}
	if created && h.opts.Hooks.Created != nil {
		h.opts.Hooks.Created(ctx, info)
	}
	return info, stored, nil
}

// startCursor returns the cursor that Store.Join gives a subscriber it
// creates for start: Resume (the listener's head), 0, or the position
// before the first message created at or after start's time.
func (l *Listener) startCursor(ctx context.Context, start Start) (Cursor, error) {
	switch {
	case start.oldest:
		return 0, nil
	case start.since.IsZero():
		return Resume, nil
	}
	c, err := l.hub.store.Seek(ctx, l.info.ID, start.since)
	switch {
	case errors.Is(err, ErrNotFound):
		return Resume, nil // no listener yet: it has no history
	case err != nil:
		return 0, fmt.Errorf("start %s: %w", start, err)
	}
	return c, nil
}

// current returns the stored listener if it is still the one this handle
// was made for, and an error wrapping ErrClosed if it was deleted, or
// deleted and created again under the same ID (another incarnation, with
// another Created time).
func (l *Listener) current(ctx context.Context, op string) (ListenerInfo, error) {
	info, err := l.hub.store.Listener(ctx, l.info.ID)
	switch {
	case errors.Is(err, ErrNotFound):
		return info, l.deletedErr(op)
	case err != nil:
		return info, fmt.Errorf("%s %s: %w", op, l.info.ID, err)
	case !info.Created.Equal(l.info.Created):
		return info, l.deletedErr(op)
	}
	return info, nil
}

func (l *Listener) deletedErr(op string) error {
	return fmt.Errorf("%s %s: %w: the listener was deleted", op, l.info.ID, ErrClosed)
}

// subscribed returns ErrNotFound if this handle's subscriber is not in the
// store.
func (l *Listener) subscribed(ctx context.Context, op string) error {
	subs, err := l.hub.store.Subscribers(ctx, l.info.ID, SubscriberRange{Person: l.person, Client: l.client, Limit: 1})
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, l.info.ID, err)
	}
	if len(subs) == 0 || subs[0].Person != l.person || subs[0].Client != l.client {
		return fmt.Errorf("%s %s: subscriber %q: %w", op, l.info.ID, l.person, ErrNotFound)
	}
	return nil
}

// undoCreate removes the subscriber, and so the listener, that a Join meant
// to join an existing listener created because it had been deleted.
func (l *Listener) undoCreate(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err := l.hub.store.Leave(ctx, l.info.ID, l.person, l.client); err != nil {
		l.hub.log.Warn("moitessier: undo the join of a deleted listener", "listener", l.info.ID, "err", err)
	}
}

// rejoin renews this subscriber's lease on the handle's own listener, for
// ListenUntil and Messages(Resume), and returns the stored listener and
// subscriber. It never creates the listener: if it was deleted it returns
// ErrClosed having written nothing. check, if not nil, sees the stored
// listener before anything is written; its error is returned as is.
func (l *Listener) rejoin(ctx context.Context, op string, now time.Time, check func(ListenerInfo) error) (ListenerInfo, Subscriber, error) {
	h := l.hub
	info, err := l.current(ctx, op)
	if err != nil {
		return info, Subscriber{}, err
	}
	if check != nil {
		if err := check(info); err != nil {
			return info, Subscriber{}, err
		}
	}
	sub := Subscriber{Person: l.person, Client: l.client, Cursor: Resume, Joined: now, LeaseExpires: now.Add(l.lease)}
	li := l.info
	li.Head = 0 // the handle's copy is old; a listener Join creates starts empty
	info, stored, created, err := h.store.Join(ctx, li, sub, h.joinQuota(li.Person, l.person))
	if err != nil {
		return info, stored, fmt.Errorf("%s %s: %w", op, l.info.ID, err)
	}
	if created {
		// Deleted between the two calls, and so created again by Join:
		// undo that, and announce nothing.
		l.undoCreate(ctx)
		return info, stored, l.deletedErr(op)
	}
	if !info.Created.Equal(l.info.Created) {
		return info, stored, l.deletedErr(op)
	}
	return info, stored, nil
}

// ListenUntil hands the messages after since to respond as soon as they are
// stored, until timeout (0: none) passes, ctx is done, check returns an
// error, or respond does. since is a cursor from an earlier call or message,
// 0 for the beginning of what is kept, or [Resume] for where this subscriber
// left off: the newer of its saved position and what ListenUntil calls of
// the same subscriber running in this hub acknowledged, so that a second
// call in one hub repeats nothing. check (may be nil) runs every interval
// (0: never). A since past the listener's newest message fails with
// ErrInvalidArgument before anything is written (the lease stays as it
// was).
//
// Waiting costs no store queries: the hub wakes waiting subscribers when a
// dispatch stores a message. Each message is delivered once, in order, with
// no gaps; messages stored while respond runs come in the next call.
// Acknowledged positions are saved within Options.AckInterval, and at once
// when ListenUntil returns.
//
// It returns the cursor after the last message respond accepted (returning
// nil or AckLater), from which a later call resumes with nothing lost or
// repeated, and nil at timeout, ctx.Err(), check's or respond's error, or
// ErrClosed if the handle was closed or its listener deleted (its last
// subscriber left through another handle, or GC expired it). When several
// of these hold as it wakes, a closed handle comes first, then ctx, then
// the timeout and check. A handle never creates its listener again: after
// such a deletion, make a new one with Hub.NewListener.
func (l *Listener) ListenUntil(ctx context.Context, check CheckFunc, respond RespondFunc, since Cursor, interval, timeout time.Duration) (cur Cursor, err error) {
	if respond == nil || interval < 0 || timeout < 0 {
		return since, l.argErr(respond == nil)
	}
	lv, st, cur, err := l.beginApart(ctx, since)
	if err != nil {
		return since, err
	}
	if check == nil {
		interval = 0
	}
	a := l.newAlarm(ctx, interval, timeout)
	defer func() { err = l.end(ctx, lv, st, a, err) }()
	// The shape of this function is kept on purpose: a waiting subscriber
	// parks in the select below with only this frame on its stack (the
	// work is in begin, step, ring and end, which have returned by then),
	// so the runtime shrinks its stack to 4 KiB, most of what an idle
	// subscriber costs (TestWaitingStack holds it to that). Code added to
	// this frame, or a call that stays on the stack while it waits, would
	// double it.
	// The select names two channels: the cache's wake-up, which every
	// local subscriber of the listener shares, and this call's alarm,
	// which ctx, the handle's Close and the timer ring (see alarm). Each
	// select locks every channel it names, and a shared one is locked by
	// every subscriber woken with it: a channel fewer is contention
	// saved. After a delivery the loop looks again at once, and first
	// takes the alarm if it rang (a look that takes no lock while it has
	// not), so that ctx, the deadline and check are still served while
	// messages keep coming.
	for {
		wake, err := l.step(ctx, lv, st, respond, &cur)
		if err != nil {
			return cur, err
		}
		if wake == nil {
			select {
			case <-a.c:
			default:
				continue
			}
		} else {
			select {
			case <-wake:
				continue
			case <-a.c:
			}
		}
		if end, err := l.ring(ctx, a, check); end {
			return cur, err
		}
	}
}

// alarm is one ListenUntil call's own wake-up for what is not a message:
// its ctx done, its handle closed, or its timer due (for check or the
// deadline). Each rings it (a send that never blocks on a channel of one
// slot), and ListenUntil, woken, looks at all three (ring): a ring that
// finds the slot full is taken with the one already there. So a waiting
// subscriber waits on two channels, its cache's and its alarm, rather than
// on four, two of which (ctx's, and the cache's) may be shared with
// thousands of others.
type alarm struct {
	c       chan struct{}
	stopCtx func() bool // stops context.AfterFunc's call; nil: ctx is never done
	w       *waitTimer  // nil: no check and no timeout
}

// newAlarm returns the alarm of a ListenUntil call of l with ctx, interval
// (0: no check) and timeout (0: none), registered with l for Close.
func (l *Listener) newAlarm(ctx context.Context, interval, timeout time.Duration) *alarm {
	a := &alarm{c: make(chan struct{}, 1)}
	if ctx.Done() != nil {
		a.stopCtx = context.AfterFunc(ctx, a.ring)
	}
	if interval > 0 || timeout > 0 {
		a.w = newWaitTimer(interval, timeout, a.ring)
	}
	l.alarmsMu.Lock()
	l.alarms = append(l.alarms, a)
	l.alarmsMu.Unlock()
	// Closed before the alarm was registered: closeDone closes done
	// before it rings the alarms it finds, so one of the two rings it.
	select {
	case <-l.done:
		a.ring()
	default:
	}
	return a
}

// ring wakes the alarm's ListenUntil, if it has not been woken already.
func (a *alarm) ring() {
	select {
	case a.c <- struct{}{}:
	default:
	}
}

// stopAlarm stops what rings a and takes it off l's alarms.
func (l *Listener) stopAlarm(a *alarm) {
	if a.stopCtx != nil {
		a.stopCtx()
	}
	if a.w != nil {
		a.w.t.Stop()
	}
	l.alarmsMu.Lock()
	defer l.alarmsMu.Unlock()
	if i := slices.Index(l.alarms, a); i >= 0 {
		l.alarms = slices.Delete(l.alarms, i, i+1)
	}
}

// closeDone closes l.done and rings the alarms of l's running ListenUntil
// calls, which then return ErrClosed. Close holds closeMu.
func (l *Listener) closeDone() {
	close(l.done)
	l.alarmsMu.Lock()
	defer l.alarmsMu.Unlock()
	for _, a := range l.alarms {
		a.ring()
	}
}

// ring is ListenUntil's answer to its alarm: it reports end with the error
// to return (nil at the deadline) if the handle was closed, ctx is done or
// the deadline passed, or check failed; otherwise it runs check if it is
// due, and ListenUntil goes on.
func (l *Listener) ring(ctx context.Context, a *alarm, check CheckFunc) (end bool, err error) {
	// The handle's Close first: a caller that closed it, and then
	// cancelled ctx, is told of the Close, which it made first.
	select {
	case <-l.done:
		return true, fmt.Errorf("listen %s: %w", l.info.ID, ErrClosed)
	default:
	}
	if err := ctx.Err(); err != nil {
		return true, err
	}
	if a.w == nil || !a.w.due.Swap(false) {
		return false, nil
	}
	switch a.w.fired() {
	case waitDeadline:
		return true, nil
	case waitCheck:
		if err := check(ctx); err != nil {
			return true, err
		}
	}
	return false, nil
}

// waitTimer is ListenUntil's one timer for both its check interval and
// its deadline, so that a waiting subscriber holds one timer for the two.
// When it fires it sets due and rings the call's alarm.
type waitTimer struct {
	t        *time.Timer
	due      atomic.Bool
	interval time.Duration // 0: no check
	next     time.Time     // when check is due next
	deadline time.Time     // zero: none
}

// What waitTimer.fired found due.
const (
	waitNothing = iota
	waitCheck
	waitDeadline
)

// newWaitTimer returns a waitTimer for interval (0: no check) and timeout
// (0: none) that calls ring each time it fires.
func newWaitTimer(interval, timeout time.Duration, ring func()) *waitTimer {
	now := time.Now()
	w := &waitTimer{interval: interval}
	if interval > 0 {
		w.next = now.Add(interval)
	}
	if timeout > 0 {
		w.deadline = now.Add(timeout)
	}
	w.t = time.AfterFunc(w.until(now), func() {
		w.due.Store(true)
		ring()
	})
	return w
}

// until is the time from now to the next of the check and the deadline.
func (w *waitTimer) until(now time.Time) time.Duration {
	at := w.next
	if at.IsZero() || !w.deadline.IsZero() && w.deadline.Before(at) {
		at = w.deadline
	}
	return at.Sub(now)
}

// fired says what is due now that the timer fired (due was set), and sets
// it again unless the deadline has come. As a time.Ticker, it drops the
// checks a slow check or a busy subscriber missed.
func (w *waitTimer) fired() int {
	now := time.Now()
	if !w.deadline.IsZero() && !now.Before(w.deadline) {
		return waitDeadline
	}
	due := waitNothing
	if w.interval > 0 && !now.Before(w.next) {
		due = waitCheck
		w.next = w.next.Add(w.interval)
		if !w.next.After(now) {
			w.next = now.Add(w.interval)
		}
	}
	w.t.Reset(w.until(now))
	return due
}

// beginApart runs begin on a goroutine of its own and waits for it: the
// store's calls, deep ones with SQL drivers, grow that goroutine's stack
// rather than the waiting subscriber's, which the runtime would shrink
// back only at the next collections (none come while a hub sits idle).
func (l *Listener) beginApart(ctx context.Context, since Cursor) (*live.Cache[Message], *cursors.Sub, Cursor, error) {
	type begun struct {
		lv  *live.Cache[Message]
		st  *cursors.Sub
		cur Cursor
		err error
	}
	done := make(chan begun, 1)
	go func() {
		var b begun
		b.lv, b.st, b.cur, b.err = l.begin(ctx, since)
		done <- b
	}()
	b := <-done
	return b.lv, b.st, b.cur, b.err
}

// begin joins the listener for ListenUntil and returns its live entry, the
// subscriber's state and the cursor to start from. It is apart from
// ListenUntil, as are end and step, so that a waiting subscriber's
// goroutine holds only ListenUntil's small frame: when a parked goroutine
// uses less than about 1.2 KiB of stack (2 KiB less the runtime's reserve)
// the runtime shrinks its stack to 4 KiB, most of what an idle subscriber
// costs.
func (l *Listener) begin(ctx context.Context, since Cursor) (*live.Cache[Message], *cursors.Sub, Cursor, error) {
	if err := l.checkOpen("listen"); err != nil {
		return nil, nil, since, err
	}
	h := l.hub
	// The live entry exists before join reads the head: a message committed
	// after that read is published to it, one committed before is below the
	// head and read from the store. An entry left from a deleted incarnation
	// of the listener (same ID, created again) is replaced.
	var (
		lv   *live.Cache[Message]
		info ListenerInfo
		sub  Subscriber
		now  time.Time
		err  error
	)
	for attempt := 0; ; attempt++ {
		if lv = h.lives.Acquire(l.info.ID); lv == nil {
			return nil, nil, since, fmt.Errorf("listen %s: %w", l.info.ID, ErrHubClosed)
		}
		// One reading of the clock sets the lease and when to renew it.
		now = h.now()
		// The cursor is checked before anything is written: a bad one
		// neither moves the lease nor touches the listener. The head only
		// grows, so a cursor within it then is within it after the join.
		if info, sub, err = l.rejoin(ctx, "listen", now, func(info ListenerInfo) error {
			if since != Resume && since > info.Head {
				return fmt.Errorf("listen %s: %w: cursor %d is past the listener's newest message %d", l.info.ID, ErrInvalidArgument, since, info.Head)
			}
			return nil
		}); err != nil {
			h.lives.Release(lv)
			return nil, nil, since, err
		}
		if lv.Bind(info.Created) {
			break
		}
		h.lives.Release(lv)
		h.lives.Replace(lv)
		// The cache was another incarnation's (its listens, or a late
		// publish of its messages, took the fresh one first). Reading on
		// with it would read that one's messages, or none: start over,
		// unless this listener is gone, or this keeps happening.
		if attempt >= 2 {
			if _, err := l.current(ctx, "listen"); err != nil {
				return nil, nil, since, err
			}
		}
		if attempt == 9 {
			return nil, nil, since, fmt.Errorf("listen %s: %w: its cache was bound to another incarnation of the listener ten times over", l.info.ID, ErrClosed)
		}
	}
	lv.Observe(uint64(info.Head))
	st := h.cursors.Acquire(l.subKey(l.info.Created), l.lease, now)
	cur := since
	if since == Resume {
		// Resume from the newest position this hub knows: the saved one, or
		// what a running ListenUntil of the same subscriber acknowledged
		// since (saved only every AckInterval). A position past the head
		// belongs to an earlier incarnation of the listener: start from
		// the head.
		cur = min(max(sub.Cursor, Cursor(st.Acked())), info.Head)
	}
	h.listening.Add(1)
	return lv, st, cur, nil
}

// end undoes begin and newAlarm: it stops ListenUntil's alarm, saves the
// subscriber's position and releases the live entry. It returns err, or
// the error of saving the position.
func (l *Listener) end(ctx context.Context, lv *live.Cache[Message], st *cursors.Sub, a *alarm, err error) error {
	h := l.hub
	l.stopAlarm(a)
	if serr := h.cursors.Release(ctx, st); serr != nil && err == nil {
		err = fmt.Errorf("listen %s: %w", l.info.ID, serr)
	}
	h.listening.Add(-1)
	h.lives.Release(lv)
	return err
}

// step hands respond what is there after *cur, from the cache or the store,
// and advances *cur. It returns nil when it delivered something or moved
// *cur (look again at once), or else the channel to wait on. It is apart
// from ListenUntil to keep the frame that waits small (see begin).
func (l *Listener) step(ctx context.Context, lv *live.Cache[Message], st *cursors.Sub, respond RespondFunc, cur *Cursor) (<-chan struct{}, error) {
	h := l.hub
	limit := h.opts.BatchLimit
	msgs, wake, need, gone := lv.Next(uint64(*cur), limit)
	if gone {
		return nil, l.goneErr(lv)
	}
	if need {
		var (
			h0  uint64
			err error
		)
		if lv.Suspect() {
			if err := l.confirm(ctx, lv); err != nil {
				return nil, err
			}
		}
		if msgs, h0, gone, err = lv.Fill(ctx, h.read, uint64(*cur), limit, h.opts.CacheSize); errors.Is(err, ErrNotFound) {
			// Not the cache's incarnation any more (see
			// IncarnationReader): the listener is gone.
			h.lives.Replace(lv)
			return nil, l.deletedErr("listen")
		} else if err != nil {
			return nil, fmt.Errorf("listen %s: read: %w", l.info.ID, err)
		}
		if gone {
			return nil, l.goneErr(lv)
		}
		if len(msgs) == 0 {
			*cur, err = l.skipRemoved(ctx, lv, *cur, h0)
			return nil, err
		}
	}
	if len(msgs) == 0 {
		return wake, nil
	}
	if err := ctx.Err(); err != nil {
		// Done while the last respond ran (a client that left, say):
		// hand over, and so acknowledge, nothing more.
		return nil, err
	}
	// Handed over: from now on respond, or whoever it passes them to, may
	// acknowledge them with AckDelivered.
	st.MarkSent(uint64(msgs[len(msgs)-1].Seq))
	err := respond(ctx, msgs)
	if err != nil && !errors.Is(err, AckLater) {
		return nil, err
	}
	h.delivered.Add(int64(len(msgs)))
	*cur = msgs[len(msgs)-1].Seq
	if err == nil {
		h.cursors.Ack(st, uint64(*cur))
	}
	return nil, nil
}

// currentOf is current for a listen on cache lv: if the handle's
// incarnation is gone from the store, it retires lv, which ends every local
// subscriber of it with ErrClosed.
func (l *Listener) currentOf(ctx context.Context, lv *live.Cache[Message]) (ListenerInfo, error) {
	info, err := l.current(ctx, "listen")
	if errors.Is(err, ErrClosed) {
		l.hub.lives.Replace(lv)
	}
	return info, err
}

// confirm is step's answer to a cache marked Suspect (it was handed
// messages of another incarnation of the listener than its own; see
// live.Cache.Add): before it reads, it checks that the handle's
// incarnation, which is the cache's, is the store's. If not (the listener
// was deleted, and maybe made again elsewhere), it retires the cache, which
// ends every local subscriber of it with ErrClosed, rather than read the
// new incarnation's messages as the old one's.
func (l *Listener) confirm(ctx context.Context, lv *live.Cache[Message]) error {
	return lv.Confirm(func() error {
		_, err := l.currentOf(ctx, lv)
		return err
	})
}

// skipRemoved is step's answer to a store read that found nothing after
// cur though the cache's head h0, known before the read, lay beyond it:
// it returns the cursor to go on from. Either retention removed those
// messages (move on past them), or h0 is not this incarnation's head: a
// store's heads carry no incarnation, and one of a deleted incarnation of
// the listener can come late (a notification late in the Watch's queue, a
// catch-up read taken before the deletion); moving to it would skip the
// new incarnation's first messages. So, on this rare path only, it asks
// the store for the listener before it moves the cursor, puts a stale
// cache head right, and moves only past what a read after that answer
// still does not find. A listener deleted meanwhile ends every local
// subscriber of its cache with ErrClosed.
func (l *Listener) skipRemoved(ctx context.Context, lv *live.Cache[Message], cur Cursor, h0 uint64) (Cursor, error) {
	if uint64(cur) >= h0 {
		return cur, nil
	}
	info, err := l.currentOf(ctx, lv)
	if err != nil {
		return cur, err
	}
	lv.Correct(h0, uint64(info.Head))
	if info.Head <= cur {
		return cur, nil
	}
	// Every message up to info.Head was committed before this read: if it
	// finds none after cur, they were removed.
	msgs, err := l.hub.read(ctx, l.info.ID, l.info.Created, uint64(cur), 1)
	switch {
	case errors.Is(err, ErrNotFound):
		l.hub.lives.Replace(lv)
		return cur, l.deletedErr("listen")
	case err != nil:
		return cur, fmt.Errorf("listen %s: read: %w", l.info.ID, err)
	case len(msgs) > 0:
		return cur, nil // stored since the first read: the next step reads them
	}
	// Not past the cache's head, which a message stored next must follow.
	return max(cur, min(info.Head, Cursor(lv.Head()))), nil
}

func (l *Listener) argErr(noRespond bool) error {
	if noRespond {
		return fmt.Errorf("listen %s: %w: nil respond", l.info.ID, ErrInvalidArgument)
	}
	return fmt.Errorf("listen %s: %w: negative interval or timeout", l.info.ID, ErrInvalidArgument)
}

// goneErr is the error of a listen whose cache lv went gone: ErrHubClosed
// if the hub's shutdown closed it, else ErrClosed (the listener was
// deleted, or its incarnation replaced, even if the hub shut down since).
func (l *Listener) goneErr(lv *live.Cache[Message]) error {
	if lv.Closed() {
		return fmt.Errorf("listen %s: %w", l.info.ID, ErrHubClosed)
	}
	return fmt.Errorf("listen %s: %w", l.info.ID, ErrClosed)
}

// Messages returns up to limit messages after since ([Resume]: after this
// subscriber's position, as ListenUntil resumes), oldest first, without
// waiting and without acknowledging them (see Ack). limit 0 means
// Options.BatchLimit. It returns ErrClosed if the handle was closed or its
// listener deleted; with Resume it renews the subscriber's lease. A since
// past the listener's newest message is ErrInvalidArgument.
func (l *Listener) Messages(ctx context.Context, since Cursor, limit int) ([]Message, error) {
	if err := l.checkOpen("messages"); err != nil {
		return nil, err
	}
	if limit < 0 {
		return nil, fmt.Errorf("messages %s: %w: negative limit", l.info.ID, ErrInvalidArgument)
	}
	if limit == 0 {
		limit = l.hub.opts.BatchLimit
	}
	if since == Resume {
		info, sub, err := l.rejoin(ctx, "messages", l.hub.now(), nil)
		if err != nil {
			return nil, err
		}
		since = min(max(sub.Cursor, Cursor(l.hub.cursors.Acked(l.subKey(info.Created)))), info.Head)
	} else if info, err := l.current(ctx, "messages"); err != nil {
		return nil, err
	} else if since > info.Head {
		// As ListenUntil: a cursor of an older incarnation of the listener
		// would skip the first messages of this one.
		return nil, fmt.Errorf("messages %s: %w: cursor %d is past the listener's newest message %d", l.info.ID, ErrInvalidArgument, since, info.Head)
	}
	msgs, err := readOf(ctx, l.hub.store, l.info.ID, l.info.Created, since, limit)
	if errors.Is(err, ErrNotFound) {
		return nil, l.deletedErr("messages")
	}
	if err != nil {
		return nil, fmt.Errorf("messages %s: %w", l.info.ID, err)
	}
	return msgs, nil
}

// Ack saves c as this subscriber's position (it never moves back) and
// renews its lease. ListenUntil acknowledges by itself. It returns
// ErrClosed if the handle was closed or its listener deleted, and
// ErrNotFound if the subscriber is gone (its lease expired, or it left
// through another handle).
func (l *Listener) Ack(ctx context.Context, c Cursor) error {
	if err := l.checkOpen("ack"); err != nil {
		return err
	}
	if c == Resume {
		return fmt.Errorf("ack %s: %w: Resume is not a position", l.info.ID, ErrInvalidArgument)
	}
	info, err := l.current(ctx, "ack")
	if err != nil {
		return err
	}
	if c > info.Head {
		return fmt.Errorf("ack %s: %w: cursor %d is past the listener's newest message %d", l.info.ID, ErrInvalidArgument, c, info.Head)
	}
	// A checkpoint of a subscriber that is gone (its lease expired and GC
	// removed it, or it left through another handle) saves nothing: say
	// so rather than succeed.
	if err := l.subscribed(ctx, "ack"); err != nil {
		return err
	}
	cp := Checkpoint{Listener: l.info.ID, Person: l.person, Client: l.client, Cursor: c, LeaseExpires: l.hub.now().Add(l.lease), Created: info.Created}
	if err := l.hub.store.Checkpoint(ctx, []Checkpoint{cp}); err != nil {
		return fmt.Errorf("ack %s: %w", l.info.ID, err)
	}
	return nil
}

// AckDelivered acknowledges c for this subscriber: c is a cursor that a
// ListenUntil of this subscriber, running in this hub, handed to a respond
// function (one that returns [AckLater], or has not returned yet), and the
// caller now has evidence that its client received the messages up to c
// (an acknowledgement from the client, say). Like a respond that returns nil, it costs no store query:
// the position is saved with the hub's next batch, within
// Options.AckInterval, and at once when the subscriber's last ListenUntil
// in this hub returns. A position never moves back.
//
// It returns an error wrapping ErrInvalidArgument if c is Resume or past
// what this subscriber's running ListenUntil calls handed over, and
// ErrClosed if none is running in this hub (acknowledge with Ack then).
func (l *Listener) AckDelivered(c Cursor) error {
	if err := l.checkOpen("ack"); err != nil {
		return err
	}
	h := l.hub
	st := h.cursors.Lookup(l.subKey(l.info.Created))
	switch {
	case st == nil:
		return fmt.Errorf("ack %s: %w: the subscriber is not listening in this hub", l.info.ID, ErrClosed)
	case c == Resume || uint64(c) > st.Sent():
		return fmt.Errorf("ack %s: %w: cursor %d was not delivered", l.info.ID, ErrInvalidArgument, c)
	}
	h.cursors.Ack(st, uint64(c))
	return nil
}

// Cursor returns this subscriber's saved position. It returns ErrNotFound
// if the subscriber was removed while the listener remains, and ErrClosed
// if the listener was deleted. (Cursor, CursorAt and Subscribers do not
// tell this listener from one created again under its ID since.)
func (l *Listener) Cursor(ctx context.Context) (Cursor, error) {
	if err := l.checkOpen("cursor"); err != nil {
		return 0, err
	}
	// The first subscriber at or after this one is this one, if it exists:
	// one row, however many subscribers the listener has.
	subs, err := l.hub.store.Subscribers(ctx, l.info.ID, SubscriberRange{Person: l.person, Client: l.client, Limit: 1})
	if errors.Is(err, ErrNotFound) {
		return 0, l.deletedErr("cursor")
	}
	if err != nil {
		return 0, fmt.Errorf("cursor %s: %w", l.info.ID, err)
	}
	if len(subs) == 1 && subs[0].Person == l.person && subs[0].Client == l.client {
		return subs[0].Cursor, nil
	}
	return 0, fmt.Errorf("cursor %s: subscriber %q: %w", l.info.ID, l.person, ErrNotFound)
}

// CursorAt returns the cursor from which a reader sees exactly the messages
// created at or after t: the way to start from a time, as 0.1 did.
func (l *Listener) CursorAt(ctx context.Context, t time.Time) (Cursor, error) {
	if err := l.checkOpen("cursor at"); err != nil {
		return 0, err
	}
	c, err := l.hub.store.Seek(ctx, l.info.ID, t)
	if errors.Is(err, ErrNotFound) {
		return 0, l.deletedErr("cursor at")
	}
	if err != nil {
		return 0, fmt.Errorf("cursor at %s: %w", l.info.ID, err)
	}
	return c, nil
}

// Subscribers returns the listener's subscribers with their saved cursors,
// or ErrClosed if the listener was deleted.
func (l *Listener) Subscribers(ctx context.Context) ([]Subscriber, error) {
	if err := l.checkOpen("subscribers"); err != nil {
		return nil, err
	}
	subs, err := l.hub.Subscribers(ctx, l.info.ID)
	if errors.Is(err, ErrNotFound) {
		return nil, l.deletedErr("subscribers")
	}
	return subs, err
}

// Close removes this subscriber from the listener. When it was the last
// one, the listener and its messages are deleted and Hooks.Emptied is
// called. Later calls on this handle, and its running ListenUntil calls,
// return ErrClosed. Closing twice returns ErrClosed, and so does closing a
// handle whose listener or subscriber was removed elsewhere (the handle is
// then closed, and nothing of a listener created since under the same ID is
// touched). If the store fails, the handle stays open and Close may be
// called again.
func (l *Listener) Close(ctx context.Context) error {
	l.closeMu.Lock()
	defer l.closeMu.Unlock()
	if err := l.checkOpen("close"); err != nil {
		return err
	}
	h := l.hub
	var (
		deleted bool
		err     error
	)
	if il, ok := h.store.(IncarnationLeaver); ok {
		deleted, err = il.LeaveOf(ctx, l.info.ID, l.info.Created, l.person, l.client)
		if errors.Is(err, ErrNotFound) {
			l.closeDone()
			return fmt.Errorf("close %s: %w: the listener was deleted, or the subscriber removed", l.info.ID, ErrClosed)
		}
		if errors.Is(err, ErrClosed) {
			l.closeDone()
			return fmt.Errorf("close %s: %w", l.info.ID, err)
		}
	} else {
		if _, err := l.current(ctx, "close"); err != nil {
			if errors.Is(err, ErrClosed) {
				l.closeDone()
			}
			return err
		}
		deleted, err = h.store.Leave(ctx, l.info.ID, l.person, l.client)
		if errors.Is(err, ErrNotFound) {
			l.closeDone()
			return fmt.Errorf("close %s: %w: the subscriber was removed", l.info.ID, ErrClosed)
		}
	}
	if err != nil {
		// The handle stays open, so that Close can be tried again.
		return fmt.Errorf("close %s: %w", l.info.ID, err)
	}
	l.closeDone()
	if deleted {
		h.dropLive(l.info.ID)
		if h.opts.Hooks.Emptied != nil {
			h.opts.Hooks.Emptied(ctx, l.info)
		}
	}
	return nil
}
