package sqlite_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/likestripes/moitessier"
)

func TestConcurrent(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, dbPath(t))
	const writers, perWriter = 4, 200
	mustJoin(t, s, listener("l", "x"), "alice")
	var wg, wwg sync.WaitGroup
	errs := make(chan error, writers+3)
	for w := range writers {
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			for i := range perWriter {
				text := fmt.Sprint(w, "-", i)
				if _, _, err := s.Append(ctx, batch(text, map[string]string{"l": text})); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wwg.Add(1)
	go func() {
		defer wwg.Done()
		for i := range 50 {
			l := listener(fmt.Sprint("other", i), "x")
			if _, _, _, err := s.Join(ctx, l, sub("bob"), moitessier.Quota{}); err != nil {
				errs <- err
				return
			}
		}
	}()
	done := make(chan struct{})
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var cur moitessier.Cursor
			seen := map[string]bool{}
			for {
				msgs, err := s.Read(ctx, "l", cur, 50)
				if err != nil {
					errs <- err
					return
				}
				for _, m := range msgs {
					if m.Seq != cur+1 || seen[m.Text] {
						errs <- fmt.Errorf("read seq %d (%s) after %d", m.Seq, m.Text, cur)
						return
					}
					seen[m.Text] = true
					cur = m.Seq
				}
				if len(msgs) > 0 {
					continue
				}
				select {
				case <-done:
					if cur != writers*perWriter {
						errs <- fmt.Errorf("read up to %d, want %d", cur, writers*perWriter)
					}
					return
				default:
				}
				if _, err := s.Match(ctx, "x"); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wwg.Wait()
	close(done)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if ls, err := s.Match(ctx, "x"); err != nil || len(ls) != 51 {
		t.Fatalf("Match: %d listeners, %v; want 51", len(ls), err)
	}
}
