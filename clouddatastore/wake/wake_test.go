package wake_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/clouddatastore/wake"
	"github.com/likestripes/moitessier/internal/gcpemu"
)

func TestMain(m *testing.M) { gcpemu.Main(m) }

// freshTopic returns a topic ID no other test uses.
func freshTopic(tb testing.TB) string {
	tb.Helper()
	b := make([]byte, 6)
	rand.Read(b)
	return wake.TopicID("", "test-"+hex.EncodeToString(b))
}

func open(tb testing.TB, cfg wake.Config) *wake.Wake {
	tb.Helper()
	gcpemu.PubSub(tb)
	if cfg.Project == "" {
		cfg.Project = "test"
	}
	w, err := wake.Open(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { w.Close() })
	return w
}

// collector records the heads a Watch reports, keeping the highest per
// listener, and the number of calls.
type collector struct {
	mu    sync.Mutex
	heads map[string]moitessier.Cursor
	calls int
	seen  map[string]int // reports per listener
	ch    chan struct{}
	incs  map[string]moitessier.Cursor // highest head by "listener@created (Unix ns)"
}

func newCollector() *collector {
	return &collector{heads: map[string]moitessier.Cursor{}, seen: map[string]int{}, incs: map[string]moitessier.Cursor{}, ch: make(chan struct{}, 1)}
}

func (c *collector) fn(hs []moitessier.Head) {
	c.mu.Lock()
	c.calls++
	for _, h := range hs {
		c.heads[h.Listener] = max(c.heads[h.Listener], h.Seq)
		c.seen[h.Listener]++
		inc := fmt.Sprint(h.Listener, "@", h.Created.UnixNano())
		c.incs[inc] = max(c.incs[inc], h.Seq)
	}
	c.mu.Unlock()
	select {
	case c.ch <- struct{}{}:
	default:
	}
}

// waitFor waits until every head of want was reported with at least its seq.
func (c *collector) waitFor(tb testing.TB, want map[string]moitessier.Cursor, timeout time.Duration) {
	tb.Helper()
	deadline := time.After(timeout)
	for {
		c.mu.Lock()
		missing := 0
		for id, seq := range want {
			if c.heads[id] < seq {
				missing++
			}
		}
		c.mu.Unlock()
		if missing == 0 {
			return
		}
		select {
		case <-c.ch:
		case <-deadline:
			tb.Fatalf("%d of %d heads not reported after %v", missing, len(want), timeout)
		}
	}
}

// publishUntilSeen publishes a head until c, whose Watch is starting,
// has heard it.
func publishUntilSeen(tb testing.TB, w *wake.Wake, c *collector, id string, seq moitessier.Cursor) {
	tb.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; {
		w.Publish([]moitessier.Head{{Listener: id, Seq: seq}})
		w.Flush(context.Background())
		c.mu.Lock()
		got := c.heads[id]
		c.mu.Unlock()
		if got >= seq {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatal("Watch did not start in 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// watch runs w.Watch(c.fn) until the test ends, and returns once the
// watcher is registered: when it has heard a head of its own Wake.
func watch(tb testing.TB, w *wake.Wake, c *collector) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- w.Watch(ctx, c.fn) }()
	tb.Cleanup(func() { cancel(); <-errc })
	publishUntilSeen(tb, w, c, "ready-"+w.Subscription(), 1)
}

// TestTwoProcesses: heads published by one Wake reach the watchers of
// another on the same topic, and the publisher's own watchers.
func TestTwoProcesses(t *testing.T) {
	topic := freshTopic(t)
	a := open(t, wake.Config{Topic: topic})
	b := open(t, wake.Config{Topic: topic})
	ca, cb := newCollector(), newCollector()
	watch(t, a, ca)
	watch(t, b, cb)

	want := map[string]moitessier.Cursor{"l1": 3, "l2": 7}
	if err := a.Publish([]moitessier.Head{{Listener: "l1", Seq: 3}, {Listener: "l2", Seq: 7}}); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(context.Background()); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	cb.waitFor(t, want, 15*time.Second)
	ca.waitFor(t, want, time.Second)

	// And the other way round.
	if err := b.Publish([]moitessier.Head{{Listener: "l1", Seq: 4}}); err != nil {
		t.Fatal(err)
	}
	ca.waitFor(t, map[string]moitessier.Cursor{"l1": 4}, 15*time.Second)
}

// TestIncarnations: heads carry their listener's creation time across
// processes, and heads of two incarnations of one listener queued in one
// batch are not merged into one (the higher of them would pass for the
// other incarnation's).
func TestIncarnations(t *testing.T) {
	topic := freshTopic(t)
	a := open(t, wake.Config{Topic: topic})
	b := open(t, wake.Config{Topic: topic})
	cb := newCollector()
	watch(t, b, cb)
	c1, c2 := time.Unix(0, 1_700_000_000_000_000_001).UTC(), time.Unix(0, 1_700_000_000_000_000_002).UTC()
	if err := a.Publish([]moitessier.Head{{Listener: "l", Seq: 3, Created: c1}, {Listener: "l", Seq: 5, Created: c2}, {Listener: "l", Seq: 4, Created: c1}}); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(context.Background()); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	cb.waitFor(t, map[string]moitessier.Cursor{"l": 5}, 15*time.Second)
	deadline := time.Now().Add(15 * time.Second)
	for {
		cb.mu.Lock()
		got1, got2 := cb.incs[fmt.Sprint("l@", c1.UnixNano())], cb.incs[fmt.Sprint("l@", c2.UnixNano())]
		cb.mu.Unlock()
		if got1 == 4 && got2 == 5 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("heads of l by incarnation: %d and %d, want 4 and 5", got1, got2)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFirstWatchHearsEarlier: heads another process published after Open
// returned, and before the first Watch call, reach that call: a hub's
// Watch goroutine may start after its listeners joined and others
// dispatched to them.
func TestFirstWatchHearsEarlier(t *testing.T) {
	topic := freshTopic(t)
	a := open(t, wake.Config{Topic: topic})
	b := open(t, wake.Config{Topic: topic})
	if err := a.Publish([]moitessier.Head{{Listener: "early", Seq: 2}}); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(context.Background()); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	time.Sleep(time.Second) // time for b to receive the message, had it been receiving
	cb := newCollector()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- b.Watch(ctx, cb.fn) }()
	t.Cleanup(func() { cancel(); <-errc })
	cb.waitFor(t, map[string]moitessier.Cursor{"early": 2}, 15*time.Second)
}

// TestOwnMessagesFiltered: a Wake does not receive its own publications
// back from Pub/Sub: it tells its watchers directly, once.
func TestOwnMessagesFiltered(t *testing.T) {
	topic := freshTopic(t)
	a := open(t, wake.Config{Topic: topic})
	b := open(t, wake.Config{Topic: topic})
	ca, cb := newCollector(), newCollector()
	watch(t, a, ca)
	watch(t, b, cb)
	for i := 1; i <= 5; i++ {
		a.Publish([]moitessier.Head{{Listener: "x", Seq: moitessier.Cursor(i)}})
		if err := a.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	cb.waitFor(t, map[string]moitessier.Cursor{"x": 5}, 15*time.Second)
	time.Sleep(500 * time.Millisecond) // time for a looped-back message to arrive
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if got := ca.seen["x"]; got != 5 {
		t.Fatalf("publisher's own watcher told %d times for 5 flushed publishes, want 5 (no echo from Pub/Sub)", got)
	}
}

// TestBatching: many heads go in a few messages no larger than
// MaxMessageBytes, and every head arrives.
func TestBatching(t *testing.T) {
	topic := freshTopic(t)
	const max = 1024
	a := open(t, wake.Config{Topic: topic, MaxMessageBytes: max})
	b := open(t, wake.Config{Topic: topic})

	// A raw subscription on the topic sees the messages themselves.
	raw := rawSubscription(t, topic)
	var mu sync.Mutex
	var sizes []int
	rctx, cancel := context.WithCancel(context.Background())
	rdone := make(chan struct{})
	go func() {
		defer close(rdone)
		raw.Receive(rctx, func(_ context.Context, m *pubsub.Message) {
			m.Ack()
			mu.Lock()
			sizes = append(sizes, len(m.Data))
			mu.Unlock()
		})
	}()
	t.Cleanup(func() { cancel(); <-rdone })

	cb := newCollector()
	watch(t, b, cb)
	want := map[string]moitessier.Cursor{}
	var heads []moitessier.Head
	for i := range 500 {
		id := fmt.Sprintf("listener-%04d", i)
		heads = append(heads, moitessier.Head{Listener: id, Seq: moitessier.Cursor(i + 1)})
		want[id] = moitessier.Cursor(i + 1)
	}
	a.Publish(heads[:250])
	a.Publish(heads[250:])
	if err := a.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	cb.waitFor(t, want, 15*time.Second)

	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		total := 0
		for _, s := range sizes {
			total += s
		}
		n, big := len(sizes), slices.Max(append([]int{0}, sizes...))
		mu.Unlock()
		// 500 heads of at least 15 bytes (1+13+1): 7.5 KB in 1 KB messages.
		if total >= 500*15 {
			if big > max {
				t.Fatalf("a message of %d bytes, want at most %d", big, max)
			}
			if n > 40 {
				t.Fatalf("%d messages for 500 heads, want them batched", n)
			}
			t.Logf("500 heads in %d messages, the largest %d bytes", n, big)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("raw subscription got %d messages, %d bytes; want 500 heads' worth", n, total)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rawSubscription creates a subscription on the topic with the Pub/Sub
// client directly.
func rawSubscription(tb testing.TB, topic string) *pubsub.Subscriber {
	tb.Helper()
	ctx := context.Background()
	c, err := pubsub.NewClient(ctx, "test")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	name := "projects/test/subscriptions/raw-" + topic
	if _, err := c.SubscriptionAdminClient.CreateSubscription(ctx, &pubsubpb.Subscription{
		Name: name, Topic: "projects/test/topics/" + topic,
	}); err != nil {
		tb.Fatal(err)
	}
	return c.Subscriber(name)
}

// TestSubscriptionSettings: the subscription expires when orphaned and
// keeps wake-ups for MessageRetention only; Close deletes it.
func TestSubscriptionSettings(t *testing.T) {
	topic := freshTopic(t)
	gcpemu.PubSub(t)
	w, err := wake.Open(context.Background(), wake.Config{Project: "test", Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	c, err := pubsub.NewClient(context.Background(), "test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := c.SubscriptionAdminClient.GetSubscription(context.Background(), &pubsubpb.GetSubscriptionRequest{Subscription: w.Subscription()})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.GetExpirationPolicy().GetTtl().AsDuration(), 24*time.Hour; got != want {
		t.Errorf("expiration TTL %v, want %v", got, want)
	}
	if got, want := s.GetMessageRetentionDuration().AsDuration(), 10*time.Minute; got != want {
		t.Errorf("message retention %v, want %v", got, want)
	}
	if got, want := s.GetTopic(), w.Topic(); got != want {
		t.Errorf("topic %q, want %q", got, want)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	_, err = c.SubscriptionAdminClient.GetSubscription(context.Background(), &pubsubpb.GetSubscriptionRequest{Subscription: w.Subscription()})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("subscription after Close: %v, want NotFound", err)
	}
}

// TestSubscriptionRecreated: a subscription deleted behind the Wake's back
// (as when it expired) is created again and wake-ups resume.
func TestSubscriptionRecreated(t *testing.T) {
	topic := freshTopic(t)
	a := open(t, wake.Config{Topic: topic})
	b := open(t, wake.Config{Topic: topic})
	cb := newCollector()
	watch(t, b, cb)
	c, err := pubsub.NewClient(context.Background(), "test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SubscriptionAdminClient.DeleteSubscription(context.Background(), &pubsubpb.DeleteSubscriptionRequest{Subscription: b.Subscription()}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for i := 1; ; i++ {
		a.Publish([]moitessier.Head{{Listener: "r", Seq: moitessier.Cursor(i)}})
		a.Flush(context.Background())
		cb.mu.Lock()
		got := cb.heads["r"]
		cb.mu.Unlock()
		if got > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no wake-up 30 s after the subscription was deleted")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// baseline waits until no Pub/Sub keep-alive goroutine of an earlier test
// is left, and returns the number of goroutines.
func baseline(t *testing.T) int {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		all, other := countGoroutines(false), countGoroutines(true)
		if all.n == other.n || time.Now().After(deadline) {
			return all.n
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type goroutines struct {
	n      int
	stacks string
}

// countGoroutines counts the running goroutines, without the Pub/Sub
// client's stream keep-alive ones if skipKeepAlive.
func countGoroutines(skipKeepAlive bool) goroutines {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var g goroutines
	for _, s := range strings.Split(string(buf), "\n\n") {
		if skipKeepAlive && strings.Contains(s, "pubsub/v2.(*messageIterator).") &&
			(strings.Contains(s, "streamKeepAliveHandler") || strings.Contains(s, "checkServer") || strings.Contains(s, "pingStream")) {
			continue
		}
		g.n++
		g.stacks += s + "\n\n"
	}
	return g
}

// checkGoroutines fails if more goroutines than before are left. The
// Pub/Sub client's streamKeepAliveHandler (and what it starts) outlives a
// finished Receive until its next 10 s server-monitor tick; those must end
// within 15 s, every other goroutine within 5 s.
func checkGoroutines(t *testing.T, before int) {
	t.Helper()
	for _, c := range []struct {
		skip    bool
		timeout time.Duration
	}{{true, 5 * time.Second}, {false, 15 * time.Second}} {
		deadline := time.Now().Add(c.timeout)
		for {
			g := countGoroutines(c.skip)
			n, stacks := g.n, g.stacks
			if n <= before {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d goroutines %v after Close, %d before:\n%s", n, c.timeout, before, stacks)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// TestWatchContext: Watch returns ctx's error when ctx ends, and its fn is
// not called afterwards.
func TestWatchContext(t *testing.T) {
	w := open(t, wake.Config{Topic: freshTopic(t)})
	c := newCollector()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- w.Watch(ctx, c.fn) }()
	publishUntilSeen(t, w, c, "a", 1)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Watch after cancel = %v, want context.Canceled", err)
	}
	w.Publish([]moitessier.Head{{Listener: "a", Seq: 2}})
	if err := w.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.heads["a"] != 1 {
		t.Fatalf("fn called after Watch returned: head %d", c.heads["a"])
	}
}

// TestOpenBadConfig: a bad Config is an ErrConfig, found before any call.
func TestOpenBadConfig(t *testing.T) {
	for name, cfg := range map[string]wake.Config{
		"NoProject":      {Topic: "topic"},
		"NoTopic":        {Project: "test"},
		"BadTopic":       {Project: "test", Topic: "a b"},
		"GoogTopic":      {Project: "test", Topic: "google-topic"},
		"ShortExpiry":    {Project: "test", Topic: "topic", SubscriptionExpiry: time.Hour},
		"ShortRetention": {Project: "test", Topic: "topic", MessageRetention: time.Minute},
		"HugeMessages":   {Project: "test", Topic: "topic", MaxMessageBytes: 20 << 20},
	} {
		t.Run(name, func(t *testing.T) {
			w, err := wake.Open(context.Background(), cfg)
			if !errors.Is(err, wake.ErrConfig) {
				if w != nil {
					w.Close()
				}
				t.Fatalf("Open = %v, want ErrConfig", err)
			}
		})
	}
}

func TestTopicID(t *testing.T) {
	ids := []string{
		wake.TopicID("", ""), wake.TopicID("(default)", "a"), wake.TopicID("db-1", ""),
		wake.TopicID("db-1", "a.b-c_d"), wake.TopicID("", "a"),
	}
	seen := map[string]bool{}
	for _, id := range ids {
		w, err := wake.Open(context.Background(), wake.Config{Project: "test", Topic: id, OpenTimeout: time.Nanosecond})
		if errors.Is(err, wake.ErrConfig) {
			t.Errorf("TopicID %q is not a valid topic: %v", id, err)
		}
		if w != nil {
			w.Close()
		}
		seen[id] = true
	}
	if got := wake.TopicID("(default)", "a"); got != wake.TopicID("", "a") {
		t.Errorf("(default) and empty database give %q and %q, want the same", got, wake.TopicID("", "a"))
	}
	keys := make([]string, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(keys) != 4 {
		t.Errorf("topic IDs %v: want 4 distinct", keys)
	}
}
