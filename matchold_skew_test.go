package moitessier_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/memstore"
)

// TestMatchOldAppendNewSkewedClocks: TestMatchOldAppendNew where the old
// incarnation was made by a hub whose clock is 1 s ahead: the dispatch
// matched it, appended to the new one, and the new one's subscriber must
// still be woken.
func TestMatchOldAppendNewSkewedClocks(t *testing.T) {
	ctx := context.Background()
	st := &slowMatch{Store: memstore.New(), entered: make(chan struct{}), release: make(chan struct{})}
	hub, err := moitessier.New(st, moitessier.Options{GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	fast, err := moitessier.New(st, moitessier.Options{GCInterval: -1, Now: func() time.Time { return time.Now().Add(time.Second) }})
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	c := moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "room"}
	l1, err := fast.NewListener(ctx, c)
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
		}, 0, 0, 2*time.Second)
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
