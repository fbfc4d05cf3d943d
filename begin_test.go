package moitessier_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/memstore"
)

// blockedRead is a memory store whose Listener waits, once armed, for its
// context to end, and hands that context over.
type blockedRead struct {
	moitessier.Store
	armed chan struct{}
	got   chan context.Context
}

func (s *blockedRead) Listener(ctx context.Context, id string) (moitessier.ListenerInfo, error) {
	select {
	case <-s.armed:
		s.got <- ctx
		<-ctx.Done()
		return moitessier.ListenerInfo{}, ctx.Err()
	default:
		return s.Store.Listener(ctx, id)
	}
}

// TestListenBeginEndsWithCtx: when ListenUntil's context ends while it is
// still setting up (its store calls), the store call's context ends, and
// ListenUntil returns the error of the caller's context (here its
// deadline), though the store calls ran under a context of their own.
func TestListenBeginEndsWithCtx(t *testing.T) {
	st := &blockedRead{Store: memstore.New(), armed: make(chan struct{}), got: make(chan context.Context, 1)}
	hub, err := moitessier.New(st, moitessier.Options{GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	l, err := hub.NewListener(context.Background(), moitessier.Conditions{Type: moitessier.Shared, Person: "p", Scope: "begin"})
	if err != nil {
		t.Fatal(err)
	}
	close(st.armed)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	type result struct{ err error }
	done := make(chan result, 1)
	go func() {
		_, err := l.ListenUntil(ctx, nil, func(context.Context, []moitessier.Message) error { return nil }, 0, 0, 0)
		done <- result{err}
	}()
	var sctx context.Context
	select {
	case sctx = <-st.got:
	case <-time.After(10 * time.Second):
		t.Fatal("ListenUntil did not read the listener")
	}
	select {
	case r := <-done:
		if !errors.Is(r.err, context.DeadlineExceeded) {
			t.Fatalf("ListenUntil = %v, want the caller's deadline", r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ListenUntil did not return when its context ended")
	}
	if sctx.Err() == nil {
		t.Fatal("the store call's context did not end")
	}
}
