package live

import (
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// Message is the message type of the tests: a listener and a sequence
// number, as the hub's messages have.
type Message struct {
	Listener string
	Seq      Cursor
	Text     string
}

// Cursor is a sequence number, as the hub's Cursor.
type Cursor = uint64

// anyInc is the incarnation of the messages the tests add: unknown, so
// taken as the cache's (see Cache.Add).
var anyInc time.Time

func seqOf(m *Message) uint64           { return m.Seq }
func listenerOf(m *Message) string      { return m.Listener }
func newLive(id string) *Cache[Message] { return NewCache(id, seqOf) }

// TestLiveOutOfOrder publishes committed messages in shuffled order, as
// concurrent dispatchers do, and checks that the cache ends up holding them
// all, contiguous, without sending readers to the store.
func TestLiveOutOfOrder(t *testing.T) {
	for round := range 200 {
		lv := newLive("l")
		const n = 300
		seqs := make([]Cursor, n)
		for i := range seqs {
			seqs[i] = Cursor(i + 1)
		}
		// Shuffle within windows of 8: commits published microseconds apart.
		for i := 0; i < n; i += 8 {
			w := seqs[i:min(i+8, n)]
			rand.Shuffle(len(w), func(a, b int) { w[a], w[b] = w[b], w[a] })
		}
		for _, s := range seqs {
			lv.Add([]Message{{Listener: "l", Seq: s}}, anyInc, 1024)
		}
		msgs, _, need, _ := lv.Next(0, n)
		if need || len(msgs) != n {
			t.Fatalf("round %d: need store %v, %d cached of %d (held %d)", round, need, len(msgs), n, len(lv.held))
		}
		for i, m := range msgs {
			if m.Seq != Cursor(i+1) {
				t.Fatalf("round %d: cache[%d] has seq %d", round, i, m.Seq)
			}
		}
	}
}

// TestLiveGapNeverFills checks that a gap that does not fill restarts the
// cache, so that readers are sent to the store instead of waiting forever.
func TestLiveGapNeverFills(t *testing.T) {
	lv := newLive("l")
	lv.Add([]Message{{Seq: 1}}, anyInc, 1024)
	for s := Cursor(3); s < 3+maxHeld+1; s++ {
		lv.Add([]Message{{Seq: s}}, anyInc, 1024)
	}
	if _, _, need, _ := lv.Next(1, 10); !need {
		t.Fatal("a reader at 1 is not sent to the store for the missing 2")
	}
	if msgs, _, need, _ := lv.Next(2, 10); need || len(msgs) == 0 || msgs[0].Seq != 3 {
		t.Fatalf("a reader at 2: need %v, %d messages", need, len(msgs))
	}
}

// readCounter is a store whose Read serves seqs 1..n of one listener and
// counts its calls.
type readCounter struct {
	n     Cursor
	reads int
}

func (r *readCounter) Read(_ context.Context, id string, _ time.Time, after Cursor, limit int) ([]Message, error) {
	r.reads++
	var msgs []Message
	for s := after + 1; s <= r.n && len(msgs) < limit; s++ {
		msgs = append(msgs, Message{Listener: id, Seq: s})
	}
	return msgs, nil
}

// TestLiveBehindShareReads: subscribers behind the cache (it restarted
// above them) at different cursors share one store read of the rows they
// all need, and each gets exactly the messages after its own cursor.
func TestLiveBehindShareReads(t *testing.T) {
	lv := newLive("l")
	st := &readCounter{n: 200}
	lv.Observe(200)
	lv.Add([]Message{{Listener: "l", Seq: 150}}, anyInc, 1024) // the cache restarted at 150
	for _, cur := range []Cursor{10, 10, 11, 40, 10} {
		msgs, _, need, _ := lv.Next(cur, 100)
		if need {
			var err error
			if msgs, _, _, err = lv.Fill(context.Background(), st.Read, cur, 100, 1024); err != nil {
				t.Fatal(err)
			}
		}
		if len(msgs) == 0 || msgs[0].Seq != cur+1 {
			t.Fatalf("at cursor %d got %d messages from seq %v", cur, len(msgs), msgs)
		}
		for i, m := range msgs {
			if m.Seq != cur+1+Cursor(i) {
				t.Fatalf("at cursor %d: message %d has seq %d", cur, i, m.Seq)
			}
		}
	}
	if st.reads != 1 {
		t.Fatalf("%d store reads for subscribers at cursors 10, 11 and 40; want 1", st.reads)
	}
}

// TestLiveBehind checks when a dispatch reports local subscribers behind,
// so that it yields to them: once every yieldAfter messages added while
// some of them had not found the cache empty since the last wake-up, and
// never while all of them wait.
func TestLiveBehind(t *testing.T) {
	lv := newLive("l")
	lv.subs.Store(2)
	seq := Cursor(0)
	add := func() bool {
		seq++
		return lv.Add([]Message{{Listener: "l", Seq: seq}}, anyInc, 1024)
	}
	// Both wait: never behind.
	for range 3 * yieldAfter {
		lv.Next(seq, 10)
		lv.Next(seq, 10)
		if add() {
			t.Fatalf("behind at %d with both subscribers waiting", seq)
		}
	}
	// One keeps up, the other is busy: behind every yieldAfter messages.
	reports := 0
	for range 3 * yieldAfter {
		lv.Next(seq, 10)
		if add() {
			reports++
		}
	}
	if reports != 3 {
		t.Fatalf("%d reports in %d messages with one subscriber busy, want 3", reports, 3*yieldAfter)
	}
	// Both wait again: the count starts over.
	lv.Next(seq, 10)
	lv.Next(seq, 10)
	if add() {
		t.Fatal("behind after both caught up")
	}
}

// TestLiveCoalesce checks that wake-ups of many waiting subscribers are
// coalesced: the first message after a quiet spell wakes them at once, one
// that follows within the interval wakes them at its end, not never, and
// a deleted listener wakes them at once.
func TestLiveCoalesce(t *testing.T) {
	lv := newLive("l")
	const n = 1000
	lv.subs.Store(n)
	wait := func(cur Cursor) <-chan struct{} {
		var w <-chan struct{}
		for range n {
			_, w, _, _ = lv.Next(cur, 10)
		}
		return w
	}
	closed := func(w <-chan struct{}) bool {
		select {
		case <-w:
			return true
		default:
			return false
		}
	}
	w := wait(0)
	lv.Add([]Message{{Listener: "l", Seq: 1}}, anyInc, 1024)
	if !closed(w) {
		t.Fatal("the first message after a quiet spell did not wake the subscribers at once")
	}
	w = wait(1)
	// The second message must come within the coalescing interval of the
	// first wake-up. Queueing 1 000 waits can take longer than that on a
	// loaded machine (under -race), so the wake-up is dated afresh just
	// before the Add; if even that one call took longer than the interval,
	// the wake-up was due and is not a failure.
	lv.mu.Lock()
	lv.lastWake = time.Now()
	lv.mu.Unlock()
	start := time.Now()
	lv.Add([]Message{{Listener: "l", Seq: 2}}, anyInc, 1024)
	if closed(w) && time.Since(start) < maxWakeEvery {
		t.Fatal("a message right after another woke 1 000 subscribers again at once")
	}
	select {
	case <-w:
	case <-time.After(time.Second):
		t.Fatal("the coalesced wake-up never came")
	}
	if msgs, _, need, _ := lv.Next(1, 10); need || len(msgs) != 1 || msgs[0].Seq != 2 {
		t.Fatalf("after the wake-up: %d messages, need %v", len(msgs), need)
	}
	w = wait(2)
	lv.Add([]Message{{Listener: "l", Seq: 3}}, anyInc, 1024)
	lv.MarkGone()
	if !closed(w) {
		t.Fatal("deleting the listener did not wake its subscribers at once")
	}
	// Few subscribers are woken at once, always.
	lv = newLive("m")
	lv.subs.Store(2)
	lv.Add([]Message{{Listener: "m", Seq: 1}}, anyInc, 1024)
	_, w, _, _ = lv.Next(1, 10)
	lv.Add([]Message{{Listener: "m", Seq: 2}}, anyInc, 1024)
	if !closed(w) {
		t.Fatal("two subscribers were not woken at once")
	}
}

// TestLiveCoalesceFullBatch: once wakeBatch messages wait for a coalesced
// wake-up, the sleepers are woken at once, and the Add that woke them
// reports them behind, so that the dispatcher yields to them.
func TestLiveCoalesceFullBatch(t *testing.T) {
	lv := newLive("l")
	const n = 1000
	lv.subs.Store(n)
	lv.Add([]Message{{Listener: "l", Seq: 1}}, anyInc, 1024)
	var w <-chan struct{}
	for range n {
		_, w, _, _ = lv.Next(1, 10)
	}
	// Hold the interval open however slowly this runs: the wake-up was
	// just now, and no timer fires until it is over.
	lv.mu.Lock()
	lv.lastWake = time.Now().Add(time.Hour)
	lv.mu.Unlock()
	for seq := uint64(2); seq <= wakeBatch; seq++ {
		if behind := lv.Add([]Message{{Listener: "l", Seq: seq}}, anyInc, 1024); behind {
			t.Fatalf("message %d: the dispatcher was told to yield before a full batch waited", seq)
		}
		select {
		case <-w:
			t.Fatalf("message %d woke the sleepers before a full batch waited", seq)
		default:
		}
	}
	if behind := lv.Add([]Message{{Listener: "l", Seq: wakeBatch + 1}}, anyInc, 1024); !behind {
		t.Fatal("a full batch woke no one, or the dispatcher was not told to yield")
	}
	select {
	case <-w:
	default:
		t.Fatal("a full batch did not wake the sleepers at once")
	}
	if msgs, _, need, _ := lv.Next(1, 1000); need || len(msgs) != wakeBatch {
		t.Fatalf("after the wake-up: %d messages, need %v", len(msgs), need)
	}
}

// TestFillGone: a Fill that finds its cache gone, whether it waited for
// another subscriber's read or its own read was under way, reports it and
// hands over nothing. An empty answer without the report would read as
// "retention removed what lay below the head", and the caller would move
// its cursor past messages it never delivered.
func TestFillGone(t *testing.T) {
	lv := newLive("l")
	lv.Observe(10)
	st := &readCounter{n: 10}
	entered, release := make(chan struct{}), make(chan struct{})
	first := true // read under the fill lock only
	read := func(ctx context.Context, id string, created time.Time, after Cursor, limit int) ([]Message, error) {
		if first {
			first = false
			close(entered)
			<-release
		}
		return st.Read(ctx, id, created, after, limit)
	}
	type result struct {
		msgs []Message
		gone bool
		err  error
	}
	results := make(chan result, 2)
	fill := func() {
		msgs, _, gone, err := lv.Fill(context.Background(), read, 0, 100, 1024)
		results <- result{msgs, gone, err}
	}
	go fill()
	<-entered // the first Fill reads, holding the fill lock
	go fill()
	time.Sleep(50 * time.Millisecond) // the second waits for the lock
	lv.MarkGone()
	close(release)
	for range 2 {
		r := <-results
		if r.err != nil || !r.gone || len(r.msgs) > 0 {
			t.Errorf("Fill of a gone cache: %d messages, gone %v, err %v; want none, gone", len(r.msgs), r.gone, r.err)
		}
	}
}

// TestAddOtherIncarnation: messages of another incarnation of the
// listener than the cache's (a dispatch that published its commit late,
// after the listener was deleted and created again under its ID) are not
// cached, only their numbers taken as a head observed; a cache not yet
// bound is bound by the first messages it takes, so that a subscriber of
// another incarnation does not bind to it.
func TestAddOtherIncarnation(t *testing.T) {
	old, cur := time.Unix(1, 0), time.Unix(2, 0)
	lv := newLive("l")
	lv.Bind(cur)
	lv.Add([]Message{{Listener: "l", Seq: 3, Text: "old"}}, old, 64)
	lv.Add([]Message{{Listener: "l", Seq: 1, Text: "old"}}, old, 64)
	// Not cached, but taken as a head observed: the store may hold this
	// incarnation's messages under those numbers, and readers ask it.
	if msgs, _, need, _ := lv.Next(0, 10); lv.Head() != 3 || !need || len(msgs) != 0 {
		t.Fatalf("after the old incarnation's messages: head %d, %v, need %v; want head 3, nothing cached, need", lv.Head(), msgs, need)
	}
	for s := Cursor(1); s <= 3; s++ {
		lv.Add([]Message{{Listener: "l", Seq: s, Text: "new"}}, cur, 64)
	}
	msgs, _, need, _ := lv.Next(0, 10)
	if need || len(msgs) != 3 {
		t.Fatalf("after the new incarnation's messages 1-3: %v, need %v", msgs, need)
	}
	for _, m := range msgs {
		if m.Text != "new" {
			t.Fatalf("message %d is the old incarnation's", m.Seq)
		}
	}
	// A newer incarnation's (the listener was made again elsewhere):
	// not cached either; readers past head 3 ask the store, after
	// confirming the cache (see TestAddSuspect).
	lv.Add([]Message{{Listener: "l", Seq: 9, Text: "newer"}}, time.Unix(3, 0), 64)
	if msgs, _, need, _ := lv.Next(3, 10); lv.Head() != 9 || !need || len(msgs) != 0 || !lv.Suspect() {
		t.Fatalf("after a newer incarnation's message: head %d, %v, need %v, suspect %v", lv.Head(), msgs, need, lv.Suspect())
	}
	fresh := newLive("l")
	fresh.Add([]Message{{Listener: "l", Seq: 1, Text: "old"}}, old, 64)
	if fresh.Bind(cur) {
		t.Fatal("a cache that took the old incarnation's message was bound to the new one")
	}
}

// TestCorrectStaleHead: a head that the store shows stale (a deleted
// incarnation's, observed late) goes back to the store's head, or to the
// newest message the cache holds if that is higher, and the readers at it
// wait; a head raised since the read that showed it stale, or not above
// the store's, is left as it is.
func TestCorrectStaleHead(t *testing.T) {
	c := newLive("l")
	c.Observe(5) // the old incarnation's head
	c.Add([]Message{{Listener: "l", Seq: 1}}, anyInc, 64)
	c.Correct(5, 0)
	if h := c.Head(); h != 1 {
		t.Fatalf("head %d after Correct(5, 0) with message 1 cached, want 1", h)
	}
	if msgs, wake, need, _ := c.Next(1, 16); need || len(msgs) > 0 || wake == nil {
		t.Fatalf("at the corrected head: %v, need %v; want a wait", msgs, need)
	}
	c.Add([]Message{{Listener: "l", Seq: 2}}, anyInc, 64)
	if msgs, _, need, _ := c.Next(1, 16); need || len(msgs) != 1 || msgs[0].Seq != 2 {
		t.Fatalf("at 1 after message 2: %v, need %v", msgs, need)
	}
	c.Observe(9)
	c.Correct(5, 2)
	c.Correct(9, 12)
	if h := c.Head(); h != 9 {
		t.Fatalf("head %d, want 9: raised since the read, and not above the store's", h)
	}
}

// TestCachesDropIf: Caches reports each cache with the incarnation it is
// bound to, and DropIf drops a cache (its subscribers are woken to find it
// gone) only while it is still its listener's: one that replaced it since
// is left alone.
func TestCachesDropIf(t *testing.T) {
	r := NewRegistry(seqOf, listenerOf)
	t1 := time.Unix(1, 0)
	c := r.Acquire("a")
	c.Bind(t1)
	r.Acquire("b")
	got := r.Caches()
	slices.SortFunc(got, func(x, y Bound[Message]) int { return strings.Compare(x.ID, y.ID) })
	if len(got) != 2 || got[0].Cache != c || !got[0].Created.Equal(t1) || got[1].ID != "b" || !got[1].Created.IsZero() {
		t.Fatalf("Caches = %+v", got)
	}
	r.Replace(c)
	fresh := r.Acquire("a")
	if r.DropIf(c) {
		t.Fatal("dropped a cache that another replaced")
	}
	if _, _, _, gone := fresh.Next(0, 10); gone {
		t.Fatal("the cache that replaced it is gone")
	}
	if !r.DropIf(fresh) {
		t.Fatal("kept a cache that is still its listener's")
	}
	if _, _, _, gone := fresh.Next(0, 10); !gone {
		t.Fatal("the dropped cache is not gone")
	}
	if r.Len() != 1 {
		t.Fatalf("%d caches left, want b's", r.Len())
	}
}

// TestAddSuspect: messages of another incarnation than a bound cache's
// mark it Suspect, until a subscriber confirms it (Confirm).
func TestAddSuspect(t *testing.T) {
	lv := newLive("l")
	lv.Bind(time.Unix(2, 0))
	lv.Add([]Message{{Listener: "l", Seq: 1}}, time.Unix(2, 0), 64)
	if lv.Suspect() {
		t.Fatal("suspect after its own incarnation's message")
	}
	for _, other := range []time.Time{time.Unix(1, 0), time.Unix(3, 0)} {
		lv.Add([]Message{{Listener: "l", Seq: 4}}, other, 64)
		if !lv.Suspect() || lv.Head() != 4 {
			t.Fatalf("after a message of incarnation %v: suspect %v, head %d; want suspect, head 4", other, lv.Suspect(), lv.Head())
		}
		_ = lv.Confirm(func() error { return nil })
		if lv.Suspect() {
			t.Fatal("suspect after Confirm")
		}
	}
}

// TestObserveOther: a head observed with another incarnation than the
// cache's (a notification of a listener made again elsewhere) marks the
// cache Suspect, so that its readers ask the store before they read past
// it; one of the cache's own incarnation, or of none known, does not, and
// one observed before the cache is bound marks it only once it is bound to
// another (see TestOtherBeforeBind). Through the Registry, as the hub
// observes a store's notifications, held or not.
func TestObserveOther(t *testing.T) {
	r := NewRegistry(func(m *Message) uint64 { return uint64(m.Seq) }, func(m *Message) string { return m.Listener })
	lv := r.Acquire("l")
	defer r.Release(lv)
	observe := func(seq uint64, created time.Time) {
		r.Observe(1, func(int) (string, uint64, time.Time) { return "l", seq, created })
	}
	observe(1, time.Unix(1, 0))
	if lv.Suspect() {
		t.Fatal("suspect after a head observed before the cache was bound")
	}
	lv.Bind(time.Unix(2, 0))
	if !lv.Suspect() {
		t.Fatal("not suspect once bound to another incarnation than a head observed before")
	}
	if err := lv.Confirm(func() error { return nil }); err != nil || lv.Suspect() {
		t.Fatalf("Confirm: %v, suspect %v", err, lv.Suspect())
	}
	observe(2, time.Unix(2, 0))
	observe(3, time.Time{})
	if lv.Suspect() || lv.Head() != 3 {
		t.Fatalf("suspect %v, head %d after heads of its own and of no known incarnation; want not suspect, head 3", lv.Suspect(), lv.Head())
	}
	_, wake, need, _ := lv.Next(3, 16)
	if need || wake == nil {
		t.Fatal("a reader at the head does not wait")
	}
	observe(3, time.Unix(3, 0)) // not past the head
	select {
	case <-wake:
	default:
		t.Fatal("a head of another incarnation did not wake the reader at the head")
	}
	if _, _, need, _ := lv.Next(3, 16); !lv.Suspect() || !need {
		t.Fatalf("suspect %v, need %v at the head after a head of another incarnation; want both", lv.Suspect(), need)
	}
	calls := 0
	if err := lv.Confirm(func() error { calls++; return nil }); err != nil || calls != 1 || lv.Suspect() {
		t.Fatalf("Confirm: %v, %d checks, suspect %v; want one check, not suspect", err, calls, lv.Suspect())
	}
	if err := lv.Confirm(func() error { calls++; return nil }); err != nil || calls != 1 {
		t.Fatalf("Confirm of a cache not suspect: %v, %d checks; want none", err, calls)
	}
	observe(4, time.Unix(3, 0))
	if !lv.Suspect() || lv.Head() != 4 {
		t.Fatalf("suspect %v, head %d after a head of another incarnation; want suspect, head 4", lv.Suspect(), lv.Head())
	}
	_ = lv.Confirm(func() error { return nil })
	r.HoldAll()
	observe(5, time.Unix(3, 0))
	r.UnholdAll()
	if !lv.Suspect() || lv.Head() != 5 {
		t.Fatalf("suspect %v, head %d after a head of another incarnation kept aside while held; want suspect, head 5", lv.Suspect(), lv.Head())
	}
}

// TestFillAtHeadCountsNoWaiter: a Fill that finds nothing to read (its
// reader at the head, or another reader filled the cache first) neither
// hands out the wake channel nor counts its reader as waiting: the reader
// counts itself when it next waits, and a count above the readers would
// put off their wake-ups (coalescing) and take busy ones for asleep.
func TestFillAtHeadCountsNoWaiter(t *testing.T) {
	lv := newLive("l")
	lv.Add([]Message{{Listener: "l", Seq: 1}, {Listener: "l", Seq: 2}}, anyInc, 64)
	read := func(context.Context, string, time.Time, uint64, int) ([]Message, error) {
		t.Fatal("Fill read the store with nothing to read")
		return nil, nil
	}
	if msgs, _, gone, err := lv.Fill(context.Background(), read, 2, 16, 64); err != nil || gone || len(msgs) != 0 {
		t.Fatalf("Fill at the head = %v, gone %v, %v; want nothing", msgs, gone, err)
	}
	if lv.waiting != 0 {
		t.Fatalf("%d waiting after a Fill at the head, want 0", lv.waiting)
	}
}

// TestAddOtherIncarnationWakes: messages of another incarnation, even
// numbered at or below the head (a listener made again, numbered from 1),
// wake the cache's readers, which confirm it (Next sends them to).
func TestAddOtherIncarnationWakes(t *testing.T) {
	lv := newLive("l")
	lv.Bind(time.Unix(2, 0))
	lv.Add([]Message{{Listener: "l", Seq: 1}, {Listener: "l", Seq: 2}, {Listener: "l", Seq: 3}}, time.Unix(2, 0), 64)
	_, wake, need, _ := lv.Next(3, 16)
	if need || wake == nil {
		t.Fatal("a reader at the head does not wait")
	}
	lv.Add([]Message{{Listener: "l", Seq: 1}}, time.Unix(3, 0), 64)
	select {
	case <-wake:
	default:
		t.Fatal("a message of another incarnation below the head did not wake the reader at the head")
	}
	if _, _, need, _ := lv.Next(3, 16); !need {
		t.Fatal("a reader of a suspect cache at its head is not sent to confirm it")
	}
}

// TestConfirmMarkedMeanwhile: a head of another incarnation observed while
// a reader's check of the store runs (the listener made again since what
// the check read) leaves the cache suspect: the readers confirm it again
// rather than wait at a head that may be another incarnation's.
func TestConfirmMarkedMeanwhile(t *testing.T) {
	lv := newLive("l")
	lv.Bind(time.Unix(2, 0))
	lv.Add([]Message{{Listener: "l", Seq: 1}, {Listener: "l", Seq: 2}, {Listener: "l", Seq: 3}}, time.Unix(2, 0), 64)
	lv.Other(time.Unix(1, 0)) // a late notification of an older incarnation
	err := lv.Confirm(func() error {
		// The store says incarnation 2; meanwhile it is made again.
		lv.Other(time.Unix(3, 0))
		lv.Observe(1)
		return nil
	})
	if err != nil || !lv.Suspect() {
		t.Fatalf("Confirm = %v, suspect %v; want the cache still suspect", err, lv.Suspect())
	}
	if _, wake, need, _ := lv.Next(3, 16); !need || wake != nil {
		t.Fatal("a reader at the head waits on a cache marked again while it was confirmed")
	}
}

// TestOtherBeforeBind: a head of another incarnation than the one a cache
// is then bound to, observed between the cache's Acquire and its Bind (a
// subscriber's join runs meanwhile), leaves the cache Suspect, as one
// observed after Bind does; heads of its own incarnation alone do not.
func TestOtherBeforeBind(t *testing.T) {
	mine, other := time.Unix(2, 0), time.Unix(3, 0)
	for _, c := range []struct {
		name    string
		heard   []time.Time
		bind    func(lv *Cache[Message])
		suspect bool
	}{
		{"other", []time.Time{other}, func(lv *Cache[Message]) { lv.Bind(mine) }, true},
		{"mine", []time.Time{mine, mine}, func(lv *Cache[Message]) { lv.Bind(mine) }, false},
		{"both", []time.Time{mine, other, mine}, func(lv *Cache[Message]) { lv.Bind(mine) }, true},
		{"other then mine", []time.Time{other, mine}, func(lv *Cache[Message]) { lv.Bind(mine) }, true},
		{"none", nil, func(lv *Cache[Message]) { lv.Bind(mine) }, false},
		// Messages of this hub's dispatch bind a cache no subscriber bound.
		{"bound by Add", []time.Time{other}, func(lv *Cache[Message]) {
			lv.Add([]Message{{Listener: "l", Seq: 1}}, mine, 64)
		}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			lv := newLive("l")
			for _, h := range c.heard {
				lv.Other(h)
				lv.Observe(1)
			}
			c.bind(lv)
			if lv.Suspect() != c.suspect {
				t.Fatalf("suspect %v; want %v", lv.Suspect(), c.suspect)
			}
			if !c.suspect {
				return
			}
			if _, wake, need, _ := lv.Next(1, 16); !need || wake != nil {
				t.Fatal("a reader at the head waits on a suspect cache")
			}
			// Bound, the cache forgets what it heard before: confirmed, it is
			// suspect again only on news.
			if err := lv.Confirm(func() error { return nil }); err != nil || lv.Suspect() {
				t.Fatalf("Confirm = %v, suspect %v", err, lv.Suspect())
			}
			lv.Other(mine)
			if lv.Suspect() {
				t.Fatal("a head of its own incarnation marked a confirmed cache")
			}
		})
	}
}

// TestClosedByRegistry: a cache the Registry's Close ends is Closed (the
// hub shut down); one whose listener went first is not, even once the
// Registry closes, so that its readers learn the listener is gone.
func TestClosedByRegistry(t *testing.T) {
	r := NewRegistry(func(m *Message) uint64 { return uint64(m.Seq) }, func(m *Message) string { return m.Listener })
	deleted, open := r.Acquire("deleted"), r.Acquire("open")
	r.Drop("deleted")
	r.Close()
	for _, c := range []struct {
		lv     *Cache[Message]
		closed bool
	}{{deleted, false}, {open, true}} {
		if _, _, _, gone := c.lv.Next(0, 16); !gone || c.lv.Closed() != c.closed {
			t.Errorf("cache %s: gone %v, closed %v; want gone, closed %v", c.lv.id, gone, c.lv.Closed(), c.closed)
		}
	}
}
