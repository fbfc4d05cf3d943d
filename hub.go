package moitessier

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/likestripes/moitessier/internal/cursors"
	"github.com/likestripes/moitessier/internal/live"
)

// Defaults of the Options that bound the handler chain of one dispatch.
const (
	// DefaultMaxHandlers is the default of Options.MaxHandlers.
	DefaultMaxHandlers = 8
	// DefaultHandlerBudget is the default of Options.HandlerBudget.
	DefaultHandlerBudget = 2 * time.Second
	// DefaultMaxRecipients is the default of Options.MaxRecipients: a
	// group of a hundred is more than a conversation addressed by name.
	DefaultMaxRecipients = 100
)

// Options configure a Hub. The zero value works; each field documents its default.
type Options struct {
	// MaxMessageBytes is the largest message text, and the largest result
	// of each handler call of a chain, in bytes: a chain stops at the first
	// result over it. Default 64 KiB.
	MaxMessageBytes int
	// MaxHandlers is the most HandlerFuncs one dispatch may pass. A dispatch
	// with more fails with an error wrapping ErrInvalidArgument before
	// anything runs. Each Handler listener the dispatch reaches runs the
	// whole chain, so this bounds the handler calls per listener. Default 8.
	MaxHandlers int
	// HandlerBudget is how long all handler calls of one dispatch may take
	// together, measured on the wall clock (not Now). Handlers get a context
	// that ends with the budget (or with the dispatch's context); the chain
	// is not continued past it, and the dispatch fails with an error wrapping
	// ErrBudgetExceeded and stores nothing. A handler that ignores its
	// context is not interrupted, but no handler is called after the budget
	// ends. Default 2 seconds; a negative value sets no budget.
	HandlerBudget time.Duration
	// MaxRecipients is the most persons one dispatch may address ([To]);
	// a dispatch that names more (duplicates count) fails with an error
	// wrapping ErrInvalidArgument before anything is looked up. Each
	// addressee's matching Private listeners get a copy, so this bounds
	// the persons whose listeners one dispatch can reach. Default
	// DefaultMaxRecipients (100).
	MaxRecipients int
	// Lease is how long a subscriber stays subscribed after it last listened
	// (ListenUntil renews it while running) before GC removes it, and with
	// its last subscriber the listener. Conditions.Lease overrides it per
	// subscriber. Default 24 hours. It (and a Conditions.Lease) must be at
	// least twice AckInterval: a running ListenUntil renews its lease only
	// when positions are saved, a third of a lease after the last renewal
	// at the first save from then on.
	Lease time.Duration
	// AckInterval is how often acknowledged cursors and lease renewals of
	// running ListenUntil calls are saved, all in one Store.Checkpoint. A
	// ListenUntil that returns saves its own cursor at once. Default
	// [DefaultAckInterval], 1 second.
	AckInterval time.Duration
	// IdempotencyWindow is how long an idempotency key makes a retried
	// dispatch a no-op. Default 24 hours.
	IdempotencyWindow time.Duration
	// Quota bounds the listeners, Handler listeners, created Shared
	// listeners and subscriptions one person may hold; the store enforces
	// it, so all hubs on one store share it. A zero field is its default
	// (DefaultQuotaListeners 1000, DefaultQuotaHandlers 100,
	// DefaultQuotaShared 100, DefaultQuotaSubscriptions 2000), a negative
	// one no limit. Past it, NewListener, Open and a ListenUntil that
	// subscribes anew return a *QuotaError wrapping ErrQuotaExceeded.
	Quota Quota
	// QuotaFor, if not nil, returns the quota of one person, so that an
	// app can give trusted identities (a service account, a bot) more than
	// Quota, or someone less. A zero field of what it returns is Quota's
	// (with its defaults), a negative one no limit. It is called on every
	// join that may create a listener or a subscriber, with the person
	// who would own it; keep it cheap (a map lookup). Nil: Quota for
	// everyone.
	QuotaFor func(person string) Quota
	// MaxScopesPerListener is the most scopes and patterns one listener may
	// name; more is ErrInvalidScope. Default MaxScopesPerListener (64).
	MaxScopesPerListener int
	// Retention bounds the messages GC keeps per listener.
	Retention Retention
	// GCInterval is how often the hub runs GC in the background. Default 1
	// minute; a negative value turns background GC off (call Hub.GC yourself).
	GCInterval time.Duration
	// CacheSize is how many of a listener's newest messages the hub keeps in
	// memory while it has subscribers in ListenUntil. Default 1024.
	//
	// What a dispatcher feels when subscribers do not keep up: it never
	// waits for them. Memory stays bounded by CacheSize per listener; a
	// subscriber further behind reads from the store, BatchLimit messages
	// at a time, sharing the read with the others behind it. When the
	// in-process subscribers of a listener are still busy with earlier
	// messages, a dispatch yields its processor to them once every 32
	// messages (runtime.Gosched), so that a dispatcher faster than its
	// subscribers (the memory store) lets them run instead of building an
	// ever-growing backlog; a subscriber blocked elsewhere (writing to a
	// slow client) is not waited for.
	CacheSize int
	// BatchLimit is the most messages passed to one respond call. Default 256.
	// A call handed messages from the cache also stops where a chunk of it
	// ends (the cache is kept in chunks of CacheSize/2 messages, at most
	// 4096), so a CacheSize below twice BatchLimit makes batches smaller.
	BatchLimit int
	// CatchUpInterval is, for stores that implement Watcher, how often the
	// hub re-reads the heads of listeners with local subscribers, to cover a
	// notification that was lost. Default 2 seconds.
	CatchUpInterval time.Duration
	// Hooks are called on listener lifecycle events.
	Hooks Hooks
	// Logger receives the hub's logs. Default: discard.
	Logger *slog.Logger
	// Now returns the current time. Default time.Now; tests may set it.
	Now func() time.Time
}

// Retention bounds how many messages GC keeps. Zero fields keep everything.
type Retention struct {
	// MaxAge removes messages older than this. Default 7 days; negative keeps all.
	MaxAge time.Duration
	// MaxCount keeps at most this many newest messages per listener.
	// Default 0: no count limit.
	MaxCount int
}

// Hooks are called when listeners come and go, so an app can keep its own
// state in step. They run synchronously on the goroutine that caused the
// event; a slow hook slows that call.
type Hooks struct {
	// Created is called when NewListener stores a new listener.
	Created func(ctx context.Context, l ListenerInfo)
	// Emptied is called when Listener.Close or Hub.Leave removed the last
	// subscriber and so deleted the listener.
	Emptied func(ctx context.Context, l ListenerInfo)
	// Expired is called when GC deleted a listener whose last subscriber's
	// lease ended.
	Expired func(ctx context.Context, l ListenerInfo)
}

// DefaultAckInterval is Options.AckInterval's default. A second is short
// enough: a ListenUntil that returns saves its own position at once, and a
// resume in the same hub starts after what it acknowledged, so only a crash
// re-delivers up to a second of messages; and long enough: with 10 000 SSE
// streams on SQLite, saving every 100 ms made each save an update of up to
// 10 000 rows and cost much of the delivery rate (see the README's
// benchmark section).
const DefaultAckInterval = time.Second

// DefaultOptions returns the Options that New uses for zero fields: every
// default in one place, for a command line or a config file to start from.
// Logger and Now are left nil (New fills them).
func DefaultOptions() Options {
	o := Options{}.withDefaults()
	o.Logger, o.Now = nil, nil
	return o
}

func (o Options) withDefaults() Options {
	if o.MaxMessageBytes == 0 {
		o.MaxMessageBytes = 64 << 10
	}
	if o.MaxHandlers == 0 {
		o.MaxHandlers = DefaultMaxHandlers
	}
	if o.HandlerBudget == 0 {
		o.HandlerBudget = DefaultHandlerBudget
	}
	if o.MaxRecipients == 0 {
		o.MaxRecipients = DefaultMaxRecipients
	}
	if o.Lease == 0 {
		o.Lease = 24 * time.Hour
	}
	if o.AckInterval == 0 {
		o.AckInterval = DefaultAckInterval
	}
	if o.IdempotencyWindow == 0 {
		o.IdempotencyWindow = 24 * time.Hour
	}
	if o.Quota.Listeners == 0 {
		o.Quota.Listeners = DefaultQuotaListeners
	}
	if o.Quota.Handlers == 0 {
		o.Quota.Handlers = DefaultQuotaHandlers
	}
	if o.Quota.Subscriptions == 0 {
		o.Quota.Subscriptions = DefaultQuotaSubscriptions
	}
	if o.Quota.Shared == 0 {
		o.Quota.Shared = DefaultQuotaShared
	}
	if o.MaxScopesPerListener == 0 {
		o.MaxScopesPerListener = MaxScopesPerListener
	}
	if o.Retention.MaxAge == 0 {
		o.Retention.MaxAge = 7 * 24 * time.Hour
	}
	if o.GCInterval == 0 {
		o.GCInterval = time.Minute
	}
	if o.CacheSize == 0 {
		o.CacheSize = 1024
	}
	if o.BatchLimit == 0 {
		o.BatchLimit = 256
	}
	if o.CatchUpInterval == 0 {
		o.CatchUpInterval = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

func (o Options) validate() error {
	switch {
	case o.MaxMessageBytes < 0:
		return fmt.Errorf("options: %w: negative MaxMessageBytes", ErrInvalidArgument)
	case o.MaxHandlers < 0, o.MaxRecipients < 0:
		return fmt.Errorf("options: %w: negative MaxHandlers or MaxRecipients", ErrInvalidArgument)
	case o.Lease < 0, o.AckInterval < 0, o.IdempotencyWindow < 0, o.CatchUpInterval < 0:
		return fmt.Errorf("options: %w: negative duration", ErrInvalidArgument)
	case o.Lease < 2*o.AckInterval:
		return fmt.Errorf("options: %w: Lease %v is shorter than twice AckInterval %v", ErrInvalidArgument, o.Lease, o.AckInterval)
	case o.CacheSize < 2, o.BatchLimit < 1, o.Retention.MaxCount < 0, o.MaxScopesPerListener < 1:
		return fmt.Errorf("options: %w: CacheSize, BatchLimit, Retention.MaxCount or MaxScopesPerListener out of range", ErrInvalidArgument)
	}
	return nil
}

// Hub dispatches messages to listeners kept in a Store and wakes the
// listeners' subscribers in this process. Create one with New and stop it
// with Shutdown or Close. A Hub is safe for concurrent use; one per process
// and store is the intended use.
//
// The Hub is the wiring: options, lifecycle (New, Shutdown), background
// loops (cursor saving, GC, watching the store) and the calls into the
// parts that keep the delivery rules: the live caches of listeners with
// local subscribers (package internal/live), the positions and leases of
// those subscribers (package internal/cursors), dispatch (dispatch.go) and
// a subscriber's ListenUntil loop (listener.go).
type Hub struct {
	store Store
	opts  Options
	log   *slog.Logger

	lives *live.Registry[Message] // caches of listeners with local subscribers
	read  live.ReadFunc[Message]  // Store.Read, or IncarnationReader.ReadOf: see readOf

	cursors *cursors.Tracker // positions and leases of local subscribers

	listening  atomic.Int64 // running ListenUntil calls past their join
	delivered  atomic.Int64 // messages handed to respond
	dispatched atomic.Int64

	stop    context.CancelFunc
	origin  *Origin // on a Watcher store, what this hub's calls carry; else nil
	wg      sync.WaitGroup
	closed  atomic.Bool
	closeMu sync.Mutex
}

// New returns a hub on store and starts its background work: saving
// acknowledged cursors, renewing leases, GC, and (for a Watcher store)
// hearing other processes' messages. Shutdown or Close stops it, and every
// goroutine it started; neither closes the store.
func New(store Store, opts Options) (*Hub, error) {
	if store == nil {
		return nil, fmt.Errorf("new hub: %w: nil store", ErrInvalidArgument)
	}
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	ctx, stop := context.WithCancel(context.Background())
	h := &Hub{
		store: store,
		opts:  opts,
		log:   opts.Logger,
		lives: live.NewRegistry(messageSeq, messageListener),
		stop:  stop,
	}
	h.cursors = cursors.New(h.saveCheckpoints, opts.Now, opts.Lease)
	h.read = func(ctx context.Context, id string, created time.Time, after uint64, limit int) ([]Message, error) {
		return readOf(ctx, store, id, created, Cursor(after), limit)
	}
	h.goLoop(ctx, opts.AckInterval, h.flush)
	if opts.GCInterval > 0 {
		h.goLoop(ctx, opts.GCInterval, func(ctx context.Context) {
			if _, err := h.GC(ctx); err != nil && ctx.Err() == nil {
				h.log.Error("moitessier: gc", "err", err)
			}
		})
	}
	if w, ok := store.(Watcher); ok {
		h.origin = new(Origin)
		wctx := h.originCtx(ctx)
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			h.watch(wctx, w)
		}()
		h.goLoop(ctx, opts.CatchUpInterval, func(ctx context.Context) { h.catchUp(ctx, w) })
	}
	return h, nil
}

func (h *Hub) goLoop(ctx context.Context, every time.Duration, fn func(context.Context)) {
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				fn(ctx)
			}
		}
	}()
}

// Shutdown stops the hub gracefully, as http.Server.Shutdown stops a
// server: it stops the background work (cursor saves, GC, watching the
// store), makes later calls fail with ErrHubClosed (which wraps
// ErrClosed) and running ListenUntil calls return it, waits until they
// have returned (each saves its subscriber's position as it returns),
// then saves the acknowledged positions left. If ctx ends first,
// Shutdown returns an error wrapping ctx's; the ListenUntil calls still
// running then save their positions as they return. It does not close
// the store. Calling it from a RespondFunc would wait for itself. A
// second call returns nil at once.
func (h *Hub) Shutdown(ctx context.Context) error {
	return h.shutdown(ctx, true)
}

// Close stops the hub at once, as http.Server.Close does: like Shutdown,
// but it does not wait for running ListenUntil calls to return (they save
// their positions as they do) before it saves the acknowledged positions.
// It waits for the store as long as the store takes. It does not close the
// store. A second call returns nil.
func (h *Hub) Close() error {
	return h.shutdown(context.Background(), false)
}

func (h *Hub) shutdown(ctx context.Context, wait bool) error {
	h.closeMu.Lock()
	defer h.closeMu.Unlock()
	if h.closed.Swap(true) {
		return nil
	}
	h.stop()
	h.wg.Wait()
	h.lives.Close()
	// Polled, as http.Server.Shutdown polls its connections: from 1 ms,
	// doubling up to 100 ms.
	for pause := time.Millisecond; wait && h.listening.Load() > 0; pause = min(2*pause, 100*time.Millisecond) {
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("shutdown: %d ListenUntil calls still running: %w", h.listening.Load(), ctx.Err())
		case <-t.C:
		}
	}
	if err := h.cursors.Flush(ctx, true); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// Stats are counters of a hub's activity, for metrics.
type Stats struct {
	// Listening is the number of ListenUntil calls running (and subscribed).
	Listening int64
	// Live is the number of listeners with ListenUntil calls in this process.
	Live int
	// Dispatched counts successful dispatches that stored something;
	// Delivered counts messages handed to respond functions.
	Dispatched, Delivered int64
}

// Stats returns the hub's counters.
func (h *Hub) Stats() Stats {
	return Stats{Listening: h.listening.Load(), Live: h.lives.Len(), Dispatched: h.dispatched.Load(), Delivered: h.delivered.Load()}
}

// Store returns the hub's store.
func (h *Hub) Store() Store { return h.store }

func (h *Hub) now() time.Time { return h.opts.Now() }

func (h *Hub) checkOpen(op string) error {
	if h.closed.Load() {
		return fmt.Errorf("%s: %w", op, ErrHubClosed)
	}
	return nil
}

// flush saves acknowledged cursors and due lease renewals in one Checkpoint.
func (h *Hub) flush(ctx context.Context) {
	if err := h.cursors.Flush(ctx, false); err != nil && ctx.Err() == nil {
		h.log.Error("moitessier: save cursors", "err", err)
	}
}

// saveCheckpoints is Store.Checkpoint as the cursor tracker calls it.
func (h *Hub) saveCheckpoints(ctx context.Context, cps []cursors.Checkpoint) error {
	out := make([]Checkpoint, len(cps))
	for i, c := range cps {
		out[i] = Checkpoint{Listener: c.Listener, Person: c.Person, Client: c.Client, Cursor: Cursor(c.Cursor), LeaseExpires: c.LeaseExpires}
		if c.Created != 0 {
			out[i].Created = time.Unix(0, c.Created)
		}
	}
	return h.store.Checkpoint(ctx, out)
}

// dropLive tells local subscribers of a deleted listener that it is gone.
func (h *Hub) dropLive(id string) { h.lives.Drop(id) }

func (h *Hub) watch(ctx context.Context, w Watcher) {
	for ctx.Err() == nil {
		err := w.Watch(ctx, h.observeHeads)
		if ctx.Err() != nil {
			return
		}
		h.log.Warn("moitessier: watch stopped; restarting", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (h *Hub) observeHeads(heads []Head) {
	h.lives.Observe(len(heads), func(i int) (string, uint64, time.Time) {
		return heads[i].Listener, uint64(heads[i].Seq), heads[i].Created
	})
}

// catchUp re-reads the heads of listeners with local subscribers, in one
// call, to cover a lost notification: it sends the heads their caches
// know, and hears back those that differ (see CompareHeads), which are all
// that reading every head would have changed. A listener the answer says
// is gone was deleted elsewhere, and one whose answer names another
// incarnation than the one its local subscribers' cache was bound to was
// deleted and made again under its ID: their ListenUntil calls end with
// ErrClosed rather than read on in the new one's messages.
// Only a cache that was there before the answer was read, and still is,
// is dropped: one made since (a new incarnation's, in this process) is not
// the answer's to judge.
func (h *Hub) catchUp(ctx context.Context, w Watcher) {
	caches := h.lives.Caches()
	if len(caches) == 0 {
		return
	}
	known := make([]Head, len(caches))
	for i, c := range caches {
		known[i] = Head{Listener: c.ID, Seq: Cursor(c.Head), Created: c.Created}
	}
	changed, gone, err := CompareHeads(ctx, w, known)
	if err != nil {
		if ctx.Err() == nil {
			h.log.Warn("moitessier: catch up", "err", err)
		}
		return
	}
	byID := make(map[string]Head, len(changed))
	for _, hd := range changed {
		byID[hd.Listener] = hd
	}
	isGone := make(map[string]bool, len(gone))
	for _, id := range gone {
		isGone[id] = true
	}
	// A cache whose head went down since it was looked at (Correct, after
	// a head of a deleted incarnation) may be behind the store though the
	// store's head is not above the one sent: those few are asked again,
	// with the heads they have now.
	var again []Head
	for _, c := range caches {
		if _, ok := byID[c.ID]; ok || isGone[c.ID] {
			continue
		}
		if hd := c.Cache.Head(); hd < c.Head {
			again = append(again, Head{Listener: c.ID, Seq: Cursor(hd), Created: c.Created})
		}
	}
	if len(again) > 0 {
		// If this fails, the first answer is still applied; those few
		// wait for the next read.
		more, moreGone, err := CompareHeads(ctx, w, again)
		if err != nil && ctx.Err() == nil {
			h.log.Warn("moitessier: catch up", "err", err)
		}
		for _, hd := range more {
			byID[hd.Listener] = hd
		}
		for _, id := range moreGone {
			isGone[id] = true
		}
	}
	if len(byID) == 0 && len(isGone) == 0 {
		return
	}
	var same []Head
	for _, c := range caches {
		hd, ok := byID[c.ID]
		switch {
		case isGone[c.ID], ok && !hd.Created.IsZero() && !c.Created.IsZero() && !hd.Created.Equal(c.Created):
			h.lives.DropIf(c.Cache)
		case ok:
			same = append(same, hd)
		}
	}
	h.observeHeads(same)
}

// GC removes expired subscribers, listeners left without one (calling
// Hooks.Expired for each), messages past the retention and expired
// idempotency keys. The hub runs it every Options.GCInterval; any process may
// call it at any time.
func (h *Hub) GC(ctx context.Context) (SweepResult, error) {
	if err := h.checkOpen("gc"); err != nil {
		return SweepResult{}, err
	}
	now := h.now()
	p := SweepParams{Now: now, MaxCount: h.opts.Retention.MaxCount, KeysBefore: now.Add(-h.opts.IdempotencyWindow)}
	if h.opts.Retention.MaxAge > 0 {
		p.MaxAge = h.opts.Retention.MaxAge
	}
	res, err := h.store.Sweep(ctx, p)
	if err != nil {
		return res, fmt.Errorf("gc: %w", err)
	}
	for _, l := range res.Expired {
		h.dropLive(l.ID)
		if h.opts.Hooks.Expired != nil {
			h.opts.Hooks.Expired(ctx, l)
		}
	}
	if n := len(res.Expired) + res.Subscribers + res.Messages + res.Keys; n > 0 {
		h.log.Info("moitessier: gc", "listeners", len(res.Expired), "subscribers", res.Subscribers, "messages", res.Messages, "keys", res.Keys)
	}
	return res, nil
}

// NewListener returns the listener the conditions name, creating it if it
// does not exist (calling Hooks.Created), and makes c.Person (with c.Client)
// a subscriber of it. It is idempotent: the same conditions give the same
// listener and subscriber. The errors wrap ErrUnknownType, ErrInvalidScope or
// ErrInvalidArgument for bad conditions, which change nothing.
func (h *Hub) NewListener(ctx context.Context, c Conditions) (*Listener, error) {
	if err := h.checkOpen("new listener"); err != nil {
		return nil, err
	}
	scopes, err := c.normalize(h.opts.MaxScopesPerListener)
	if err != nil {
		return nil, fmt.Errorf("new listener: %w", err)
	}
	if c.Lease > 0 && c.Lease < 2*h.opts.AckInterval {
		return nil, fmt.Errorf("new listener: lease %v: %w: shorter than twice the hub's AckInterval %v", c.Lease, ErrInvalidArgument, h.opts.AckInterval)
	}
	l := &Listener{hub: h, person: c.Person, client: c.Client, lease: c.Lease, done: make(chan struct{})}
	if l.lease == 0 {
		l.lease = h.opts.Lease
	}
	l.info = ListenerInfo{ID: listenerID(c.Type, c.Person, c.Client, scopes), Type: c.Type, Person: c.Person, Scopes: scopes, Created: h.now()}
	if c.Type != Shared {
		l.info.Client = c.Client
	}
	info, _, err := l.join(ctx, h.now(), c.Start, true)
	if err != nil {
		return nil, fmt.Errorf("new listener: %w", err)
	}
	// The handle belongs to the stored incarnation of the listener (its
	// Created as the store keeps it), which may be older than this call.
	l.info = info
	return l, nil
}

// Open returns a handle on the existing listener id for person (and client),
// making them a subscriber. It returns ErrNotFound if there is no such
// listener and ErrNotOwner if it is another person's (or client's) Private or
// Handler listener.
func (h *Hub) Open(ctx context.Context, id, person, client string) (*Listener, error) {
	if err := h.checkOpen("open listener"); err != nil {
		return nil, err
	}
	if err := checkName("person", person, false); err != nil {
		return nil, fmt.Errorf("open listener: %w", err)
	}
	if err := checkName("client", client, true); err != nil {
		return nil, fmt.Errorf("open listener: %w", err)
	}
	if err := checkID(id); err != nil {
		return nil, fmt.Errorf("open listener: %w", err)
	}
	info, err := h.store.Listener(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("open listener %s: %w", id, err)
	}
	if info.Owned() && (info.Person != person || info.Client != client) {
		return nil, fmt.Errorf("open listener %s: %w", id, ErrNotOwner)
	}
	l := &Listener{hub: h, info: info, person: person, client: client, lease: h.opts.Lease, done: make(chan struct{})}
	joined, _, err := l.join(ctx, h.now(), Start{}, false)
	if err != nil {
		return nil, fmt.Errorf("open listener %s: %w", id, err)
	}
	// Deleted and made again (by another) since it was looked up: the
	// handle belongs to the incarnation it joined.
	l.info = joined
	return l, nil
}

// Leave removes person (with client) as a subscriber of listener id, as
// Listener.Close does for a handle, without making one: a transport that
// serves "stop being a subscriber" need not join the listener (renewing a
// lease it is about to end) only to leave it. When it was the last
// subscriber, the listener and its messages are deleted, running
// ListenUntil calls on it in this hub return ErrClosed, and Hooks.Emptied
// is called with the listener as the call found it: the incarnation it
// deleted, even if the listener was deleted and made again under its ID
// while the call ran (on a store that is an IncarnationLeaver, as every
// store of this module is). It returns an error wrapping ErrNotFound if
// there is no such listener or subscriber. It checks no ownership beyond
// that: a subscriber leaves as itself.
func (h *Hub) Leave(ctx context.Context, id, person, client string) error {
	if err := h.checkOpen("leave"); err != nil {
		return err
	}
	if err := checkID(id); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	if err := checkName("person", person, false); err != nil {
		return fmt.Errorf("leave %s: %w", id, err)
	}
	if err := checkName("client", client, true); err != nil {
		return fmt.Errorf("leave %s: %w", id, err)
	}
	var (
		info    ListenerInfo
		deleted bool
		err     error
	)
	if h.opts.Hooks.Emptied != nil {
		info, deleted, err = h.leaveRead(ctx, id, person, client)
	} else {
		deleted, err = h.store.Leave(ctx, id, person, client)
	}
	if err != nil {
		return fmt.Errorf("leave %s: %w", id, err)
	}
	if deleted {
		h.dropLive(id)
		if h.opts.Hooks.Emptied != nil {
			h.opts.Hooks.Emptied(ctx, info)
		}
	}
	return nil
}

// leaveRead is Hub.Leave's store calls when Hooks.Emptied is set: the
// listener as it was is read first, for the hook (Leave answers
// ErrNotFound for a listener that does not exist as for a subscriber that
// does not), and left only while it is the incarnation read, on a store
// that can (IncarnationLeaver), so that the hook is told of the
// incarnation the call deleted. If that one was deleted, and the listener
// made again, between the read and the leave, it reads and leaves again,
// at most three times in all.
func (h *Hub) leaveRead(ctx context.Context, id, person, client string) (info ListenerInfo, deleted bool, err error) {
	if info, err = h.store.Listener(ctx, id); err != nil {
		return info, false, err
	}
	il, ok := h.store.(IncarnationLeaver)
	if !ok {
		deleted, err = h.store.Leave(ctx, id, person, client)
		return info, deleted, err
	}
	for attempt := 1; ; attempt++ {
		deleted, err = il.LeaveOf(ctx, id, info.Created, person, client)
		if !errors.Is(err, ErrNotFound) || attempt == 3 {
			return info, deleted, err
		}
		again, rerr := h.store.Listener(ctx, id)
		if rerr != nil || again.Created.Equal(info.Created) {
			// Gone, or the same incarnation without the subscriber.
			return info, false, err
		}
		info = again
	}
}

// Options returns the hub's options, with every default filled in, so
// that a layer in front of it (an HTTP server) can check a request against
// the hub's limits before it does any work.
func (h *Hub) Options() Options { return h.opts }

// Info returns the stored listener with the given ID, with its head. It
// returns ErrNotFound if there is none. It checks no ownership: callers that
// serve other people check ListenerInfo.Person themselves.
func (h *Hub) Info(ctx context.Context, id string) (ListenerInfo, error) {
	if err := h.checkOpen("listener"); err != nil {
		return ListenerInfo{}, err
	}
	if err := checkID(id); err != nil {
		return ListenerInfo{}, fmt.Errorf("listener: %w", err)
	}
	info, err := h.store.Listener(ctx, id)
	if err != nil {
		return info, fmt.Errorf("listener %s: %w", id, err)
	}
	return info, nil
}

// Subscribers returns every subscriber of listener id with their
// acknowledged cursors: who has seen what. It checks no ownership. Its cost
// grows with the listener's subscribers; SubscriberPage reads a page.
func (h *Hub) Subscribers(ctx context.Context, id string) ([]Subscriber, error) {
	return h.SubscriberPage(ctx, id, SubscriberRange{})
}

// SubscriberPage returns the subscribers of listener id in the range r, in
// (Person, Client) order, with their acknowledged cursors. To read the
// next page, start a range at the last subscriber returned and skip it. It
// checks no ownership. A negative r.Limit, or a person or client in r
// that no subscriber could have, is ErrInvalidArgument.
func (h *Hub) SubscriberPage(ctx context.Context, id string, r SubscriberRange) ([]Subscriber, error) {
	if err := h.checkOpen("subscribers"); err != nil {
		return nil, err
	}
	if err := checkID(id); err != nil {
		return nil, fmt.Errorf("subscribers: %w", err)
	}
	if r.Limit < 0 {
		return nil, fmt.Errorf("subscribers of %s: %w: negative limit", id, ErrInvalidArgument)
	}
	if err := checkName("person", r.Person, true); err != nil {
		return nil, fmt.Errorf("subscribers of %s: %w", id, err)
	}
	if err := checkName("client", r.Client, true); err != nil {
		return nil, fmt.Errorf("subscribers of %s: %w", id, err)
	}
	subs, err := h.store.Subscribers(ctx, id, r)
	if err != nil {
		return nil, fmt.Errorf("subscribers of %s: %w", id, err)
	}
	return subs, nil
}

func newDispatchID(now time.Time) string {
	var b [12]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixNano()))
	binary.BigEndian.PutUint32(b[8:], rand.Uint32())
	return hex.EncodeToString(b[:])
}

// messageSeq and messageListener are how the live caches read a Message.
func messageSeq(m *Message) uint64      { return uint64(m.Seq) }
func messageListener(m *Message) string { return m.Listener }

// readOf reads listener id's messages after after, of its incarnation
// created when the store can tell (IncarnationReader; created is never
// zero here), else of whichever incarnation it is.
func readOf(ctx context.Context, s Store, id string, created time.Time, after Cursor, limit int) ([]Message, error) {
	if ir, ok := s.(IncarnationReader); ok && !created.IsZero() {
		return ir.ReadOf(ctx, id, created, after, limit)
	}
	return s.Read(ctx, id, after, limit)
}
