package moitessier

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/likestripes/moitessier/internal/live"
)

// HandlerFunc computes a Handler listener's message at dispatch time. It is
// called with the listener's ID and the message as dispatched (Seq is not
// yet set); what it returns is stored as that listener's message, and an
// empty string stores nothing for it. An error fails the whole dispatch,
// which then stores nothing.
//
// A HandlerFunc is also a DispatchOption: pass it to Hub.Dispatch. With several
// handlers, each sees the text the previous one returned. The chain is
// bounded: at most Options.MaxHandlers handlers per dispatch, each result
// at most Options.MaxMessageBytes, and all calls of one dispatch within
// Options.HandlerBudget; ctx ends with the dispatch's context or the
// budget, and no handler is called after it ended. On a store that
// caches matches ([MatchCacher]), a dispatch is prepared a second time, on
// a fresh match, when listeners on its scope were created or deleted since
// the cached one or when a handler failed on the cached one; a handler may
// then be called twice for one listener, and only the second result counts.
type HandlerFunc func(ctx context.Context, listenerID string, m Message) (string, error)

func (f HandlerFunc) applyDispatch(c *dispatchConfig) {
	c.handlers = append(c.handlers, f)
	c.handlerNames = append(c.handlerNames, "")
}

// NamedHandler passes f to a dispatch, like f itself, under a name. The
// names of a dispatch's handlers, in order, are part of what makes a retry
// with the same [IdempotencyKey] the same request; a HandlerFunc passed
// without a name counts only by its position in the chain.
func NamedHandler(name string, f HandlerFunc) DispatchOption {
	return optionFunc(func(c *dispatchConfig) {
		c.handlers = append(c.handlers, f)
		c.handlerNames = append(c.handlerNames, name)
	})
}

// A DispatchOption changes one dispatch: a [HandlerFunc], [NamedHandler],
// [To] or [IdempotencyKey].
type DispatchOption interface{ applyDispatch(*dispatchConfig) }

type dispatchConfig struct {
	handlers     []HandlerFunc
	handlerNames []string // one per handler; "" for an unnamed one
	to           []string
	addressed    bool
	key          string
	keySet       bool
	budget       time.Duration // from Budget; 0: Options.HandlerBudget
}

// applyDispatchOptions returns the configuration opts make. It is apart
// from prepare so that only a dispatch with options moves one to the heap
// (an option is called through an interface, which takes the address).
func applyDispatchOptions(opts []DispatchOption) dispatchConfig {
	var c dispatchConfig
	for _, o := range opts {
		if o != nil {
			o.applyDispatch(&c)
		}
	}
	return c
}

type optionFunc func(*dispatchConfig)

func (f optionFunc) applyDispatch(c *dispatchConfig) { f(c) }

// To addresses a dispatch to persons: it reaches the Private listeners of
// these persons (and of the sender) whose scope matches, and no Shared or
// Handler listener. To() with no person still addresses the dispatch: it
// reaches only the sender's Private listeners.
func To(persons ...string) DispatchOption {
	return optionFunc(func(c *dispatchConfig) { c.to, c.addressed = append(c.to, persons...), true })
}

// Budget lowers the handler time budget of one dispatch to d, when d is
// below Options.HandlerBudget (or the hub sets none); d of 0 or less
// changes nothing. Past it the dispatch fails with ErrBudgetExceeded as
// past Options.HandlerBudget. It is for a layer that shares handler time
// among a person's dispatches (moitessierhttp gives each dispatch part of
// its sender's handler time); it is not part of the request's
// fingerprint.
func Budget(d time.Duration) DispatchOption {
	return optionFunc(func(c *dispatchConfig) { c.budget = d })
}

// IdempotencyKey makes a dispatch idempotent: a second dispatch by the same
// sender with the same key within Options.IdempotencyWindow stores nothing
// and returns the first one's messages with Replayed set. Handlers may run
// again on such a retry; their results are discarded.
//
// The key names one request: the store keeps a fingerprint of it with the
// key (see [Fingerprint]), and a dispatch that reuses the key for another
// request — another scope, text, addressing ([To]) or chain of handler
// names ([NamedHandler]) — fails with an error wrapping
// ErrIdempotencyMismatch and stores nothing.
func IdempotencyKey(key string) DispatchOption {
	return optionFunc(func(c *dispatchConfig) { c.key, c.keySet = key, true })
}

// Dispatched is the result of a dispatch.
type Dispatched struct {
	// ID identifies the dispatch; every message of it carries it. On a
	// replay it is the first dispatch's ID, read from its messages; a replay
	// of a dispatch that stored nothing (or whose messages are gone) has a
	// new ID.
	ID string
	// Messages are the stored messages, one per listener that got one; for
	// Handler listeners their Text is what the handlers returned.
	Messages []Message
	// Reached lists the IDs of the listeners the dispatch reached, including
	// Handler listeners whose handlers returned nothing.
	Reached []string
	// Owners holds, for each listener of Reached in the same order, its
	// owner: the person of a Private or Handler listener, "" for a Shared
	// one. An answer that must not tell the sender about other people's
	// listeners counts only its own and the Shared ones. Nil on a replay.
	Owners []string
	// Replayed is true when an idempotency key matched an earlier dispatch:
	// nothing was stored and Messages are the earlier ones.
	Replayed bool
	// HandlerTime is the wall time the dispatch's handler calls took
	// together (both runs, when a stale match made the hub prepare it
	// again), for an app that bounds what one person may spend on handlers
	// over time, as moitessierhttp does (see also [Budget]). Dispatch also
	// returns it when it fails: the Dispatched it returns with an error
	// holds only this.
	HandlerTime time.Duration
}

// Dispatch writes text as one message to every listener whose scope matches
// the concrete scope, atomically: all of them or none.
//
//   - Shared listeners get text.
//   - Private listeners get text if their owner is the sender, or, with
//     [To], if their owner is addressed. An addressed dispatch reaches only
//     Private listeners.
//   - Handler listeners get what the [HandlerFunc] options return for them (in
//     order, each seeing the previous result); with no handler, text.
//
// An empty text (or handler result) stores nothing for that listener. Local
// subscribers in ListenUntil are woken at once. Errors wrap ErrInvalidScope,
// ErrInvalidArgument or ErrTooLarge for bad input, a handler's error, or the
// store's; on any error nothing is stored, except an error wrapping
// ErrOutcomeUnknown: ctx ended, or the store's connection broke, while the
// store was writing the dispatch, which may or may not have been stored.
// Retry such a dispatch with an [IdempotencyKey] (the same one): a retry of
// one that was stored replays it. The memory and SQLite stores never
// return it (their writes either commit or not before they return); the
// Postgres and Cloud Datastore stores do. More handlers than
// Options.MaxHandlers, or persons in To than Options.MaxRecipients, is
// ErrInvalidArgument; handlers that together run past
// Options.HandlerBudget give ErrBudgetExceeded; a ctx that ends while
// handlers run stops the chain and gives ctx's error.
func (h *Hub) Dispatch(ctx context.Context, sender, scope, text string, opts ...DispatchOption) (Dispatched, error) {
	var bg budget
	d, msgs, replayed, err := h.dispatch(ctx, &bg, sender, scope, text, opts, true)
	if errors.Is(err, ErrStale) {
		// Listeners were created on the scope since the cached match: match
		// again (the handlers run again, within what is left of the budget)
		// and append again.
		d, msgs, replayed, err = h.dispatch(ctx, &bg, sender, scope, text, opts, false)
	}
	if err != nil {
		return Dispatched{HandlerTime: bg.used}, err
	}
	d.Messages, d.Replayed, d.HandlerTime = msgs, replayed, bg.used
	if replayed {
		d.Reached, d.Owners = d.Reached[:0], nil
		for _, m := range msgs {
			d.ID = m.Dispatch
			d.Reached = append(d.Reached, m.Listener)
		}
		return d, nil
	}
	if len(msgs) > 0 {
		h.dispatched.Add(1)
	}
	return d, nil
}

// dispatch prepares a batch, from a cached match if cached and the store has
// a cache, appends it and publishes its messages to local subscribers.
func (h *Hub) dispatch(ctx context.Context, bg *budget, sender, scope, text string, opts []DispatchOption, cached bool) (d Dispatched, msgs []Message, replayed bool, err error) {
	dr, err := h.prepare(ctx, bg, sender, scope, text, opts, cached)
	if err != nil {
		if dr.cached && dr.handlerFailed {
			// A handler failed on a cached answer, perhaps for a listener
			// since deleted: try again on a fresh one.
			return d, nil, false, fmt.Errorf("%w: %w", ErrStale, err)
		}
		return d, nil, false, err
	}
	b := dr.b
	d = Dispatched{ID: b.Dispatch, Reached: dr.reached, Owners: dr.owners}
	if dr.appended {
		defer h.lives.UnholdAll() // prepare's matchAppend left it held
		h.publish(dr.msgs, dr.ls)
		return d, dr.msgs, false, nil
	}
	if len(b.Entries) == 0 && b.Key == "" {
		if dr.cached {
			// No append will check the cached answer: check it against a
			// fresh one, and prepare again only if they differ.
			fresh, err := h.store.Match(ctx, scope)
			if err != nil {
				return d, nil, false, fmt.Errorf("dispatch to %q: match: %w", scope, err)
			}
			if !sameListeners(fresh, dr.ls) {
				return d, nil, false, ErrStale
			}
		}
		return d, nil, false, nil
	}
	// Stamp the time after the handlers ran, just before the append, so
	// that a listener's messages are in time order but for the microseconds
	// between concurrent dispatchers (Seek and retention rely on it).
	if now := h.now(); now.After(b.Created) {
		b.Created = now
	}
	if err := ctx.Err(); err != nil {
		return d, nil, false, fmt.Errorf("dispatch to %q: %w", scope, err)
	}
	held := h.lives.Hold(len(b.Entries), func(i int) string { return b.Entries[i].Listener })
	defer live.Unhold(held)
	msgs, replayed, err = h.store.Append(h.originCtx(ctx), b)
	if err != nil {
		return d, nil, false, fmt.Errorf("dispatch to %q: %w", scope, err)
	}
	if !replayed {
		h.publish(msgs, dr.ls)
	}
	return d, msgs, replayed, nil
}

// publish hands a dispatch's messages to the caches of their listeners'
// local subscribers, each with the incarnation of its listener in ls, the
// match the dispatch was made from (see live.Cache.Add).
func (h *Hub) publish(msgs []Message, ls []ListenerInfo) {
	inc := incarnations{ls: ls}
	h.lives.Publish(msgs, func(i int) time.Time { return inc.of(msgs[i].Listener) }, h.opts.CacheSize)
}

// incarnations finds a listener's creation time in a match. A dispatch's
// messages come in the order of its match (Append keeps the order of its
// entries, made in that order), so each search starts where the last one
// ended: one pass over the match in all, with no map to make.
type incarnations struct {
	ls []ListenerInfo
	at int
}

// of returns the creation time of listener id, zero (unknown) if the
// match does not hold it.
func (c *incarnations) of(id string) time.Time {
	for range len(c.ls) {
		l := &c.ls[c.at]
		if c.at++; c.at == len(c.ls) {
			c.at = 0
		}
		if l.ID == id {
			return l.Created
		}
	}
	return time.Time{}
}

// Prepare does the first half of Dispatch: it validates the dispatch, finds
// the listeners it reaches and runs the handlers, and returns the Batch to
// append, without storing anything. Stores that can append inside a caller's
// transaction (the postgres package) use it for transactional dispatch.
// Messages appended that way reach this hub's listeners through the store's
// Watcher; with a store that has none (memory, SQLite), only Dispatch wakes
// them, so use Dispatch there.
func (h *Hub) Prepare(ctx context.Context, sender, scope, text string, opts ...DispatchOption) (*Batch, error) {
	var bg budget
	dr, err := h.prepare(ctx, &bg, sender, scope, text, opts, false)
	return dr.b, err
}

func (h *Hub) checkText(what, text string) error {
	if len(text) > h.opts.MaxMessageBytes {
		return fmt.Errorf("%s: %w: %d bytes, more than %d", what, ErrTooLarge, len(text), h.opts.MaxMessageBytes)
	}
	if !utf8.ValidString(text) {
		return fmt.Errorf("%s: %w: not valid UTF-8", what, ErrInvalidArgument)
	}
	return nil
}

// draft is a prepared dispatch: its batch, the listeners it reached, and
// the match it was made from.
type draft struct {
	b       *Batch
	reached []string
	owners  []string // of each listener in reached; "" for a Shared one
	ls      []ListenerInfo
	cached  bool // ls came from MatchCacher.MatchCached
	// appended: MatchAppender.MatchAppend matched and appended the batch
	// in one statement, and wrote msgs.
	appended bool
	msgs     []Message
	// handlerFailed: the error prepare returned is a handler's (or its
	// result's); with cached set, the answer may be out of date.
	handlerFailed bool
}

func (h *Hub) prepare(ctx context.Context, bg *budget, sender, scope, text string, opts []DispatchOption, cached bool) (draft, error) {
	if err := h.checkOpen("dispatch"); err != nil {
		return draft{}, err
	}
	var c dispatchConfig
	if len(opts) > 0 {
		c = applyDispatchOptions(opts)
	}
	if err := ValidateScope(scope); err != nil {
		return draft{}, fmt.Errorf("dispatch: %w", err)
	}
	if err := checkName("sender", sender, true); err != nil {
		return draft{}, fmt.Errorf("dispatch to %q: %w", scope, err)
	}
	if err := h.checkText("message", text); err != nil {
		return draft{}, fmt.Errorf("dispatch to %q: %w", scope, err)
	}
	if len(c.handlers) > h.opts.MaxHandlers {
		return draft{}, fmt.Errorf("dispatch to %q: %w: %d handlers, more than %d (Options.MaxHandlers)", scope, ErrInvalidArgument, len(c.handlers), h.opts.MaxHandlers)
	}
	if len(c.to) > h.opts.MaxRecipients {
		return draft{}, fmt.Errorf("dispatch to %q: %w: %d recipients, more than %d (Options.MaxRecipients)", scope, ErrInvalidArgument, len(c.to), h.opts.MaxRecipients)
	}
	if c.keySet {
		if err := checkName("idempotency key", c.key, false); err != nil {
			return draft{}, fmt.Errorf("dispatch to %q: %w", scope, err)
		}
	}
	if c.addressed {
		for _, p := range c.to {
			if err := checkName("recipient", p, false); err != nil {
				return draft{}, fmt.Errorf("dispatch to %q: %w", scope, err)
			}
		}
	}
	now := h.now()
	b := &Batch{Dispatch: newDispatchID(now), Scope: scope, Sender: sender, Created: now, Key: c.key}
	if c.keySet {
		b.KeySince = now.Add(-h.opts.IdempotencyWindow)
		b.Fingerprint = Fingerprint(scope, text, c.addressed, c.to, c.handlerNames)
	}
	var (
		ls  []ListenerInfo
		err error
		dr  draft
	)
	sel := Selection{Sender: sender, To: c.to, Addressed: c.addressed, Handlers: len(c.handlers) > 0}
	ma, appends := h.store.(MatchAppender)
	mc, caches := h.store.(MatchCacher)
	switch {
	case appends && cached && !c.keySet && text != "":
		// A scope the store has no answer for is matched and appended
		// to in one statement (see MatchAppender). Its listeners are known
		// only when it returns: until its messages are published (see
		// dispatch), every cache keeps a notified head aside.
		ls, b.Stamp, dr.msgs, dr.appended, err = h.matchAppend(ctx, ma, b, text, sel)
		dr.cached = b.Stamp != nil && !dr.appended
	case caches && cached && !c.keySet:
		ls, b.Stamp, err = mc.MatchCached(ctx, scope)
		dr.cached = b.Stamp != nil
	default:
		ls, err = h.store.Match(ctx, scope)
	}
	if err != nil {
		if dr.appended || errors.Is(err, ErrOutcomeUnknown) {
			return draft{}, fmt.Errorf("dispatch to %q: %w", scope, err)
		}
		return draft{}, fmt.Errorf("dispatch to %q: match: %w", scope, err)
	}
	// reached and owners share one array: at most len(ls) each.
	names := make([]string, 2*len(ls))
	reached, owners := names[:0:len(ls)], names[len(ls):len(ls)]
	if !dr.appended {
		b.Entries = make([]Entry, 0, len(ls))
	}
	var hctx context.Context // the handlers' context, made for the first Handler listener
	for _, l := range ls {
		t := text
		switch {
		case l.Type == Handler && sel.Handlers && !sel.Addressed && !dr.appended:
			if hctx == nil {
				var cancel context.CancelFunc
				hctx, cancel = h.handlerContext(ctx, bg, c.budget)
				defer cancel()
			}
			m := Message{Listener: l.ID, Dispatch: b.Dispatch, Scope: scope, Sender: sender, Text: text, Created: now}
			var stopped bool
			start := time.Now()
			t, stopped, err = h.runChain(hctx, c.handlers, l.ID, m)
			bg.used += time.Since(start)
			if err != nil {
				// A handler's failure on a cached match is worth a retry on
				// a fresh one; a chain stopped by its context or budget is not.
				dr.handlerFailed = !stopped
				return dr, fmt.Errorf("dispatch to %q: %w", scope, err)
			}
		case !sel.Takes(l.Type, l.Person):
			continue
		}
		reached = append(reached, l.ID)
		if l.Owned() {
			owners = append(owners, l.Person)
		} else {
			owners = append(owners, "")
		}
		if t != "" && !dr.appended {
			b.Entries = append(b.Entries, Entry{Listener: l.ID, Text: t})
		}
	}
	dr.b, dr.reached, dr.owners, dr.ls = b, reached, owners, ls
	return dr, nil
}

// matchAppend calls ma.MatchAppend under Registry.HoldAll. The hold is
// left for dispatch to end, once it has published the messages, only when
// it appended without error; on any other return, a panic included, it
// ends here: a hold left behind would keep every cache's notified heads
// aside for good, and its subscribers waiting.
func (h *Hub) matchAppend(ctx context.Context, ma MatchAppender, b *Batch, text string, sel Selection) (ls []ListenerInfo, stamp MatchStamp, msgs []Message, appended bool, err error) {
	h.lives.HoldAll()
	defer func() {
		if !appended || err != nil {
			h.lives.UnholdAll()
		}
	}()
	return ma.MatchAppend(h.originCtx(ctx), b, text, sel)
}

// originCtx returns ctx carrying the hub's Origin, for the store calls
// whose messages the hub publishes itself; ctx itself if the hub has none.
func (h *Hub) originCtx(ctx context.Context) context.Context {
	if h.origin == nil {
		return ctx
	}
	return context.WithValue(ctx, originKey{}, h.origin)
}

// budget is the handler time budget of one dispatch, shared by the prepare
// calls of a Dispatch; it starts when the first handler is about to run.
// limit is its length; used sums the wall time of the handler chains run.
type budget struct {
	deadline time.Time
	limit    time.Duration
	used     time.Duration
}

// handlerContext returns the context handlers run in: ctx, ended also by
// the budget (with ErrBudgetExceeded as its cause): Options.HandlerBudget,
// or lower if the dispatch asked (see Budget).
func (h *Hub) handlerContext(ctx context.Context, bg *budget, asked time.Duration) (context.Context, context.CancelFunc) {
	if bg.deadline.IsZero() {
		bg.limit = h.opts.HandlerBudget
		if asked > 0 && (bg.limit < 0 || asked < bg.limit) {
			bg.limit = asked
		}
		if bg.limit < 0 {
			return ctx, func() {}
		}
		bg.deadline = time.Now().Add(bg.limit)
	}
	return context.WithDeadlineCause(ctx, bg.deadline, ErrBudgetExceeded)
}

// runChain runs the handlers for one Handler listener, each on the result
// of the one before. It calls no handler once ctx has ended (the dispatch's
// context, or the budget), and stops at the first result over
// MaxMessageBytes, so that a growing chain costs at most one step past the
// limit. stopped reports that ctx ended it.
func (h *Hub) runChain(ctx context.Context, handlers []HandlerFunc, id string, m Message) (text string, stopped bool, err error) {
	for i, hf := range handlers {
		if ctx.Err() != nil {
			return "", true, h.chainStopped(ctx, i+1, len(handlers), id)
		}
		out, err := hf(ctx, id, m)
		if ctx.Err() != nil {
			// Past the end, the result (or the handler's error, likely
			// ctx's) does not count.
			return "", true, h.chainStopped(ctx, i+1, len(handlers), id)
		}
		if err != nil {
			return "", false, fmt.Errorf("handler %d for %s: %w", i+1, id, err)
		}
		if len(out) > h.opts.MaxMessageBytes {
			return "", false, fmt.Errorf("handler %d for %s: %w: %d bytes, more than %d", i+1, id, ErrTooLarge, len(out), h.opts.MaxMessageBytes)
		}
		m.Text = out
	}
	if err := h.checkText("handler result for "+id, m.Text); err != nil {
		return "", false, err
	}
	return m.Text, false, nil
}

// chainStopped is the error of a chain whose context ended at handler n
// (1-based) of the chain: ErrBudgetExceeded for the budget, else the
// context's error.
func (h *Hub) chainStopped(ctx context.Context, n, of int, id string) error {
	if errors.Is(context.Cause(ctx), ErrBudgetExceeded) {
		return fmt.Errorf("handlers for %s stopped at %d of %d: %w (Options.HandlerBudget, or the dispatch's Budget)", id, n, of, ErrBudgetExceeded)
	}
	return fmt.Errorf("handlers for %s stopped at %d of %d: %w", id, n, of, ctx.Err())
}

// sameListeners reports whether two Match answers name the same listeners,
// in the same incarnations.
func sameListeners(a, b []ListenerInfo) bool {
	if len(a) != len(b) {
		return false
	}
	seen := make(map[string]time.Time, len(a))
	for _, l := range a {
		seen[l.ID] = l.Created
	}
	for _, l := range b {
		if c, ok := seen[l.ID]; !ok || !c.Equal(l.Created) {
			return false
		}
	}
	return true
}

// Fingerprint returns the SHA-256 fingerprint of a dispatch request, which
// the store keeps with its idempotency key (Batch.Fingerprint). Two
// dispatches by one sender are the same request when they have the same
// concrete scope, the same text (before handlers), the same addressing —
// whether [To] was given, and the set of persons it names, in any order,
// duplicates ignored — and the same handler names in the same order
// ("" for a handler passed without a name, see [NamedHandler]). The
// handlers' results, the time and the listeners reached are not part of
// it: a retry is the same request even if listeners came or went since.
func Fingerprint(scope, text string, addressed bool, to, handlerNames []string) []byte {
	h := sha256.New()
	var buf [binary.MaxVarintLen64]byte
	field := func(s string) {
		h.Write(binary.AppendUvarint(buf[:0], uint64(len(s))))
		h.Write([]byte(s))
	}
	field("moitessier dispatch fingerprint v1")
	field(scope)
	field(text)
	if addressed {
		persons := slices.Clone(to)
		slices.Sort(persons)
		persons = slices.Compact(persons)
		h.Write(binary.AppendUvarint(buf[:0], uint64(len(persons))+1))
		for _, p := range persons {
			field(p)
		}
	} else {
		h.Write([]byte{0})
	}
	h.Write(binary.AppendUvarint(buf[:0], uint64(len(handlerNames))))
	for _, n := range handlerNames {
		field(n)
	}
	return h.Sum(nil)
}
