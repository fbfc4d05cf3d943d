package clouddatastore_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
)

// The multi-hub test runs dispatchers in this process and in a child: the
// test binary run again with these variables set.
const (
	childNSEnv    = "MOITESSIER_DS_CHILD_NAMESPACE"
	childCountEnv = "MOITESSIER_DS_CHILD_COUNT"
)

const (
	mhScope       = "mh.room"
	mhHubsPerProc = 2 // stores (and hubs) per process
	mhDispatchers = 2 // dispatchers per hub: 2 processes × 2 hubs × 2 = 8
)

// dispatchFrom runs mhDispatchers dispatchers on each of mhHubsPerProc hubs,
// each its own store on namespace ns, each dispatcher sending n messages
// "<prefix><hub>.<d>:<i>" to mhScope in order.
func dispatchFrom(tb testing.TB, ns, prefix string, n int) {
	var wg sync.WaitGroup
	for h := range mhHubsPerProc {
		hub := newHub(tb, openStore(tb, ns), moitessier.Options{})
		for d := range mhDispatchers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range n {
					if _, err := hub.Dispatch(context.Background(), "p", mhScope, fmt.Sprintf("%s%d.%d:%d", prefix, h, d, i)); err != nil {
						tb.Errorf("dispatcher %s%d.%d, message %d: %v", prefix, h, d, i, err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
}

// TestMultiHubChild is the child's half of TestMultiHub; alone it skips.
func TestMultiHubChild(t *testing.T) {
	ns := os.Getenv(childNSEnv)
	if ns == "" {
		t.Skip("run by TestMultiHub in a child process")
	}
	n, _ := strconv.Atoi(os.Getenv(childCountEnv))
	needDatastore(t)
	dispatchFrom(t, ns, "child", n)
}

// mhChecker checks one subscriber's deliveries: every seq once, in order,
// and each dispatcher's messages in the order it sent them.
type mhChecker struct {
	mu     sync.Mutex
	next   moitessier.Cursor
	lastBy map[string]int
	count  int
	err    error
	more   chan struct{}
}

func (c *mhChecker) respond(_ context.Context, msgs []moitessier.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range msgs {
		if c.err != nil {
			break
		}
		if m.Seq != c.next {
			c.err = fmt.Errorf("seq %d, want %d", m.Seq, c.next)
			break
		}
		c.next++
		who, num, _ := strings.Cut(m.Text, ":")
		i, _ := strconv.Atoi(num)
		if last, ok := c.lastBy[who]; (ok && i != last+1) || (!ok && i != 0) {
			c.err = fmt.Errorf("dispatcher %s: message %d after %d", who, i, last)
		}
		c.lastBy[who] = i
		c.count++
	}
	select {
	case c.more <- struct{}{}:
	default:
	}
	return nil
}

// TestMultiHub: four hubs, each on its own store (its own client and
// Pub/Sub subscription), two of them in another process, run eight
// dispatchers on one scope at once. Every subscriber, on either of the
// hubs of this process, receives every message once, in sequence order
// with no gap, and each dispatcher's messages in the order sent.
func TestMultiHub(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	ns := newNamespace(t)
	const each = 25
	total := 2 * mhHubsPerProc * mhDispatchers * each
	hubA := newHub(t, openStore(t, ns), moitessier.Options{})
	hubB := newHub(t, openStore(t, ns), moitessier.Options{})
	var checkers []*mhChecker
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var listening sync.WaitGroup
	listen := func(hub *moitessier.Hub, c moitessier.Conditions) {
		l, err := hub.NewListener(ctxT(t), c)
		if err != nil {
			t.Fatal(err)
		}
		ch := &mhChecker{next: 1, lastBy: map[string]int{}, more: make(chan struct{}, 1)}
		checkers = append(checkers, ch)
		listening.Add(1)
		go func() {
			defer listening.Done()
			_, _ = l.ListenUntil(ctx, nil, ch.respond, 0, 0, 0)
		}()
	}
	listen(hubA, moitessier.Conditions{Person: "a", Client: "1", Type: moitessier.Shared, Scope: mhScope})
	listen(hubA, moitessier.Conditions{Person: "a", Client: "2", Type: moitessier.Shared, Scope: mhScope})
	listen(hubB, moitessier.Conditions{Person: "b", Type: moitessier.Shared, Scope: mhScope})
	listen(hubB, moitessier.Conditions{Person: "b", Type: moitessier.Shared, Scope: "mh.*"})

	child := exec.Command(os.Args[0], "-test.run=^TestMultiHubChild$", "-test.count=1", "-test.v")
	child.Env = append(os.Environ(), childNSEnv+"="+ns, childCountEnv+"="+strconv.Itoa(each))
	out := &strings.Builder{}
	child.Stdout, child.Stderr = out, out
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	childDone := make(chan error, 1)
	go func() { childDone <- child.Wait() }()
	dispatchFrom(t, ns, "parent", each)
	if err := <-childDone; err != nil || !strings.Contains(out.String(), "--- PASS: TestMultiHubChild") {
		t.Fatalf("child process: %v\n%s", err, out.String())
	}
	deadline := time.After(2 * time.Minute)
	for i, c := range checkers {
		for {
			c.mu.Lock()
			n, err := c.count, c.err
			c.mu.Unlock()
			if err != nil {
				t.Fatalf("subscriber %d: %v", i, err)
			}
			if n == total {
				break
			}
			select {
			case <-c.more:
			case <-deadline:
				t.Fatalf("subscriber %d: %d of %d messages after 2 minutes", i, n, total)
			}
		}
		if len(c.lastBy) != 8 {
			t.Fatalf("subscriber %d heard %d dispatchers, want 8", i, len(c.lastBy))
		}
	}
	cancel()
	listening.Wait()
}
