package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/postgres"
)

// join creates a Shared listener on scope with one subscriber.
func join(tb testing.TB, s moitessier.Store, scope string) moitessier.ListenerInfo {
	tb.Helper()
	id, err := moitessier.ListenerID(moitessier.Conditions{Person: "p", Type: moitessier.Shared, Scope: scope})
	if err != nil {
		tb.Fatal(err)
	}
	now := time.Now()
	l, _, _, err := s.Join(ctxT(tb), moitessier.ListenerInfo{ID: id, Type: moitessier.Shared, Person: "p", Scopes: []string{scope}, Created: now},
		moitessier.Subscriber{Person: "p", Joined: now, LeaseExpires: now.Add(time.Hour)}, moitessier.Quota{})
	if err != nil {
		tb.Fatalf("Join(%q): %v", scope, err)
	}
	return l
}

func batch(scope string, texts map[string]string) *moitessier.Batch {
	b := &moitessier.Batch{Dispatch: fmt.Sprint("d", time.Now().UnixNano()), Scope: scope, Sender: "p", Created: time.Now()}
	for id, t := range texts {
		b.Entries = append(b.Entries, moitessier.Entry{Listener: id, Text: t})
	}
	return b
}

// reader reads a listener from cursor 0 until stop, failing on any gap: a
// reader that saw seq n and then n+2 has skipped n+1 for good.
func reader(t *testing.T, s moitessier.Store, id string, stop <-chan struct{}, seen *atomic.Int64) {
	ctx := context.Background()
	var cur moitessier.Cursor
	for {
		msgs, err := s.Read(ctx, id, cur, 1000)
		if err != nil {
			t.Error(err)
			return
		}
		for _, m := range msgs {
			if m.Seq != cur+1 {
				t.Errorf("reader of %s: seq %d after %d: skipped %d", id, m.Seq, cur, m.Seq-cur-1)
				return
			}
			cur = m.Seq
		}
		seen.Store(int64(cur))
		if len(msgs) == 0 {
			select {
			case <-stop:
				return
			default:
			}
		}
	}
}

// TestNoSkipOutOfOrderCommit holds an AppendTx transaction open while other
// appends to the same listener are attempted and readers read: the other
// appends must wait (they cannot take a higher sequence number and commit
// first), and readers never see a gap.
func TestNoSkipOutOfOrderCommit(t *testing.T) {
	s := mustStore(t)
	ctx := ctxT(t)
	l := join(t, s, "room")
	if _, _, err := s.Append(ctx, batch("room", map[string]string{l.ID: "first"})); err != nil {
		t.Fatal(err)
	}

	// T1 takes seq 2 and stays open.
	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	msgs, _, err := s.AppendTx(ctx, tx, batch("room", map[string]string{l.ID: "held"}))
	if err != nil || len(msgs) != 1 || msgs[0].Seq != 2 {
		t.Fatalf("AppendTx = %v, %v; want seq 2", msgs, err)
	}

	// T2 starts while T1 is open and tries to append.
	done := make(chan moitessier.Message, 1)
	go func() {
		msgs, _, err := s.Append(context.Background(), batch("room", map[string]string{l.ID: "second"}))
		if err != nil || len(msgs) != 1 {
			t.Errorf("Append = %v, %v", msgs, err)
			close(done)
			return
		}
		done <- msgs[0]
	}()
	select {
	case m := <-done:
		t.Fatalf("an append committed seq %d while seq 2 was uncommitted", m.Seq)
	case <-time.After(300 * time.Millisecond):
	}
	// A reader now sees seq 1 only: 2 is not committed and 3 not taken.
	got, err := s.Read(ctx, l.ID, 0, 10)
	if err != nil || len(got) != 1 || got[0].Seq != 1 {
		t.Fatalf("Read while T1 open = %v, %v; want only seq 1", got, err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if m := <-done; m.Seq != 3 {
		t.Fatalf("second append got seq %d, want 3", m.Seq)
	}
	got, err = s.Read(ctx, l.ID, 0, 10)
	if err != nil || len(got) != 3 || got[1].Text != "held" || got[2].Text != "second" {
		t.Fatalf("Read after commit = %v, %v", got, err)
	}
}

// TestNoSkipConcurrent runs writers whose transactions overlap and commit in
// every order (some through AppendTx with a random delay before commit,
// some rolled back) while readers follow each listener: no reader ever
// skips a sequence number, and every committed message is read.
func TestNoSkipConcurrent(t *testing.T) {
	s := mustStore(t)
	ctx := ctxT(t)
	var ids []string
	for i := range 4 {
		ids = append(ids, join(t, s, fmt.Sprint("room.", i)).ID)
	}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	seen := make([]atomic.Int64, len(ids))
	for i, id := range ids {
		for range 2 {
			readers.Add(1)
			go func() { defer readers.Done(); reader(t, s, id, stop, &seen[i]) }()
		}
	}
	const writers, each = 8, 60
	var committed atomic.Int64
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				texts := map[string]string{}
				for j, id := range ids {
					if (w+i+j)%3 != 0 {
						texts[id] = fmt.Sprintf("w%d:%d", w, i)
					}
				}
				b := batch("room", texts)
				if i%2 == 0 {
					if _, _, err := s.Append(ctx, b); err != nil {
						t.Error(err)
						return
					}
					committed.Add(int64(len(texts)))
					continue
				}
				tx, err := s.Pool().Begin(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				if _, _, err := s.AppendTx(ctx, tx, b); err != nil {
					_ = tx.Rollback(ctx)
					t.Error(err)
					return
				}
				time.Sleep(time.Duration(i%5) * time.Millisecond)
				if i%7 == 1 {
					_ = tx.Rollback(ctx)
					continue
				}
				if err := tx.Commit(ctx); err != nil {
					t.Error(err)
					return
				}
				committed.Add(int64(len(texts)))
			}
		}()
	}
	wg.Wait()
	// Wait for readers to reach every head, then stop them.
	heads, err := s.Heads(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, h := range heads {
		total += int64(h.Seq)
	}
	if total != committed.Load() {
		t.Errorf("heads add up to %d, committed %d messages", total, committed.Load())
	}
	deadline := time.Now().Add(30 * time.Second)
	for i, h := range heads {
		for int64(h.Seq) > seen[indexOf(ids, h.Listener)].Load() && time.Now().Before(deadline) && !t.Failed() {
			time.Sleep(5 * time.Millisecond)
		}
		_ = i
	}
	close(stop)
	readers.Wait()
}

func indexOf(ids []string, id string) int {
	for i, x := range ids {
		if x == id {
			return i
		}
	}
	return -1
}

var _ = postgres.DefaultSchema
