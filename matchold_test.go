package moitessier_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/memstore"
)

// slowMatch is a memory store whose Match, once armed, waits for release
// after it has read the match.
type slowMatch struct {
	moitessier.Store
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (s *slowMatch) Match(ctx context.Context, scope string) ([]moitessier.ListenerInfo, error) {
	ls, err := s.Store.Match(ctx, scope)
	if s.armed.CompareAndSwap(true, false) {
		close(s.entered)
		<-s.release
	}
	return ls, err
}

// TestMatchOldAppendNew: a dispatch that matched a listener's old
// incarnation and, the listener made again meanwhile, appended to the new
// one (the memory store appends by ID) still wakes the new one's
// subscriber, who reads the message from the store; also when the old
// incarnation was made by a hub whose clock is ahead (incarnations are told
// apart, not ordered by their creators' clocks).
func TestMatchOldAppendNew(t *testing.T) {
	for _, skew := range []time.Duration{0, time.Second} {
		t.Run(skew.String(), func(t *testing.T) { matchOldAppendNew(t, skew) })
	}
}

func matchOldAppendNew(t *testing.T, skew time.Duration) {
	ctx := context.Background()
	st := &slowMatch{Store: memstore.New(), entered: make(chan struct{}), release: make(chan struct{})}
	hub := memHubOn(t, st, moitessier.Options{})
	maker := memHubOn(t, st, moitessier.Options{Now: func() time.Time { return time.Now().Add(skew) }})
	c := moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "room"}
	l1, err := maker.NewListener(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	st.armed.Store(true)
	done := make(chan error, 1)
	go func() {
		_, err := hub.Dispatch(ctx, "s", "room", "hello")
		done <- err
	}()
	<-st.entered
	if err := l1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond) // a creation time of its own
	l2, err := hub.NewListener(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan []moitessier.Message, 1)
	errGot := errors.New("got")
	go func() {
		_, err := l2.ListenUntil(ctx, nil, func(_ context.Context, m []moitessier.Message) error {
			got <- m
			return errGot
		}, 0, 0, 10*time.Second)
		if !errors.Is(err, errGot) {
			t.Errorf("ListenUntil = %v before the message stored for it", err)
			close(got)
		}
	}()
	for hub.Stats().Listening < 1 {
		time.Sleep(time.Millisecond)
	}
	close(st.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if m := <-got; len(m) == 0 || m[0].Seq != 1 || m[0].Text != "hello" {
		t.Fatalf("the new listener's subscriber got %+v, want hello at seq 1", m)
	}
}
