package moitessier_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/memstore"
)

// handlerHub returns a hub on a memory store with two Handler listeners on
// scope "job", and a function that reports how many messages they hold.
func handlerHub(t *testing.T, opts moitessier.Options) (*moitessier.Hub, func() int) {
	t.Helper()
	opts.GCInterval = -1
	hub, err := moitessier.New(memstore.New(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hub.Close() })
	var ls []*moitessier.Listener
	for _, p := range []string{"alice", "bob"} {
		l, err := hub.NewListener(context.Background(), moitessier.Conditions{Person: p, Type: moitessier.Handler, Scope: "job"})
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
	}
	stored := func() int {
		n := 0
		for _, l := range ls {
			msgs, err := l.Messages(context.Background(), 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			n += len(msgs)
		}
		return n
	}
	return hub, stored
}

// chain returns n copies of hf as dispatch options.
func chain(n int, hf moitessier.HandlerFunc) []moitessier.DispatchOption {
	opts := make([]moitessier.DispatchOption, n)
	for i := range opts {
		opts[i] = hf
	}
	return opts
}

func TestMaxHandlers(t *testing.T) {
	var calls atomic.Int64
	count := moitessier.HandlerFunc(func(ctx context.Context, id string, m moitessier.Message) (string, error) {
		calls.Add(1)
		return m.Text, nil
	})
	t.Run("Default", func(t *testing.T) {
		hub, stored := handlerHub(t, moitessier.Options{})
		_, err := hub.Dispatch(context.Background(), "s", "job", "t", chain(9, count)...)
		if !errors.Is(err, moitessier.ErrInvalidArgument) {
			t.Fatalf("9 handlers: %v, want ErrInvalidArgument", err)
		}
		if _, err := hub.Prepare(context.Background(), "s", "job", "t", chain(9, count)...); !errors.Is(err, moitessier.ErrInvalidArgument) {
			t.Fatalf("Prepare with 9 handlers: %v, want ErrInvalidArgument", err)
		}
		if got := calls.Load(); got != 0 {
			t.Fatalf("a refused dispatch called handlers %d times", got)
		}
		if n := stored(); n != 0 {
			t.Fatalf("a refused dispatch stored %d messages", n)
		}
		d, err := hub.Dispatch(context.Background(), "s", "job", "t", chain(8, count)...)
		if err != nil || len(d.Messages) != 2 {
			t.Fatalf("8 handlers: %+v, %v", d, err)
		}
		if got := calls.Load(); got != 16 {
			t.Fatalf("8 handlers on 2 listeners: %d calls, want 16", got)
		}
	})
	t.Run("Configured", func(t *testing.T) {
		hub, _ := handlerHub(t, moitessier.Options{MaxHandlers: 2})
		if _, err := hub.Dispatch(context.Background(), "s", "job", "t", chain(3, count)...); !errors.Is(err, moitessier.ErrInvalidArgument) {
			t.Fatalf("3 handlers over a cap of 2: %v", err)
		}
		if _, err := hub.Dispatch(context.Background(), "s", "job", "t", chain(2, count)...); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("Negative", func(t *testing.T) {
		if _, err := moitessier.New(memstore.New(), moitessier.Options{MaxHandlers: -1}); !errors.Is(err, moitessier.ErrInvalidArgument) {
			t.Fatalf("MaxHandlers -1: %v", err)
		}
	})
}

// TestChainSizeEachStep: a chain that doubles the text stops at the first
// result over MaxMessageBytes, not after running every handler.
func TestChainSizeEachStep(t *testing.T) {
	hub, stored := handlerHub(t, moitessier.Options{MaxMessageBytes: 100})
	var calls atomic.Int64
	grow := moitessier.HandlerFunc(func(ctx context.Context, id string, m moitessier.Message) (string, error) {
		calls.Add(1)
		return m.Text + m.Text, nil
	})
	// 20 → 40 → 80 → 160: the third call crosses 100 bytes.
	_, err := hub.Dispatch(context.Background(), "s", "job", strings.Repeat("x", 20), chain(8, grow)...)
	if !errors.Is(err, moitessier.ErrTooLarge) {
		t.Fatalf("growing chain: %v, want ErrTooLarge", err)
	}
	if got := calls.Load(); got != 3 {
		t.Fatalf("growing chain ran %d handler calls, want 3 (stop after the one that crossed the limit)", got)
	}
	if n := stored(); n != 0 {
		t.Fatalf("stored %d messages", n)
	}
}

// TestChainStopsWithContext: once the dispatch's context ends (the client
// went away), no handler is called, and nothing is stored.
func TestChainStopsWithContext(t *testing.T) {
	hub, stored := handlerHub(t, moitessier.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var calls atomic.Int64
	hf := moitessier.HandlerFunc(func(_ context.Context, id string, m moitessier.Message) (string, error) {
		if calls.Add(1) == 2 {
			cancel() // the client leaves during the second call
		}
		return m.Text + ".", nil
	})
	_, err := hub.Dispatch(ctx, "s", "job", "t", chain(8, hf)...)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("dispatch whose context ended: %v, want context.Canceled", err)
	}
	if got := calls.Load(); got != 2 {
		t.Fatalf("%d handler calls, want 2 (none after the context ended)", got)
	}
	if n := stored(); n != 0 {
		t.Fatalf("stored %d messages", n)
	}
}

func TestHandlerBudget(t *testing.T) {
	t.Run("Cooperative", func(t *testing.T) {
		// A handler that waits on its context is ended by the budget.
		hub, stored := handlerHub(t, moitessier.Options{HandlerBudget: 50 * time.Millisecond})
		var calls atomic.Int64
		wait := moitessier.HandlerFunc(func(ctx context.Context, id string, m moitessier.Message) (string, error) {
			calls.Add(1)
			<-ctx.Done()
			return "", ctx.Err()
		})
		_, err := hub.Dispatch(context.Background(), "s", "job", "t", chain(8, wait)...)
		if !errors.Is(err, moitessier.ErrBudgetExceeded) || errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("dispatch past its budget: %v, want ErrBudgetExceeded only", err)
		}
		if got := calls.Load(); got != 1 {
			t.Fatalf("%d handler calls, want 1", got)
		}
		if n := stored(); n != 0 {
			t.Fatalf("stored %d messages", n)
		}
	})
	t.Run("Uncooperative", func(t *testing.T) {
		// A handler that ignores its context is not interrupted, but no
		// handler runs once the budget is spent: each call sleeps 20 ms
		// (never less), so by the end of the third the 50 ms are gone.
		hub, stored := handlerHub(t, moitessier.Options{HandlerBudget: 50 * time.Millisecond})
		var calls atomic.Int64
		slow := moitessier.HandlerFunc(func(ctx context.Context, id string, m moitessier.Message) (string, error) {
			calls.Add(1)
			time.Sleep(20 * time.Millisecond)
			return m.Text, nil
		})
		_, err := hub.Dispatch(context.Background(), "s", "job", "t", chain(8, slow)...)
		if !errors.Is(err, moitessier.ErrBudgetExceeded) {
			t.Fatalf("dispatch past its budget: %v, want ErrBudgetExceeded", err)
		}
		if got := calls.Load(); got < 1 || got > 3 {
			t.Fatalf("%d handler calls of 16, want at most 3", got)
		}
		if n := stored(); n != 0 {
			t.Fatalf("stored %d messages", n)
		}
	})
	t.Run("Default", func(t *testing.T) {
		hub, _ := handlerHub(t, moitessier.Options{})
		var left time.Duration
		probe := moitessier.HandlerFunc(func(ctx context.Context, id string, m moitessier.Message) (string, error) {
			if dl, ok := ctx.Deadline(); ok && left == 0 {
				left = time.Until(dl)
			}
			return m.Text, nil
		})
		if _, err := hub.Dispatch(context.Background(), "s", "job", "t", probe); err != nil {
			t.Fatal(err)
		}
		if left <= 0 || left > 2*time.Second {
			t.Fatalf("handlers' deadline %v away, want within the default 2 s", left)
		}
	})
	t.Run("Off", func(t *testing.T) {
		hub, _ := handlerHub(t, moitessier.Options{HandlerBudget: -1})
		probe := moitessier.HandlerFunc(func(ctx context.Context, id string, m moitessier.Message) (string, error) {
			if _, ok := ctx.Deadline(); ok {
				return "", errors.New("a deadline with HandlerBudget -1")
			}
			return m.Text, nil
		})
		if _, err := hub.Dispatch(context.Background(), "s", "job", "t", probe); err != nil {
			t.Fatal(err)
		}
	})
}

func TestFingerprint(t *testing.T) {
	fp := func(scope, text string, addressed bool, to, names []string) string {
		return string(moitessier.Fingerprint(scope, text, addressed, to, names))
	}
	base := fp("pay", "charge", true, []string{"bob", "carol"}, []string{"a", "b"})
	if len(base) != 32 {
		t.Fatalf("fingerprint of %d bytes, want 32 (SHA-256)", len(base))
	}
	same := []string{
		fp("pay", "charge", true, []string{"carol", "bob"}, []string{"a", "b"}),
		fp("pay", "charge", true, []string{"bob", "carol", "bob"}, []string{"a", "b"}),
	}
	for i, f := range same {
		if f != base {
			t.Errorf("same request %d has another fingerprint", i)
		}
	}
	other := map[string]string{
		"scope":            fp("pay.1", "charge", true, []string{"bob", "carol"}, []string{"a", "b"}),
		"text":             fp("pay", "charge!", true, []string{"bob", "carol"}, []string{"a", "b"}),
		"persons":          fp("pay", "charge", true, []string{"bob"}, []string{"a", "b"}),
		"not addressed":    fp("pay", "charge", false, nil, []string{"a", "b"}),
		"handler order":    fp("pay", "charge", true, []string{"bob", "carol"}, []string{"b", "a"}),
		"handler count":    fp("pay", "charge", true, []string{"bob", "carol"}, []string{"a", "b", ""}),
		"field boundaries": fp("payc", "harge", true, []string{"bob", "carol"}, []string{"a", "b"}),
	}
	for name, f := range other {
		if f == base {
			t.Errorf("another %s, same fingerprint", name)
		}
	}
	if fp("x", "t", true, nil, nil) == fp("x", "t", false, nil, nil) {
		t.Error("To() with nobody has the fingerprint of no To at all")
	}
}

// A key names one request: reusing it for another one is refused.
func ExampleIdempotencyKey() {
	hub := newHub()
	defer hub.Close()
	ctx := context.Background()
	_, _ = hub.NewListener(ctx, moitessier.Conditions{Person: "shop", Type: moitessier.Shared, Scope: "orders"})

	d, _ := hub.Dispatch(ctx, "alice", "orders", "order 42: 1 boat", moitessier.IdempotencyKey("order-42"))
	fmt.Println(d.Replayed, len(d.Messages))
	d, _ = hub.Dispatch(ctx, "alice", "orders", "order 42: 1 boat", moitessier.IdempotencyKey("order-42"))
	fmt.Println(d.Replayed, len(d.Messages))
	_, err := hub.Dispatch(ctx, "alice", "orders", "order 42: 2 boats", moitessier.IdempotencyKey("order-42"))
	fmt.Println(errors.Is(err, moitessier.ErrIdempotencyMismatch))
	// Output:
	// false 1
	// true 1
	// true
}

// BenchmarkMaxChain measures the most one dispatch's handler chain can cost
// under the default limits: a text just under 64 KiB, 8 handlers that each
// grow it a little (as the demo's greet does), for each of n Handler
// listeners. It prepares the dispatch (runs the handlers) without storing.
func BenchmarkMaxChain(b *testing.B) {
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprintf("listeners=%d", n), func(b *testing.B) {
			hub, err := moitessier.New(memstore.New(), moitessier.Options{GCInterval: -1})
			if err != nil {
				b.Fatal(err)
			}
			defer hub.Close()
			ctx := context.Background()
			for i := range n {
				if _, err := hub.NewListener(ctx, moitessier.Conditions{Person: fmt.Sprint("p", i), Type: moitessier.Handler, Scope: "job"}); err != nil {
					b.Fatal(err)
				}
			}
			grow := moitessier.HandlerFunc(func(ctx context.Context, id string, m moitessier.Message) (string, error) {
				return "Hello someone! " + m.Sender + " says: " + m.Text, nil
			})
			text := strings.Repeat("x", 64<<10-8*40)
			opts := chain(moitessier.DefaultMaxHandlers, grow)
			b.ResetTimer()
			for range b.N {
				if _, err := hub.Prepare(ctx, "s", "job", text, opts...); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestHandlerTime: Dispatched.HandlerTime is the wall time the handler
// calls took, on success and on failure; a dispatch that runs none has 0.
func TestHandlerTime(t *testing.T) {
	hub, _ := handlerHub(t, moitessier.Options{HandlerBudget: time.Second})
	sleep := func(d time.Duration) moitessier.HandlerFunc {
		return func(ctx context.Context, id string, m moitessier.Message) (string, error) {
			time.Sleep(d)
			return m.Text, nil
		}
	}
	// Two Handler listeners, each a chain of two 10 ms calls: at least 40 ms.
	d, err := hub.Dispatch(context.Background(), "s", "job", "t", chain(2, sleep(10*time.Millisecond))...)
	if err != nil {
		t.Fatal(err)
	}
	if d.HandlerTime < 40*time.Millisecond {
		t.Fatalf("HandlerTime %v, want at least the 40 ms the handlers slept", d.HandlerTime)
	}
	failing := moitessier.HandlerFunc(func(ctx context.Context, id string, m moitessier.Message) (string, error) {
		time.Sleep(10 * time.Millisecond)
		return "", errors.New("no")
	})
	d, err = hub.Dispatch(context.Background(), "s", "job", "t", failing)
	if err == nil || d.HandlerTime < 10*time.Millisecond {
		t.Fatalf("failed dispatch: %v, HandlerTime %v, want an error and at least 10 ms", err, d.HandlerTime)
	}
	if d, err := hub.Dispatch(context.Background(), "s", "job", "t"); err != nil || d.HandlerTime != 0 {
		t.Fatalf("dispatch without handlers: %v, HandlerTime %v, want 0", err, d.HandlerTime)
	}
}

// TestMaxRecipients: a dispatch may address at most Options.MaxRecipients
// persons (default DefaultMaxRecipients); more is ErrInvalidArgument and
// stores nothing.
func TestMaxRecipients(t *testing.T) {
	ctx := context.Background()
	persons := func(n int) []string {
		ps := make([]string, n)
		for i := range ps {
			ps[i] = fmt.Sprint("p", i)
		}
		return ps
	}
	for _, tc := range []struct {
		name string
		opts moitessier.Options
		max  int
	}{
		{"Default", moitessier.Options{}, moitessier.DefaultMaxRecipients},
		{"Configured", moitessier.Options{MaxRecipients: 3}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.GCInterval = -1
			hub, err := moitessier.New(memstore.New(), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer hub.Close()
			if hub.Options().MaxRecipients != tc.max {
				t.Fatalf("Options().MaxRecipients %d, want %d", hub.Options().MaxRecipients, tc.max)
			}
			l, err := hub.NewListener(ctx, moitessier.Conditions{Person: "p0", Type: moitessier.Private, Scope: "dm"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := hub.Dispatch(ctx, "s", "dm", "t", moitessier.To(persons(tc.max+1)...)); !errors.Is(err, moitessier.ErrInvalidArgument) {
				t.Fatalf("%d recipients: %v, want ErrInvalidArgument", tc.max+1, err)
			}
			if msgs, err := l.Messages(ctx, 0, 10); err != nil || len(msgs) != 0 {
				t.Fatalf("a refused dispatch stored %d messages (%v)", len(msgs), err)
			}
			if d, err := hub.Dispatch(ctx, "s", "dm", "t", moitessier.To(persons(tc.max)...)); err != nil || len(d.Messages) != 1 {
				t.Fatalf("%d recipients: %+v, %v", tc.max, d, err)
			}
		})
	}
	if _, err := moitessier.New(memstore.New(), moitessier.Options{MaxRecipients: -1}); !errors.Is(err, moitessier.ErrInvalidArgument) {
		t.Fatalf("MaxRecipients -1: %v", err)
	}
}

// TestBudgetOption: moitessier.Budget lowers one dispatch's handler budget
// and never raises it above Options.HandlerBudget; with no hub budget it
// sets one.
func TestBudgetOption(t *testing.T) {
	deadlineOf := func(hub *moitessier.Hub, opts ...moitessier.DispatchOption) (time.Duration, error) {
		var left time.Duration
		probe := moitessier.HandlerFunc(func(ctx context.Context, id string, m moitessier.Message) (string, error) {
			if dl, ok := ctx.Deadline(); ok && left == 0 {
				left = time.Until(dl)
			}
			return m.Text, nil
		})
		_, err := hub.Dispatch(context.Background(), "s", "job", "t", append(opts, probe)...)
		return left, err
	}
	hub, _ := handlerHub(t, moitessier.Options{HandlerBudget: time.Second})
	if left, err := deadlineOf(hub, moitessier.Budget(100*time.Millisecond)); err != nil || left <= 0 || left > 100*time.Millisecond {
		t.Fatalf("Budget(100ms) under a 1 s hub budget: deadline %v away, %v", left, err)
	}
	if left, err := deadlineOf(hub, moitessier.Budget(time.Hour)); err != nil || left <= 100*time.Millisecond || left > time.Second {
		t.Fatalf("Budget(1h) under a 1 s hub budget: deadline %v away, %v; want within 1 s", left, err)
	}
	off, _ := handlerHub(t, moitessier.Options{HandlerBudget: -1})
	if left, err := deadlineOf(off, moitessier.Budget(100*time.Millisecond)); err != nil || left <= 0 || left > 100*time.Millisecond {
		t.Fatalf("Budget(100ms) with no hub budget: deadline %v away, %v", left, err)
	}
	wait := moitessier.HandlerFunc(func(ctx context.Context, id string, m moitessier.Message) (string, error) {
		<-ctx.Done()
		return "", ctx.Err()
	})
	if _, err := hub.Dispatch(context.Background(), "s", "job", "t", moitessier.Budget(20*time.Millisecond), wait); !errors.Is(err, moitessier.ErrBudgetExceeded) {
		t.Fatalf("past a lowered budget: %v, want ErrBudgetExceeded", err)
	}
}
