package sqlite_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
)

func TestSweep(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, dbPath(t))
	now := t0.Add(24 * time.Hour)
	short := func(p string) moitessier.Subscriber {
		return moitessier.Subscriber{Person: p, Joined: t0, LeaseExpires: now.Add(-time.Second)}
	}
	long := func(p string) moitessier.Subscriber {
		return moitessier.Subscriber{Person: p, Joined: t0, LeaseExpires: now.Add(time.Hour)}
	}
	join := func(l moitessier.ListenerInfo, sub moitessier.Subscriber) {
		t.Helper()
		if _, _, _, err := s.Join(ctx, l, sub, moitessier.Quota{}); err != nil {
			t.Fatal(err)
		}
	}
	// gone: one expired subscriber and many messages; half: one of two expired;
	// kept: fresh, with old and new messages.
	join(listener("gone", "g"), short("a"))
	join(listener("half", "h"), short("a"))
	join(listener("half", "h"), long("b"))
	join(listener("kept", "k"), long("a"))
	for i := range 25 {
		b := batch(fmt.Sprint(i), map[string]string{"gone": "g", "half": "h", "kept": fmt.Sprint(i + 1)})
		b.Created = now.Add(-time.Duration(25-i) * time.Minute) // 25 min ago … 1 min ago
		b.Key = fmt.Sprint("key", i)
		mustAppend(t, s, b)
	}
	res, err := s.Sweep(ctx, moitessier.SweepParams{
		Now:        now,
		MaxAge:     20*time.Minute + time.Second, // drops the 5 oldest
		MaxCount:   15,                           // then keeps the newest 15
		KeysBefore: now.Add(-10*time.Minute - time.Second),
		BatchSize:  4,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Expired) != 1 || res.Expired[0].ID != "gone" || res.Expired[0].Head != 25 {
		t.Fatalf("expired %+v, want gone", res.Expired)
	}
	// 2 subscribers; messages: 25 of gone, 10 each of half and kept; keys 15.
	if res.Subscribers != 2 || res.Messages != 25+10+10 || res.Keys != 15 {
		t.Fatalf("sweep removed %d subscribers, %d messages, %d keys; want 2, 45, 15", res.Subscribers, res.Messages, res.Keys)
	}
	if _, err := s.Listener(ctx, "gone"); !errors.Is(err, moitessier.ErrNotFound) {
		t.Fatalf("swept listener: %v", err)
	}
	if ls, _ := s.Match(ctx, "g"); len(ls) != 0 {
		t.Fatalf("Match finds a swept listener: %+v", ls)
	}
	got := mustRead(t, s, "kept", 0)
	if len(got) != 15 || got[0].Seq != 11 || got[14].Seq != 25 {
		t.Fatalf("kept holds %d messages, %s…", len(got), texts(got))
	}
	if h := head(t, s, "kept"); h != 25 {
		t.Fatalf("kept head %d, want 25", h)
	}
	// The newest keys still replay.
	b := batch("again", map[string]string{"kept": "x"})
	b.Key = "key24"
	if msgs, replayed, err := s.Append(ctx, b); err != nil || !replayed || len(msgs) != 2 || msgs[0].Listener != "half" || msgs[1].Seq != 25 {
		t.Fatalf("replay after sweep: %+v, %v, %v", msgs, replayed, err)
	}
	// A second sweep finds nothing more.
	res, err = s.Sweep(ctx, moitessier.SweepParams{Now: now, MaxAge: 20*time.Minute + time.Second, MaxCount: 15,
		KeysBefore: now.Add(-10*time.Minute - time.Second), BatchSize: 4})
	if err != nil || len(res.Expired) != 0 || res.Subscribers+res.Messages+res.Keys != 0 {
		t.Fatalf("second sweep: %+v, %v", res, err)
	}
	s = reopen(t, s)
	if got := mustRead(t, s, "kept", 0); len(got) != 15 {
		t.Fatalf("after reopen kept holds %d messages", len(got))
	}
	if _, err := s.Listener(ctx, "gone"); !errors.Is(err, moitessier.ErrNotFound) {
		t.Fatalf("swept listener after reopen: %v", err)
	}
	// Trimming by count after reopen goes on from the stored heads.
	res, err = s.Sweep(ctx, moitessier.SweepParams{Now: now, MaxCount: 5})
	if err != nil || res.Messages != 20 {
		t.Fatalf("sweep to 5 per listener: %+v, %v; want 20 messages", res, err)
	}
}

// TestSweepAllKeepsHead checks that a listener whose every message Sweep
// removes keeps its head, in the file as well as in memory: appends do not
// write the head down, the messages show it.
func TestSweepAllKeepsHead(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, dbPath(t))
	mustJoin(t, s, listener("l", "room.1"), "alice")
	for i := range 5 {
		mustAppend(t, s, batch(fmt.Sprint(i), map[string]string{"l": "m"}))
	}
	res, err := s.Sweep(ctx, moitessier.SweepParams{Now: t0.Add(time.Hour), MaxAge: time.Minute, BatchSize: 2})
	if err != nil || res.Messages != 5 {
		t.Fatalf("Sweep removed %d messages (%v), want 5", res.Messages, err)
	}
	s = reopen(t, s)
	if h := head(t, s, "l"); h != 5 {
		t.Fatalf("head after sweeping every message and reopening: %d, want 5", h)
	}
	if msgs := mustAppend(t, s, batch("next", map[string]string{"l": "m"})); msgs[0].Seq != 6 {
		t.Fatalf("seq after sweeping every message and reopening: %d, want 6", msgs[0].Seq)
	}
}
