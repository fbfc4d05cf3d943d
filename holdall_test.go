package moitessier_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/memstore"
)

// brokenAppender is a shared store (a Watcher, whose heads come from
// heads) whose MatchAppend fails: it panics, or it says it appended and
// returns an error.
type brokenAppender struct {
	moitessier.Store
	heads  chan []moitessier.Head
	panics bool
}

func (s *brokenAppender) Watch(ctx context.Context, fn func([]moitessier.Head)) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case h := <-s.heads:
			fn(h)
		}
	}
}

func (s *brokenAppender) Heads(ctx context.Context, ids []string) ([]moitessier.Head, error) {
	return nil, errors.New("no heads")
}

func (s *brokenAppender) MatchCached(ctx context.Context, scope string) ([]moitessier.ListenerInfo, moitessier.MatchStamp, error) {
	ls, err := s.Store.Match(ctx, scope)
	return ls, nil, err
}

func (s *brokenAppender) MatchAppend(ctx context.Context, b *moitessier.Batch, text string, sel moitessier.Selection) ([]moitessier.ListenerInfo, moitessier.MatchStamp, []moitessier.Message, bool, error) {
	if s.panics {
		panic("MatchAppend broke")
	}
	return nil, nil, nil, true, errors.New("MatchAppend broke")
}

// TestMatchAppendFailureReleasesHold: a MatchAppend that panics, or fails,
// leaves no hold on the hub's caches behind: a head another process
// appended, which the store's Watcher reports after it, still wakes the
// listener's subscriber.
func TestMatchAppendFailureReleasesHold(t *testing.T) {
	for _, panics := range []bool{true, false} {
		store := &brokenAppender{Store: memstore.New(), heads: make(chan []moitessier.Head), panics: panics}
		hub, err := moitessier.New(store, moitessier.Options{GCInterval: -1, CatchUpInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		l, err := hub.NewListener(ctx, moitessier.Conditions{Person: "p", Type: moitessier.Shared, Scope: "hold.a"})
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan []moitessier.Message, 1)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = l.ListenUntil(ctx, nil, func(_ context.Context, msgs []moitessier.Message) error {
				select {
				case got <- msgs:
				default:
				}
				return nil
			}, moitessier.Resume, 0, 0)
		}()
		for hub.Stats().Listening < 1 {
			time.Sleep(time.Millisecond)
		}
		func() {
			defer func() { _ = recover() }()
			if _, err := hub.Dispatch(ctx, "p", "hold.b", "hi"); err == nil {
				t.Errorf("panics %v: a dispatch through a broken MatchAppend succeeded", panics)
			}
		}()
		// Another process appends to the listener; the Watcher says so.
		msgs, _, err := store.Store.Append(ctx, &moitessier.Batch{Dispatch: "elsewhere", Scope: "hold.a", Sender: "q", Created: time.Now(),
			Entries: []moitessier.Entry{{Listener: l.ID(), Text: "from elsewhere"}}})
		if err != nil {
			t.Fatal(err)
		}
		store.heads <- []moitessier.Head{{Listener: l.ID(), Seq: msgs[0].Seq}}
		select {
		case m := <-got:
			if m[0].Text != "from elsewhere" {
				t.Errorf("panics %v: got %+v", panics, m)
			}
		case <-ctx.Done():
			t.Errorf("panics %v: the subscriber was not woken by a head observed after a failed MatchAppend", panics)
		}
		cancel()
		<-done
		hub.Close()
	}
}
