package moitessier_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/memstore"
)

// TestListenUntilCheckAndTimeout: check runs every interval while
// ListenUntil waits, its error ends the call, and the timeout ends it with
// nil; one timer serves both.
func TestListenUntilCheckAndTimeout(t *testing.T) {
	ctx := context.Background()
	_, l := memListener(t, "timer")
	respond := func(context.Context, []moitessier.Message) error { return nil }

	// The timeout, checks running meanwhile.
	checks := 0
	check := func(context.Context) error { checks++; return nil }
	start := time.Now()
	if _, err := l.ListenUntil(ctx, check, respond, moitessier.Resume, 10*time.Millisecond, 200*time.Millisecond); err != nil {
		t.Fatalf("at the timeout: %v", err)
	}
	if el := time.Since(start); el < 200*time.Millisecond {
		t.Fatalf("returned after %v, before the timeout", el)
	}
	if checks < 2 {
		t.Fatalf("%d checks in 200 ms at an interval of 10 ms", checks)
	}

	// A check's error ends the call, before the timeout.
	stop := errors.New("stop")
	checks = 0
	check = func(context.Context) error {
		if checks++; checks == 3 {
			return stop
		}
		return nil
	}
	if _, err := l.ListenUntil(ctx, check, respond, moitessier.Resume, 5*time.Millisecond, time.Hour); !errors.Is(err, stop) || checks != 3 {
		t.Fatalf("check's error: %v after %d checks", err, checks)
	}

	// A timeout alone, no check.
	if _, err := l.ListenUntil(ctx, nil, respond, moitessier.Resume, 5*time.Millisecond, 20*time.Millisecond); err != nil {
		t.Fatalf("timeout without check: %v", err)
	}
}

// TestListenUntilServedWhileBusy: the timeout, ctx and check are served
// while ListenUntil never runs out of messages (its respond dispatches the
// next one), so that a busy subscriber cannot keep it from returning. The
// timeout and check come only through the call's alarm, which ListenUntil
// looks at after each delivery; ctx rings it too, and is also checked
// before each respond, so its case holds without the alarm.
func TestListenUntilServedWhileBusy(t *testing.T) {
	ctx := context.Background()
	hub, l := memListener(t, "busy")
	if _, err := hub.Dispatch(ctx, "p", "busy", "first"); err != nil {
		t.Fatal(err)
	}
	errStarved := errors.New("never served while messages kept coming")
	errStop := errors.New("stop")
	calls := 0
	respond := func(ctx context.Context, _ []moitessier.Message) error {
		if calls++; calls > 100000 {
			return errStarved
		}
		_, err := hub.Dispatch(ctx, "p", "busy", "next")
		return err
	}
	cases := []struct {
		name    string
		ctx     func() (context.Context, context.CancelFunc)
		check   moitessier.CheckFunc
		timeout time.Duration
		want    error
	}{
		{"timeout", func() (context.Context, context.CancelFunc) { return context.WithCancel(ctx) }, nil, 20 * time.Millisecond, nil},
		{"ctx", func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 20*time.Millisecond) }, nil, 0, context.DeadlineExceeded},
		{"check", func() (context.Context, context.CancelFunc) { return context.WithCancel(ctx) }, func(context.Context) error { return errStop }, time.Hour, errStop},
	}
	for _, c := range cases {
		calls = 0
		cctx, cancel := c.ctx()
		_, err := l.ListenUntil(cctx, c.check, respond, moitessier.Resume, 10*time.Millisecond, c.timeout)
		cancel()
		if !errors.Is(err, c.want) {
			t.Errorf("%s: ListenUntil returned %v after %d respond calls, want %v", c.name, err, calls, c.want)
		}
	}
}

// memHub returns a hub with opts (GC off unless opts set it) on a new
// memory store, closed when t ends.
func memHub(t *testing.T, opts moitessier.Options) *moitessier.Hub {
	t.Helper()
	return memHubOn(t, memstore.New(), opts)
}

// memHubOn is memHub on store s.
func memHubOn(t *testing.T, s moitessier.Store, opts moitessier.Options) *moitessier.Hub {
	t.Helper()
	if opts.GCInterval == 0 {
		opts.GCInterval = -1
	}
	hub, err := moitessier.New(s, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hub.Close() })
	return hub
}

// memListener returns a hub on a new memory store, closed when t ends, and
// a Shared listener of person "p" on scope.
func memListener(t *testing.T, scope string) (*moitessier.Hub, *moitessier.Listener) {
	t.Helper()
	hub := memHub(t, moitessier.Options{})
	l, err := hub.NewListener(context.Background(), moitessier.Conditions{Person: "p", Type: moitessier.Shared, Scope: scope})
	if err != nil {
		t.Fatal(err)
	}
	return hub, l
}

// ownCtx is a Context of a caller's own, not built on the standard
// library's: context.AfterFunc watches its Done channel with a goroutine.
type ownCtx struct {
	context.Context
	done chan struct{}
}

func (c *ownCtx) Done() <-chan struct{} { return c.done }

func (c *ownCtx) Err() error {
	select {
	case <-c.done:
		return context.Canceled
	default:
		return nil
	}
}

// TestListenUntilOwnContext: a waiting ListenUntil ends when a context of
// the caller's own type is done, with its error, and one that ends at its
// timeout leaves no goroutine behind watching its context, which is never
// done (TestMain's goleak).
func TestListenUntilOwnContext(t *testing.T) {
	_, l := memListener(t, "own")
	respond := func(context.Context, []moitessier.Message) error { return nil }

	never := &ownCtx{Context: context.Background(), done: make(chan struct{})}
	if _, err := l.ListenUntil(never, nil, respond, moitessier.Resume, 0, 20*time.Millisecond); err != nil {
		t.Fatalf("at the timeout: %v", err)
	}

	ctx := &ownCtx{Context: context.Background(), done: make(chan struct{})}
	ended := make(chan error, 1)
	go func() {
		_, err := l.ListenUntil(ctx, nil, respond, moitessier.Resume, 0, 0)
		ended <- err
	}()
	time.Sleep(20 * time.Millisecond)
	close(ctx.done)
	select {
	case err := <-ended:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("ended with %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ListenUntil did not end when its context was done")
	}
}
