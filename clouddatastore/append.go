package clouddatastore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"cloud.google.com/go/datastore"

	"github.com/likestripes/moitessier"
)

// ErrCommitLimit is wrapped (with moitessier.ErrTooLarge) by the
// [LimitError] of a dispatch that cannot be written in one Datastore
// commit.
var ErrCommitLimit = errors.New("clouddatastore: dispatch does not fit in one commit")

// LimitError reports a dispatch that one Datastore commit cannot hold: it
// would write more entities than Config.MaxMutations, more bytes than
// Config.MaxCommitBytes, or a message entity larger than Datastore's
// 1 MiB. Nothing was written. It matches ErrCommitLimit and
// moitessier.ErrTooLarge with errors.Is.
type LimitError struct {
	// What is "entities", "bytes" or "entity bytes".
	What string
	// Need is what the dispatch needs; Max the limit.
	Need, Max int
}

func (e *LimitError) Error() string {
	switch e.What {
	case "entities":
		return fmt.Sprintf("clouddatastore: dispatch needs %d entity writes in one commit, more than %d (a message and a head per listener reached): fewer listeners per scope, or raise Config.MaxMutations if the database allows", e.Need, e.Max)
	case "entity bytes":
		return fmt.Sprintf("clouddatastore: a message entity of about %d bytes is larger than Datastore's %d", e.Need, e.Max)
	}
	return fmt.Sprintf("clouddatastore: dispatch needs about %d bytes in one commit, more than %d: smaller texts, fewer listeners per scope, or raise Config.MaxCommitBytes if the database allows", e.Need, e.Max)
}

// Is matches ErrCommitLimit and moitessier.ErrTooLarge.
func (e *LimitError) Is(target error) bool {
	return target == ErrCommitLimit || target == moitessier.ErrTooLarge
}

// maxEntityBytes is Datastore's largest entity.
const maxEntityBytes = 1_048_572

// msgBytes estimates the size of a message entity, key included.
func msgBytes(b *moitessier.Batch, e *moitessier.Entry) int {
	return 160 + 2*len(e.Listener) + len(e.Text) + len(b.Scope) + len(b.Sender) + len(b.Dispatch)
}

// listenerBytes estimates the size of a listener entity.
func listenerBytes(id string, l *listenerEnt) int {
	n := 200 + 2*len(id) + len(l.Person) + len(l.Client)
	for _, sc := range l.Scopes {
		n += 16 + len(sc)
	}
	return n
}

// Appends are combined. A store runs at most Config.Writers append
// transactions at once, and never two that write the same listener: a
// queued Append waits while a running transaction writes one of its
// listeners (or an earlier queued Append that waits does), so the store's
// own transactions never conflict and each listener's Appends go in queue
// order. A free writer takes every queued Append it may, up to
// Config.MaxCombine and one commit's limits, into one transaction, so a
// busy listener takes one transaction per round of its writers however
// many dispatches wait. Appends with an idempotency key go alone.

type combiner struct {
	mu      sync.Mutex
	queue   []*pending
	busy    map[string]int
	running int
}

type pending struct {
	b        *moitessier.Batch
	ids      []string // distinct listeners
	muts     int      // entity writes, counting one per listener
	bytes    int      // estimated, counting a small listener entity
	msgs     []moitessier.Message
	replayed bool
	err      error
	done     chan struct{}
	dropped  bool // the caller stopped waiting before it was taken; guarded by combiner.mu
	taken    bool // a writer took it; guarded by combiner.mu
}

// Append writes a batch atomically in one transaction: it reads the heads
// of the batch's listeners, writes each message with its listener's next
// sequence number and the new heads, and records the idempotency key if
// any; see moitessier.Store and the package documentation. Concurrent
// Appends of one store are combined (see Config.Writers). A batch that
// does not fit in one commit fails with a *LimitError and writes nothing.
func (s *Store) Append(ctx context.Context, b *moitessier.Batch) ([]moitessier.Message, bool, error) {
	const op = "append"
	if err := s.check(op); err != nil {
		return nil, false, err
	}
	if b.Key == "" && len(b.Entries) == 0 {
		return nil, false, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, false, s.wrap(op, err) // once queued, the batch may be written whatever becomes of ctx
	}
	p, err := s.newPending(b)
	if err != nil {
		return nil, false, s.wrap(op, fmt.Errorf("dispatch %s to %q: %w", b.Dispatch, b.Scope, err))
	}
	c := &s.cmb
	c.mu.Lock()
	c.queue = append(c.queue, p)
	start := c.running < s.cfg.Writers
	if start {
		c.running++
	}
	c.mu.Unlock()
	if start {
		go s.writeGroups()
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		c.mu.Lock()
		taken := p.taken
		p.dropped = !taken
		c.mu.Unlock()
		if taken {
			return nil, false, s.wrap(op, fmt.Errorf("dispatch %s to %q: %w: %w while it was being written", b.Dispatch, b.Scope, moitessier.ErrOutcomeUnknown, ctx.Err()))
		}
		return nil, false, s.wrap(op, fmt.Errorf("dispatch %s to %q: %w", b.Dispatch, b.Scope, ctx.Err()))
	}
	if p.err != nil {
		return nil, false, s.wrap(op, fmt.Errorf("dispatch %s to %q: %w", b.Dispatch, b.Scope, p.err))
	}
	return p.msgs, p.replayed, nil
}

// newPending sizes a batch and fails if it cannot fit in one commit.
func (s *Store) newPending(b *moitessier.Batch) (*pending, error) {
	p := &pending{b: b, done: make(chan struct{})}
	seen := make(map[string]bool, len(b.Entries))
	for i := range b.Entries {
		e := &b.Entries[i]
		if !seen[e.Listener] {
			seen[e.Listener] = true
			p.ids = append(p.ids, e.Listener)
			p.bytes += 300 + 2*len(e.Listener)
		}
		n := msgBytes(b, e)
		if n > maxEntityBytes {
			return nil, &LimitError{What: "entity bytes", Need: n, Max: maxEntityBytes}
		}
		p.bytes += n
	}
	p.muts = len(p.ids) + len(b.Entries)
	if b.Key != "" {
		p.muts++
		p.bytes += 200 + len(b.Sender) + len(b.Key) + 60*len(b.Entries)
	}
	if p.muts > s.cfg.MaxMutations {
		return nil, &LimitError{What: "entities", Need: p.muts, Max: s.cfg.MaxMutations}
	}
	if p.bytes > s.cfg.MaxCommitBytes {
		return nil, &LimitError{What: "bytes", Need: p.bytes, Max: s.cfg.MaxCommitBytes}
	}
	return p, nil
}

// writeGroups sends queued batches, a group per transaction, until none
// can be taken.
func (s *Store) writeGroups() {
	c := &s.cmb
	for {
		c.mu.Lock()
		group, ids := s.takeGroup()
		if len(group) == 0 {
			c.running--
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		s.writeGroup(group)
		c.mu.Lock()
		for _, id := range ids {
			if c.busy[id]--; c.busy[id] <= 0 {
				delete(c.busy, id)
			}
		}
		c.mu.Unlock()
	}
}

// takeGroup removes from the queue the batches the next transaction
// carries and marks their listeners busy. Called with cmb.mu held.
func (s *Store) takeGroup() ([]*pending, []string) {
	c := &s.cmb
	if c.busy == nil {
		c.busy = map[string]int{}
	}
	var (
		group    []*pending
		ids      []string
		inGroup  = map[string]bool{}
		reserved = map[string]bool{}
		muts     int
		bytes    int
		full     bool
	)
	kept := c.queue[:0]
	for _, p := range c.queue {
		if p.dropped {
			close(p.done)
			continue
		}
		take := !full
		for _, id := range p.ids {
			if c.busy[id] > 0 || reserved[id] {
				take = false
				break
			}
		}
		if take && len(group) > 0 {
			if p.b.Key != "" || group[0].b.Key != "" {
				take = false
			} else {
				add := len(p.b.Entries)
				for _, id := range p.ids {
					if !inGroup[id] {
						add++
					}
				}
				if len(group) >= s.cfg.MaxCombine || muts+add > s.cfg.MaxMutations || bytes+p.bytes > s.cfg.MaxCommitBytes {
					take, full = false, true
				}
			}
		}
		if !take {
			// Later batches of these listeners wait behind this one.
			for _, id := range p.ids {
				reserved[id] = true
			}
			kept = append(kept, p)
			continue
		}
		p.taken = true
		group = append(group, p)
		muts += len(p.b.Entries)
		bytes += p.bytes
		if p.b.Key != "" {
			muts++
		}
		for _, id := range p.ids {
			if !inGroup[id] {
				inGroup[id] = true
				ids = append(ids, id)
				muts++
			}
		}
	}
	clear(c.queue[len(kept):])
	c.queue = kept
	for _, id := range ids {
		c.busy[id]++
	}
	return group, ids
}

// errSplit reports a group whose listener entities, read in the
// transaction, made it larger than one commit: it is sent in halves.
var errSplit = errors.New("group larger than one commit")

// writeGroup appends a group of batches in one transaction and hands each
// batch its result.
func (s *Store) writeGroup(group []*pending) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RetryFor+s.cfg.ProbeTimeout)
	defer cancel()
	res, err := s.appendGroup(ctx, group)
	if errors.Is(err, errSplit) {
		h := len(group) / 2
		s.writeGroup(group[:h])
		s.writeGroup(group[h:])
		return
	}
	for i, p := range group {
		if err != nil {
			p.err = err
		} else {
			p.msgs, p.replayed, p.err = res[i].msgs, res[i].replayed, res[i].err
		}
		close(p.done)
	}
}

type groupResult struct {
	msgs     []moitessier.Message
	replayed bool
	err      error
}

// appendGroup runs the transaction of a group and, once it committed,
// publishes the new heads.
func (s *Store) appendGroup(ctx context.Context, group []*pending) ([]groupResult, error) {
	var (
		res   []groupResult
		heads []moitessier.Head
	)
	err := s.runTx(ctx, "append", func(tx *datastore.Transaction) error {
		var err error
		res, heads, err = s.appendTx(tx, group)
		return err
	})
	if errors.Is(err, errRollback) {
		return res, nil // replayed or stale: nothing to write
	}
	if err != nil {
		return nil, err
	}
	s.publish(heads)
	return res, nil
}

// appendTx does the reads and writes of one group inside tx.
func (s *Store) appendTx(tx *datastore.Transaction, group []*pending) ([]groupResult, []moitessier.Head, error) {
	res := make([]groupResult, len(group))
	var (
		keys    []*datastore.Key
		ents    []any
		lidx    = map[string]int{} // listener id -> index in keys and les
		ids     []string
		meta    metaEnt
		scopeAt = map[string]int{}
		idem    keyEnt
		idemAt  = -1
	)
	for _, p := range group {
		for _, id := range p.ids {
			if _, ok := lidx[id]; !ok {
				lidx[id] = len(ids)
				ids = append(ids, id)
			}
		}
	}
	les := make([]listenerEnt, len(ids))
	for i, id := range ids {
		keys = append(keys, s.listenerKey(id))
		ents = append(ents, &les[i])
	}
	var stamped []string // distinct scopes of stamped batches
	for _, p := range group {
		if _, ok := p.b.Stamp.(matchStamp); ok {
			if _, dup := scopeAt[p.b.Scope]; !dup {
				scopeAt[p.b.Scope] = -1
				stamped = append(stamped, p.b.Scope)
			}
		}
	}
	scs := make([]scopeEnt, len(stamped))
	if len(stamped) > 0 {
		keys = append(keys, s.metaKey())
		ents = append(ents, &meta)
	}
	for i, sc := range stamped {
		scopeAt[sc] = len(keys)
		keys = append(keys, s.scopeKey(sc))
		ents = append(ents, &scs[i])
	}
	keyed := len(group) == 1 && group[0].b.Key != ""
	if keyed {
		idemAt = len(keys)
		keys = append(keys, s.idemKey(group[0].b.Sender, group[0].b.Key))
		ents = append(ents, &idem)
	}
	found, err := txLookup(tx, keys, ents)
	if err != nil {
		return nil, nil, err
	}
	if keyed && found[idemAt] && idem.At >= toNS(group[0].b.KeySince) {
		if !group[0].b.SameRequest(idem.FP) {
			res[0].err = fmt.Errorf("key %q: %w", group[0].b.Key, moitessier.ErrIdempotencyMismatch)
			return res, nil, errRollback
		}
		msgs, err := s.replay(tx, &idem)
		if err != nil {
			return nil, nil, err
		}
		res[0] = groupResult{msgs: msgs, replayed: true}
		return res, nil, errRollback
	}
	// Which batches were matched before listeners on their scope changed.
	stale := make([]bool, len(group))
	anyLive := false
	for i, p := range group {
		if st, ok := p.b.Stamp.(matchStamp); ok {
			v := int64(0)
			if k := scopeAt[p.b.Scope]; found[k] {
				v = ents[k].(*scopeEnt).Version
			}
			if meta.Patterns != st.patterns || v != st.scope {
				stale[i] = true
				res[i].err = &staleError{}
				s.mc.Drop(p.b.Scope)
				continue
			}
		}
		anyLive = true
	}
	if !anyLive {
		return res, nil, errRollback
	}
	// The exact size, now that the listener entities are read.
	size := 0
	muts := 0
	for i, id := range ids {
		if found[i] {
			size += listenerBytes(id, &les[i])
			muts++
		}
	}
	for i, p := range group {
		if stale[i] {
			continue
		}
		for k := range p.b.Entries {
			size += msgBytes(p.b, &p.b.Entries[k])
		}
		muts += len(p.b.Entries)
		if p.b.Key != "" {
			muts++
		}
	}
	if size > s.cfg.MaxCommitBytes || muts > s.cfg.MaxMutations {
		if len(group) > 1 {
			return nil, nil, errSplit
		}
		if muts > s.cfg.MaxMutations {
			res[0].err = &LimitError{What: "entities", Need: muts, Max: s.cfg.MaxMutations}
		} else {
			res[0].err = &LimitError{What: "bytes", Need: size, Max: s.cfg.MaxCommitBytes}
		}
		return res, nil, errRollback
	}
	now := s.cfg.Now().UnixNano()
	written := make([]bool, len(ids))
	var (
		mkeys []*datastore.Key
		mvals []*msgEnt
	)
	for i, p := range group {
		if stale[i] {
			continue
		}
		b := p.b
		msgs := make([]moitessier.Message, 0, len(b.Entries))
		for _, e := range b.Entries {
			li := lidx[e.Listener]
			if !found[li] {
				continue // the listener no longer exists
			}
			le := &les[li]
			le.Head++
			written[li] = true
			mkeys = append(mkeys, s.msgKey(s.genKey(genName(e.Listener, le.Inc)), le.Head))
			mvals = append(mvals, &msgEnt{Dispatch: b.Dispatch, Scope: b.Scope, Sender: b.Sender, Text: e.Text, Created: toNS(b.Created)})
			msgs = append(msgs, moitessier.Message{
				Listener: e.Listener, Seq: moitessier.Cursor(le.Head), Dispatch: b.Dispatch,
				Scope: b.Scope, Sender: b.Sender, Text: e.Text, Created: b.Created,
			})
		}
		res[i].msgs = msgs
		if b.Key != "" {
			rec := &keyEnt{At: toNS(b.Created), FP: b.Fingerprint, Gens: make([]string, len(msgs)), Seqs: make([]int64, len(msgs))}
			for k, m := range msgs {
				rec.Gens[k], rec.Seqs[k] = genName(m.Listener, les[lidx[m.Listener]].Inc), int64(m.Seq)
			}
			if _, err := tx.Put(keys[idemAt], rec); err != nil {
				return nil, nil, err
			}
		}
	}
	var heads []moitessier.Head
	for i, id := range ids {
		if !written[i] {
			continue
		}
		les[i].Touched = now
		if _, err := tx.Put(keys[i], &les[i]); err != nil {
			return nil, nil, err
		}
		heads = append(heads, moitessier.Head{Listener: id, Seq: moitessier.Cursor(les[i].Head), Created: fromNS(les[i].Created)})
	}
	if len(mkeys) > 0 {
		if _, err := tx.PutMulti(mkeys, mvals); err != nil {
			return nil, nil, err
		}
	}
	return res, heads, nil
}

// replay returns the messages of a recorded keyed dispatch that still
// exist: those whose listener is in the same incarnation and that
// retention has not removed.
func (s *Store) replay(tx *datastore.Transaction, rec *keyEnt) ([]moitessier.Message, error) {
	if len(rec.Gens) == 0 {
		return nil, nil
	}
	n := len(rec.Gens)
	keys := make([]*datastore.Key, 0, 2*n)
	ents := make([]any, 0, 2*n)
	ms := make([]msgEnt, n)
	ls := make([]listenerEnt, n)
	ids := make([]string, n)
	for i, gen := range rec.Gens {
		keys = append(keys, s.msgKey(s.genKey(gen), rec.Seqs[i]))
		ents = append(ents, &ms[i])
	}
	for i, gen := range rec.Gens {
		ids[i] = gen[:strings.LastIndexByte(gen, '/')]
		keys = append(keys, s.listenerKey(ids[i]))
		ents = append(ents, &ls[i])
	}
	found, err := txLookup(tx, keys, ents)
	if err != nil {
		return nil, err
	}
	var out []moitessier.Message
	for i, gen := range rec.Gens {
		if !found[i] || !found[n+i] || genName(ids[i], ls[i].Inc) != gen {
			continue
		}
		m := &ms[i]
		out = append(out, moitessier.Message{
			Listener: ids[i], Seq: moitessier.Cursor(rec.Seqs[i]), Dispatch: m.Dispatch,
			Scope: m.Scope, Sender: m.Sender, Text: m.Text, Created: fromNS(m.Created),
		})
	}
	return out, nil
}

// staleError reports a batch matched before listeners on its scope were
// created or deleted; it wrote nothing.
type staleError struct{}

func (*staleError) Error() string {
	return "matched before listeners on the scope were created or deleted"
}

func (*staleError) Unwrap() error { return moitessier.ErrStale }

// publish queues the heads an append wrote for the other processes: a lost
// wake-up costs latency, never a message.
func (s *Store) publish(heads []moitessier.Head) {
	if s.wake == nil || len(heads) == 0 || s.closed.Load() {
		return
	}
	if err := s.wake.Publish(heads); err != nil && !s.closed.Load() {
		s.cfg.Logger.Warn("clouddatastore: publish wake-ups", "err", err)
	}
}
