package live

import (
	"context"
	"testing"
	"time"
)

// TestAddAllocs checks that adding a message to a cache allocates no copy
// of it: Add runs under the cache's lock once per dispatch, and the copy
// (a local's address given to the seq function) made the memory store's
// dispatch-8 workload measurably slower. What is left is the new wake
// channel and, now and then, the buffer's growth.
func TestAddAllocs(t *testing.T) {
	lv := newLive("l")
	msgs := make([]Message, 1200)
	for i := range msgs {
		msgs[i] = Message{Listener: "l", Seq: Cursor(i + 1), Text: "x"}
	}
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		lv.Add(msgs[i:i+1], anyInc, 1<<20)
		i++
	})
	if allocs > 1.5 {
		t.Errorf("Add allocates %.2f times per message, want at most the wake channel (1) and the buffer's growth", allocs)
	}
	if got := lv.buf.len(); got != i {
		t.Fatalf("cache holds %d messages, want %d", got, i)
	}
}

// TestNextBackAllocs checks that a reader served from the cache's last
// store read (back) costs no allocation: its binary search must not copy
// the messages it compares to the heap.
func TestNextBackAllocs(t *testing.T) {
	lv := newLive("l")
	lv.Observe(200)
	var newer []Message
	for s := Cursor(201); s <= 300; s++ {
		newer = append(newer, Message{Listener: "l", Seq: s})
	}
	lv.Add(newer, anyInc, 1024)
	var older []Message
	for s := Cursor(1); s <= 100; s++ {
		older = append(older, Message{Listener: "l", Seq: s})
	}
	read := func(ctx context.Context, id string, _ time.Time, after uint64, limit int) ([]Message, error) {
		return older[after:min(len(older), int(after)+limit)], nil
	}
	if got, _, _, err := lv.Fill(context.Background(), read, 0, 100, 1024); err != nil || len(got) != 100 {
		t.Fatalf("Fill: %d messages, %v", len(got), err)
	}
	var got []Message
	allocs := testing.AllocsPerRun(100, func() { got, _, _, _ = lv.Next(50, 10) })
	if len(got) != 10 || got[0].Seq != 51 {
		t.Fatalf("Next(50) from the store read: %d messages, first %v", len(got), got)
	}
	if allocs != 0 {
		t.Errorf("Next from the store read allocates %.1f times, want 0", allocs)
	}
}
