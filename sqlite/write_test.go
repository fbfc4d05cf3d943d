package sqlite_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/sqlite"
)

// TestCombinedWrites queues writes behind a held one, so that they run as
// one transaction, and checks that each sees the ones before it.
func TestCombinedWrites(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, dbPath(t))
	mustJoin(t, s, listener("L", "x"), "alice")
	mustJoin(t, s, listener("M", "y"), "alice")
	hold := make(chan struct{})
	sqlite.SetAppendHook(s, func(b *moitessier.Batch, i int) error {
		if b.Dispatch == "hold" {
			<-hold
		}
		return nil
	})
	defer sqlite.SetAppendHook(s, nil)

	var wg sync.WaitGroup
	run := func(fn func()) {
		wg.Add(1)
		go func() { defer wg.Done(); fn() }()
		time.Sleep(20 * time.Millisecond) // queue the writes in this order
	}
	type result struct {
		msgs    []moitessier.Message
		sub     moitessier.Subscriber
		flag    bool
		err     error
		created bool
	}
	var b1, joinBob, leaveAlice, leaveBob, lost, joinCarol, fresh result
	run(func() { _, _, _ = s.Append(ctx, batch("hold", map[string]string{"M": "held"})) })
	run(func() { b1.msgs, _, b1.err = s.Append(ctx, batch("b1", map[string]string{"L": "one"})) })
	run(func() {
		_, joinBob.sub, joinBob.created, joinBob.err = s.Join(ctx, listener("L", "x"), sub("bob"), moitessier.Quota{})
	})
	run(func() { leaveAlice.flag, leaveAlice.err = s.Leave(ctx, "L", "alice", "") })
	run(func() { leaveBob.flag, leaveBob.err = s.Leave(ctx, "L", "bob", "") })
	run(func() { lost.msgs, _, lost.err = s.Append(ctx, batch("lost", map[string]string{"L": "lost"})) })
	run(func() {
		_, joinCarol.sub, joinCarol.created, joinCarol.err = s.Join(ctx, listener("L", "x"), sub("carol"), moitessier.Quota{})
	})
	run(func() {
		fresh.msgs, _, fresh.err = s.Append(ctx, batch("fresh", map[string]string{"L": "new", "M": "m"}))
	})
	close(hold)
	wg.Wait()

	for name, r := range map[string]result{"b1": b1, "join bob": joinBob, "leave alice": leaveAlice,
		"leave bob": leaveBob, "lost": lost, "join carol": joinCarol, "fresh": fresh} {
		if r.err != nil {
			t.Fatalf("%s: %v", name, r.err)
		}
	}
	switch {
	case len(b1.msgs) != 1 || b1.msgs[0].Seq != 1:
		t.Fatalf("b1 wrote %+v", b1.msgs)
	case joinBob.created || joinBob.sub.Cursor != 1:
		t.Fatalf("bob joined at %d (created %v), want 1", joinBob.sub.Cursor, joinBob.created)
	case leaveAlice.flag || !leaveBob.flag:
		t.Fatalf("leaves deleted the listener: %v, %v; want false, true", leaveAlice.flag, leaveBob.flag)
	case len(lost.msgs) != 0:
		t.Fatalf("an append to a deleted listener wrote %+v", lost.msgs)
	case !joinCarol.created || joinCarol.sub.Cursor != 0:
		t.Fatalf("carol joined at %d (created %v), want 0, created", joinCarol.sub.Cursor, joinCarol.created)
	case len(fresh.msgs) != 2 || fresh.msgs[0].Listener != "L" || fresh.msgs[0].Seq != 1 || fresh.msgs[1].Seq != 2:
		t.Fatalf("fresh wrote %+v, want L:1 and M:2", fresh.msgs)
	}
	check := func(s *sqlite.Store) {
		t.Helper()
		if h := head(t, s, "L"); h != 1 {
			t.Fatalf("L head %d, want 1", h)
		}
		if h := head(t, s, "M"); h != 2 {
			t.Fatalf("M head %d, want 2", h)
		}
		if got := texts(mustRead(t, s, "L", 0)); !slices.Equal(got, []string{"new"}) {
			t.Fatalf("L holds %q, want [new]", got)
		}
		subs, err := s.Subscribers(ctx, "L", moitessier.SubscriberRange{})
		if err != nil || len(subs) != 1 || subs[0].Person != "carol" {
			t.Fatalf("L subscribers %+v, %v; want carol", subs, err)
		}
		if ls, err := s.Match(ctx, "x"); err != nil || len(ls) != 1 || ls[0].Head != 1 {
			t.Fatalf("Match(x) = %+v, %v", ls, err)
		}
	}
	check(s)
	check(reopen(t, s))
}

func sameMessage(a, b moitessier.Message) bool {
	return a.Listener == b.Listener && a.Seq == b.Seq && a.Dispatch == b.Dispatch && a.Scope == b.Scope &&
		a.Sender == b.Sender && a.Text == b.Text && a.Created.Equal(b.Created)
}

func TestAppendAtomic(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, dbPath(t))
	ids := []string{"a", "b", "c", "d", "e"}
	entries := map[string]string{}
	for _, id := range ids {
		mustJoin(t, s, listener(id, "x"), "alice")
		entries[id] = "text " + id
	}
	mustAppend(t, s, batch("first", entries))

	t.Run("FailureMidBatch", func(t *testing.T) {
		boom := errors.New("boom")
		sqlite.SetAppendHook(s, func(_ *moitessier.Batch, i int) error {
			if i == 3 {
				return boom
			}
			return nil
		})
		b := batch("second", entries)
		b.Key = "k"
		_, _, err := s.Append(ctx, b)
		sqlite.SetAppendHook(s, nil)
		if !errors.Is(err, boom) {
			t.Fatalf("Append error %v, want %v", err, boom)
		}
		for _, id := range ids {
			if got := mustRead(t, s, id, 0); len(got) != 1 || got[0].Dispatch != "first" {
				t.Fatalf("listener %s holds %+v after a failed batch, want only the first message", id, got)
			}
			if h := head(t, s, id); h != 1 {
				t.Fatalf("listener %s head %d after a failed batch, want 1", id, h)
			}
		}
		// What the file holds, not only what the store says.
		if got := queryInt(t, s.Path(), `SELECT count(*) FROM messages WHERE dispatch = 'second'`); got != 0 {
			t.Fatalf("the file holds %d messages of the failed batch", got)
		}
		if got := queryInt(t, s.Path(), `SELECT max(`+sqlite.HeadExpr+`) FROM listeners`); got != 1 {
			t.Fatalf("the file holds a head of %d after a failed batch, want 1", got)
		}
		if got := queryInt(t, s.Path(), `SELECT count(*) FROM idempotency_keys`); got != 0 {
			t.Fatalf("the file holds %d idempotency keys after a failed batch", got)
		}
		// The key of the failed batch was not recorded: a retry writes.
		msgs, replayed, err := s.Append(ctx, b)
		if err != nil || replayed || len(msgs) != len(ids) {
			t.Fatalf("retry: %d messages, replayed %v, %v", len(msgs), replayed, err)
		}
		for _, m := range msgs {
			if m.Seq != 2 {
				t.Fatalf("retry wrote seq %d on %s, want 2", m.Seq, m.Listener)
			}
		}
	})

	t.Run("Cancel", func(t *testing.T) {
		// A large batch cancelled at some point: all of it is stored, or none.
		s := mustOpen(t, dbPath(t))
		mustJoin(t, s, listener("big", "x"), "alice")
		b := &moitessier.Batch{Dispatch: "big", Scope: "x", Sender: "bob", Created: t0}
		for i := range 4000 {
			b.Entries = append(b.Entries, moitessier.Entry{Listener: "big", Text: fmt.Sprint(i)})
		}
		for _, delay := range []time.Duration{0, 100 * time.Microsecond, time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond, time.Hour} {
			before := head(t, s, "big")
			ctx, cancel := context.WithCancel(ctx)
			time.AfterFunc(delay, cancel)
			msgs, _, err := s.Append(ctx, b)
			cancel()
			after := head(t, s, "big")
			if got := queryInt(t, s.Path(), `SELECT `+sqlite.HeadExpr+` FROM listeners WHERE id = 'big'`); moitessier.Cursor(got) != after {
				t.Fatalf("delay %v: stored head %d, cached %d", delay, got, after)
			}
			stored := queryInt(t, s.Path(), fmt.Sprintf(`SELECT count(*) FROM messages WHERE listener_id = 'big' AND seq > %d`, before))
			t.Logf("delay %v: %d messages stored, error %v", delay, stored, err)
			switch {
			case err == nil && (len(msgs) != len(b.Entries) || stored != len(b.Entries) || after != before+moitessier.Cursor(len(b.Entries))):
				t.Fatalf("delay %v: Append succeeded with %d messages, %d stored, head %d→%d", delay, len(msgs), stored, before, after)
			case err != nil && (stored != 0 || after != before):
				t.Fatalf("delay %v: Append failed (%v) but %d messages stored, head %d→%d", delay, err, stored, before, after)
			case err != nil && !errors.Is(err, context.Canceled):
				t.Fatalf("delay %v: error %v, want context.Canceled", delay, err)
			}
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		// Concurrent Appends share transactions; one that fails leaves
		// nothing and takes nothing of the others with it.
		s := mustOpen(t, dbPath(t))
		for _, id := range ids {
			mustJoin(t, s, listener(id, "x"), "alice")
		}
		boom := errors.New("boom")
		sqlite.SetAppendHook(s, func(b *moitessier.Batch, i int) error {
			if strings.HasPrefix(b.Dispatch, "bad") && i == 2 {
				return boom
			}
			return nil
		})
		const workers, each = 8, 50
		var wg sync.WaitGroup
		errs := make(chan error, workers*each)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					name := fmt.Sprint("good", w, "-", i)
					if i%3 == 0 {
						name = fmt.Sprint("bad", w, "-", i)
					}
					msgs, _, err := s.Append(ctx, batch(name, entries))
					switch {
					case strings.HasPrefix(name, "bad") && !errors.Is(err, boom):
						errs <- fmt.Errorf("%s: error %v, want %v", name, err, boom)
					case strings.HasPrefix(name, "good") && (err != nil || len(msgs) != len(ids)):
						errs <- fmt.Errorf("%s: %d messages, %v", name, len(msgs), err)
					}
				}
			}()
		}
		wg.Wait()
		sqlite.SetAppendHook(s, nil)
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		good := workers * (each - (each+2)/3)
		for _, id := range ids {
			msgs := mustRead(t, s, id, 0)
			if len(msgs) != good || head(t, s, id) != moitessier.Cursor(good) {
				t.Fatalf("listener %s holds %d messages, head %d; want %d", id, len(msgs), head(t, s, id), good)
			}
			for i, m := range msgs {
				if m.Seq != moitessier.Cursor(i+1) || !strings.HasPrefix(m.Dispatch, "good") {
					t.Fatalf("listener %s message %d: seq %d of %s", id, i, m.Seq, m.Dispatch)
				}
			}
		}
	})

	t.Run("SkipsDeleted", func(t *testing.T) {
		b := batch("third", map[string]string{"a": "x", "gone": "y", "b": "z"})
		msgs := mustAppend(t, s, b)
		if got := texts(msgs); !slices.Equal(got, []string{"x", "z"}) {
			t.Fatalf("wrote %q, want [x z]", got)
		}
	})
}

func TestIdempotency(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, dbPath(t))
	mustJoin(t, s, listener("a", "x"), "alice")
	mustJoin(t, s, listener("b", "x"), "alice")
	b := batch("d1", map[string]string{"a": "one", "b": "uno"})
	b.Key, b.KeySince = "key", t0.Add(-time.Minute)
	first := mustAppend(t, s, b)

	again := batch("d2", map[string]string{"a": "two", "b": "dos"})
	again.Key, again.KeySince = "key", t0.Add(-time.Minute)
	msgs, replayed, err := s.Append(ctx, again)
	if err != nil || !replayed || len(msgs) != 2 || !sameMessage(msgs[0], first[0]) || !sameMessage(msgs[1], first[1]) {
		t.Fatalf("replay: %+v, %v, %v; want %+v", msgs, replayed, err, first)
	}
	if h := head(t, s, "a"); h != 1 {
		t.Fatalf("head %d after a replay, want 1", h)
	}

	// Another sender's key is another key.
	other := batch("d3", map[string]string{"a": "three"})
	other.Sender, other.Key = "carol", "key"
	if msgs, replayed, err := s.Append(ctx, other); err != nil || replayed || len(msgs) != 1 {
		t.Fatalf("other sender: %+v, %v, %v", msgs, replayed, err)
	}

	// Replays return the messages that still exist.
	if _, err := s.Leave(ctx, "b", "alice", ""); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s)
	msgs, replayed, err = s.Append(ctx, again)
	if err != nil || !replayed || len(msgs) != 1 || !sameMessage(msgs[0], first[0]) {
		t.Fatalf("replay after reopen and leave: %+v, %v, %v; want %+v", msgs, replayed, err, first[:1])
	}

	// Out of the window, the key no longer counts.
	late := batch("d4", map[string]string{"a": "four"})
	late.Created, late.Key, late.KeySince = t0.Add(time.Hour), "key", t0.Add(time.Second)
	if msgs, replayed, err := s.Append(ctx, late); err != nil || replayed || len(msgs) != 1 || msgs[0].Text != "four" {
		t.Fatalf("after the window: %+v, %v, %v", msgs, replayed, err)
	}
	late.Dispatch = "d5"
	if msgs, replayed, err := s.Append(ctx, late); err != nil || !replayed || len(msgs) != 1 || msgs[0].Dispatch != "d4" {
		t.Fatalf("the new key: %+v, %v, %v", msgs, replayed, err)
	}
}

// TestWALAutoCheckpoint: the writer checkpoints the log at the size the
// package documents, not SQLite's default of 1 000 pages.
func TestWALAutoCheckpoint(t *testing.T) {
	s := mustOpen(t, dbPath(t))
	if n, err := sqlite.WALAutoCheckpoint(s); err != nil || n != 10_000 {
		t.Fatalf("wal_autocheckpoint = %d, %v; want 10000", n, err)
	}
}

// TestCheckpointer: writes make the checkpointer copy the log into the
// database in the background; a store where nothing is written runs none.
func TestCheckpointer(t *testing.T) {
	s := mustOpen(t, dbPath(t))
	time.Sleep(100 * time.Millisecond)
	if n := sqlite.Checkpoints(s); n != 0 {
		t.Fatalf("%d checkpoints before any write, want 0", n)
	}
	for i := range 20 {
		mustJoin(t, s, listener(fmt.Sprintf("ck-%d", i), "room.1"), "alice")
	}
	for deadline := time.Now().Add(10 * time.Second); sqlite.Checkpoints(s) == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint 10 s after the writes")
		}
	}
	// At most one more, for commits during the first one's gap.
	time.Sleep(300 * time.Millisecond)
	n := sqlite.Checkpoints(s)
	time.Sleep(300 * time.Millisecond)
	if m := sqlite.Checkpoints(s); m != n {
		t.Fatalf("%d checkpoints while nothing was written", m-n)
	}
}
