package storetest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
)

// checker verifies a stream of deliveries to one subscriber: every seq once,
// in order, with no gap, and each dispatcher's messages in its order.
type checker struct {
	mu      sync.Mutex
	next    moitessier.Cursor
	lastBy  map[string]int
	count   int
	err     error
	arrived chan struct{}
}

func newChecker() *checker {
	return &checker{next: 1, lastBy: map[string]int{}, arrived: make(chan struct{}, 1)}
}

func (c *checker) respond(ctx context.Context, msgs []moitessier.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range msgs {
		if c.err != nil {
			break
		}
		if m.Seq != c.next {
			c.err = fmt.Errorf("got seq %d, want %d", m.Seq, c.next)
			break
		}
		c.next++
		who, n, _ := strings.Cut(m.Text, ":")
		i, _ := strconv.Atoi(n)
		if last, ok := c.lastBy[who]; ok && i != last+1 {
			c.err = fmt.Errorf("dispatcher %s: message %d after %d", who, i, last)
		}
		c.lastBy[who] = i
		c.count++
	}
	select {
	case c.arrived <- struct{}{}:
	default:
	}
	return nil
}

func (c *checker) wait(tb testing.TB, n int) {
	tb.Helper()
	deadline := time.After(60 * time.Second)
	for {
		c.mu.Lock()
		got, err := c.count, c.err
		c.mu.Unlock()
		if err != nil {
			tb.Fatal(err)
		}
		if got >= n {
			return
		}
		select {
		case <-c.arrived:
		case <-deadline:
			tb.Fatalf("waited 60s: %d of %d messages", got, n)
		}
	}
}

// testConcurrent runs many dispatchers and listeners at once (the suite runs
// under -race): no loss, no duplicates, per-listener order kept.
func testConcurrent(t *testing.T, h Harness) {
	s := newStore(t, h)
	hub := newHub(t, s, moitessier.Options{BatchLimit: 7, CacheSize: 16})
	const dispatchers, each = 4, 150
	type sub struct {
		l *moitessier.Listener
		c *checker
	}
	var subs []sub
	add := func(c moitessier.Conditions, n int) {
		for i := range n {
			c := c
			c.Client = fmt.Sprint("c", i)
			subs = append(subs, sub{mustListener(t, hub, c), newChecker()})
		}
	}
	add(moitessier.Conditions{Person: "p", Type: moitessier.Shared, Scope: "load.room"}, 6)
	add(moitessier.Conditions{Person: "p", Type: moitessier.Shared, Scope: "load.*"}, 3)
	add(moitessier.Conditions{Person: "p", Type: moitessier.Shared, Scope: "load.>"}, 2)
	for _, s := range subs {
		listen(t, s.l, s.c, 0)
	}
	// Late subscribers join while the dispatches run: each must see exactly
	// the messages after the point it joined, with no gap.
	type lateSub struct {
		c    *checker
		from moitessier.Cursor
	}
	var (
		lateMu sync.Mutex
		lates  []lateSub
		lateWG sync.WaitGroup
	)
	for i := range 4 {
		lateWG.Add(1)
		go func() {
			defer lateWG.Done()
			time.Sleep(time.Duration(i+1) * 3 * time.Millisecond)
			l, err := hub.NewListener(context.Background(), moitessier.Conditions{Person: "late", Client: fmt.Sprint(i), Type: moitessier.Shared, Scope: "load.room"})
			if err != nil {
				t.Error(err)
				return
			}
			from, err := l.Cursor(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			c := newChecker()
			c.next = from + 1
			listen(t, l, c, moitessier.Resume)
			lateMu.Lock()
			lates = append(lates, lateSub{c, from})
			lateMu.Unlock()
		}()
	}
	var wg sync.WaitGroup
	for d := range dispatchers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := hub.Dispatch(context.Background(), "p", "load.room", fmt.Sprintf("d%d:%d", d, i)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	lateWG.Wait()
	for _, s := range subs {
		s.c.wait(t, dispatchers*each)
	}
	for _, ls := range lates {
		ls.c.wait(t, dispatchers*each-int(ls.from))
	}
	for i, s := range subs {
		s.c.mu.Lock()
		if s.c.count != dispatchers*each || s.c.err != nil {
			t.Errorf("subscriber %d: %d messages, %v", i, s.c.count, s.c.err)
		}
		s.c.mu.Unlock()
	}
	// A subscriber resuming from its server-held cursor while dispatches
	// run: still exact. (Two hubs on one store hear each other only through
	// a Watcher; that is the Share test.)
	late := mustListener(t, hub, moitessier.Conditions{Person: "q", Type: moitessier.Shared, Scope: "load.room"})
	lc := newChecker()
	lc.next = dispatchers*each + 1
	listen(t, late, lc, moitessier.Resume)
	for i := range 100 {
		mustDispatch(t, hub, "p", "load.room", fmt.Sprintf("late:%d", i))
	}
	lc.wait(t, 100)
}

// testReopen closes the store and opens it again on the same data, as a
// restarted process would: every listener resumes with nothing lost.
func testReopen(t *testing.T, h Harness) {
	if h.Reopen == nil {
		t.Skip("storetest: Reopen: the store keeps nothing across processes (Harness.Reopen is nil)")
	}
	s := h.New(t)
	hub, err := moitessier.New(s, moitessier.Options{GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	room := mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "r.1", Client: "web"})
	mustListener(t, hub, moitessier.Conditions{Person: "bob", Type: moitessier.Shared, Scope: "r.1"})
	inbox := mustListener(t, hub, moitessier.Conditions{Person: "alice", Type: moitessier.Private, Scope: "inbox.>"})
	pattern := mustListener(t, hub, moitessier.Conditions{Person: "carol", Type: moitessier.Shared, Scope: "r.*"})
	for i := range 5 {
		mustDispatch(t, hub, "bob", "r.1", fmt.Sprint("m", i))
		mustDispatch(t, hub, "bob", "inbox.alice", fmt.Sprint("n", i), moitessier.To("alice"))
	}
	mustDispatch(t, hub, "x", "r.1", "keyed", moitessier.IdempotencyKey("once"))
	// alice reads 3 of the room's messages and stops; the hub saves her
	// position as ListenUntil returns.
	c := newCollector()
	hubLimited, err := moitessier.New(s, moitessier.Options{GCInterval: -1, BatchLimit: 3})
	if err != nil {
		t.Fatal(err)
	}
	rl, err := hubLimited.Open(ctx, room.ID(), "alice", "web")
	if err != nil {
		t.Fatal(err)
	}
	lctx, stopListen := context.WithCancel(ctx)
	cur, err := rl.ListenUntil(lctx, nil, func(ctx context.Context, m []moitessier.Message) error {
		c.respond(ctx, m)
		stopListen()
		return nil
	}, moitessier.Resume, 0, 0)
	if cur != 3 || !errors.Is(err, context.Canceled) {
		t.Fatalf("listen = %d, %v; want 3 and context.Canceled", cur, err)
	}
	_ = hubLimited.Close()
	if err := hub.Close(); err != nil {
		t.Fatal(err)
	}

	s = h.Reopen(t, s)
	if c, ok := s.(moitessier.Closer); ok {
		t.Cleanup(func() { _ = c.Close() })
	}
	hub2 := newHub(t, s, moitessier.Options{})
	room2 := mustListener(t, hub2, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "r.1", Client: "web"})
	if room2.ID() != room.ID() {
		t.Fatal("reopened listener has a new ID")
	}
	mustDispatch(t, hub2, "bob", "r.1", "after")
	c2 := newCollector()
	stop := listen(t, room2, c2, moitessier.Resume)
	c2.waitFor(t, 4)
	stop()
	if got := strings.Join(c2.texts(), ","); got != "m3,m4,keyed,after" {
		t.Fatalf("alice resumed with %s, want m3,m4,keyed,after", got)
	}
	inbox2 := mustListener(t, hub2, moitessier.Conditions{Person: "alice", Type: moitessier.Private, Scope: "inbox.>"})
	wantTexts(t, inbox2, "n0", "n1", "n2", "n3", "n4")
	_ = inbox
	wantTexts(t, mustListener(t, hub2, moitessier.Conditions{Person: "carol", Type: moitessier.Shared, Scope: "r.*"}), "m0", "m1", "m2", "m3", "m4", "keyed", "after")
	_ = pattern
	if d := mustDispatch(t, hub2, "x", "r.1", "keyed", moitessier.IdempotencyKey("once")); !d.Replayed {
		t.Fatal("an idempotency key was forgotten across the reopen")
	}
	subs, err := hub2.Subscribers(ctx, room.ID())
	if err != nil || len(subs) != 2 {
		t.Fatalf("subscribers after reopen: %+v, %v", subs, err)
	}
}

// testShare runs two hubs on two stores sharing one database, as two
// processes would: a dispatch in one reaches a listener in the other,
// without polling, and in order.
func testShare(t *testing.T, h Harness) {
	if h.Share == nil {
		t.Skip("storetest: Share: the store serves one process (Harness.Share is nil)")
	}
	s1 := newStore(t, h)
	s2 := shareStore(t, h, s1)
	hubA := newHub(t, s1, moitessier.Options{})
	hubB := newHub(t, s2, moitessier.Options{CatchUpInterval: time.Hour})
	l := mustListener(t, hubB, moitessier.Conditions{Person: "b", Type: moitessier.Shared, Scope: "x.>"})
	c := newChecker()
	listen(t, l, c, 0)
	// A listener created in B is matched by a dispatch in A.
	for i := range 50 {
		mustDispatch(t, hubA, "a", "x.y", fmt.Sprintf("a:%d", i))
	}
	// Notifications, not the hour-long catch-up, bring them.
	c.wait(t, 50)
	var wg sync.WaitGroup
	for _, hub := range []*moitessier.Hub{hubA, hubB} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				if _, err := hub.Dispatch(context.Background(), "p", "x.z", fmt.Sprintf("%p:%d", hub, i)); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	c.wait(t, 150)
}

// testRecreateElsewhere: a ListenUntil in one process on a listener that
// another process deletes and makes again under the same ID ends with
// ErrClosed, at the latest at its hub's next catch-up, as for a deletion,
// rather than read on in the new listener's messages as if they were the
// old one's.
func testRecreateElsewhere(t *testing.T, h Harness) {
	if h.Share == nil {
		t.Skip("storetest: RecreateElsewhere: the store serves one process (Harness.Share is nil)")
	}
	s1 := newStore(t, h)
	s2 := shareStore(t, h, s1)
	hubA := newHub(t, s1, moitessier.Options{CatchUpInterval: 20 * time.Millisecond})
	hubB := newHub(t, s2, moitessier.Options{})
	ctx := ctxT(t)
	a := mustListener(t, hubA, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "again.elsewhere"})
	mustDispatch(t, hubA, "alice", "again.elsewhere", "old")
	old, done := listenFrom0(ctx, a)
	old.waitFor(t, 1)
	makeAgain(t, hubB, a, "again.elsewhere")
	for i := range 5 {
		mustDispatch(t, hubB, "bob", "again.elsewhere", fmt.Sprint("new", i))
	}
	wantClosed(t, done, old)
}

// listenFrom0 runs l.ListenUntil from cursor 0 under ctx, collecting what
// it hands over; its result comes on the channel.
func listenFrom0(ctx context.Context, l *moitessier.Listener) (*collector, <-chan error) {
	c := newCollector()
	done := make(chan error, 1)
	go func() {
		_, err := l.ListenUntil(ctx, nil, c.respond, 0, 0, 0)
		done <- err
	}()
	return c, done
}

// makeAgain deletes a (its one subscriber, alice, leaves through hub) and
// makes it again, a new incarnation under the same ID, subscribed by bob.
func makeAgain(t *testing.T, hub *moitessier.Hub, a *moitessier.Listener, scope string) {
	t.Helper()
	if err := hub.Leave(ctxT(t), a.ID(), "alice", ""); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond) // a creation time of its own
	b := mustListener(t, hub, moitessier.Conditions{Person: "bob", Type: moitessier.Shared, Scope: scope})
	if b.ID() != a.ID() {
		t.Fatal("the recreated listener has another ID")
	}
}

// wantClosed waits up to 30 s for the ListenUntil of a deleted listener,
// whose result comes on done, to end with ErrClosed.
func wantClosed(t *testing.T, done <-chan error, c *collector) {
	t.Helper()
	select {
	case err := <-done:
		if !errors.Is(err, moitessier.ErrClosed) {
			t.Fatalf("ListenUntil on the deleted listener = %v, want ErrClosed", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("ListenUntil on the deleted listener still runs; it delivered %q", c.texts())
	}
}

// testRecreateElsewhereHeard: as testRecreateElsewhere, with the hub of
// the old incarnation's ListenUntil hearing the other process's dispatches
// only from its store's Watch (its catch-up an hour away): the listen ends
// with ErrClosed and hands over none of the new incarnation's messages,
// which a head heard from the Watch must not send it to read (a store's
// heads carry the incarnation they are of; see moitessier.Head), whether
// the new incarnation's head passes the old listen's cursor or not.
func testRecreateElsewhereHeard(t *testing.T, h Harness) {
	if h.Share == nil {
		t.Skip("storetest: RecreateElsewhereHeard: the store serves one process (Harness.Share is nil)")
	}
	t.Run("5 new", func(t *testing.T) { recreateElsewhereHeard(t, h, 5, false) })
	t.Run("1 new", func(t *testing.T) { recreateElsewhereHeard(t, h, 1, false) })
	// The old listen's own hub dispatches to the new incarnation: it
	// publishes the message to its cache of the old one first.
	t.Run("1 new from its hub", func(t *testing.T) { recreateElsewhereHeard(t, h, 1, true) })
}

// recreateElsewhereHeard is testRecreateElsewhereHeard with 3 messages
// or more heard by the old listen and n dispatched to the new
// incarnation, by the old listen's hub if here, else by the other.
func recreateElsewhereHeard(t *testing.T, h Harness, n int, here bool) {
	s1 := newStore(t, h)
	s2 := shareStore(t, h, s1)
	if _, ok := s1.(moitessier.Watcher); !ok {
		t.Skip("storetest: RecreateElsewhereHeard: the store has no Watcher")
	}
	hubA := newHub(t, s1, moitessier.Options{CatchUpInterval: time.Hour})
	hubB := newHub(t, s2, moitessier.Options{CatchUpInterval: time.Hour})
	ctx := ctxT(t)
	const scope = "again.heard"
	a := mustListener(t, hubA, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: scope})
	for range 2 {
		mustDispatch(t, hubA, "alice", scope, "old")
	}
	old, done := listenFrom0(ctx, a)
	old.waitFor(t, 2)
	// Once a dispatch of hub B's reaches the listen, hub A hears B's
	// dispatches through its Watch.
	for i := 0; len(old.texts()) == 2; i++ {
		if i == 100 {
			t.Fatal("hub A did not hear hub B's dispatches in 10 s")
		}
		mustDispatch(t, hubB, "alice", scope, "old")
		time.Sleep(100 * time.Millisecond)
	}
	makeAgain(t, hubB, a, scope)
	from := hubB
	if here {
		from = hubA
	}
	for i := range n {
		mustDispatch(t, from, "bob", scope, fmt.Sprint("new", i))
	}
	wantClosed(t, done, old)
	for _, text := range old.texts() {
		if text != "old" {
			t.Fatalf("the deleted listener's ListenUntil handed over %q, the new one's: %q", text, old.texts())
		}
	}
}

// lateWatch is a store whose Watch starts only once gate is closed, as a
// hub's Watch may start late (a loaded machine, a LISTEN connection slow
// to open): the hub runs, and its listeners have joined, before the store
// watches.
type lateWatch struct {
	moitessier.Store
	w    moitessier.Watcher
	gate chan struct{}
}

func (l lateWatch) Watch(ctx context.Context, fn func([]moitessier.Head)) error {
	select {
	case <-l.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return l.w.Watch(ctx, fn)
}

func (l lateWatch) Heads(ctx context.Context, ids []string) ([]moitessier.Head, error) {
	return l.w.Heads(ctx, ids)
}

// testShareWatchStartsLate: messages dispatched in one process after a
// listener's ListenUntil began in another, but before that other hub's
// Watch was running, reach the listener without waiting for the hub's
// periodic catch-up (an hour here, as testShare sets): once a store
// watches, it reports what it could not notify before. (testShare lost
// all of its first messages this way, once, on a loaded machine.)
func testShareWatchStartsLate(t *testing.T, h Harness) {
	if h.Share == nil {
		t.Skip("storetest: ShareWatchStartsLate: the store serves one process (Harness.Share is nil)")
	}
	s1 := newStore(t, h)
	s2 := shareStore(t, h, s1)
	w, ok := s2.(moitessier.Watcher)
	if !ok {
		t.Skip("storetest: ShareWatchStartsLate: the store has no Watcher")
	}
	late := lateWatch{Store: s2, w: w, gate: make(chan struct{})}
	hubA := newHub(t, s1, moitessier.Options{})
	hubB := newHub(t, late, moitessier.Options{CatchUpInterval: time.Hour})
	l := mustListener(t, hubB, moitessier.Conditions{Person: "b", Type: moitessier.Shared, Scope: "x.>"})
	c := newChecker()
	listen(t, l, c, 0)
	// Once ListenUntil has joined and read the head:
	for deadline := time.Now().Add(30 * time.Second); hubB.Stats().Listening == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("ListenUntil did not begin")
		}
	}
	const n = 3
	for i := range n {
		mustDispatch(t, hubA, "a", "x.y", fmt.Sprintf("a:%d", i))
	}
	// Time for the notifications to reach the other store before its Watch
	// starts.
	time.Sleep(time.Second)
	close(late.gate)
	c.wait(t, n)
}

// shareStore returns h.Share's second store on s1's database, closed when
// the test ends.
func shareStore(t *testing.T, h Harness, s1 moitessier.Store) moitessier.Store {
	t.Helper()
	s2 := h.Share(t, s1)
	if c, ok := s2.(moitessier.Closer); ok {
		t.Cleanup(func() { _ = c.Close() })
	}
	return s2
}
