package checkpoints

import (
	"slices"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
)

func TestMerge(t *testing.T) {
	t1 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	t2 := t1.Add(time.Hour)
	in := []moitessier.Checkpoint{
		{Listener: "b", Person: "p", Client: "c", Cursor: 5, LeaseExpires: t1},
		{Listener: "a", Person: "q", Cursor: 1},
		{Listener: "b", Person: "p", Client: "c", Cursor: 3, LeaseExpires: t2}, // smaller cursor, later lease
		{Listener: "a", Person: "p", Client: "z", Cursor: 2},
		{Listener: "b", Person: "p", Client: "c", Cursor: 4}, // no lease: keeps t2
		{Listener: "a", Person: "p", Client: "", Cursor: 7},
		// Separated fields sort by field, not as one string: "a\x00b" > "a".
		{Listener: "a\x00b", Person: "", Cursor: 8},
		{Listener: "a", Person: "\x00", Cursor: 9},
		// Another incarnation of listener c: kept apart, sorted by Created.
		{Listener: "c", Person: "p", Cursor: 6, Created: t2},
		{Listener: "c", Person: "p", Cursor: 3, Created: t1},
		{Listener: "c", Person: "p", Cursor: 4, Created: t2},
	}
	orig := slices.Clone(in)
	got := Merge(in)
	want := []moitessier.Checkpoint{
		{Listener: "a", Person: "\x00", Cursor: 9},
		{Listener: "a", Person: "p", Client: "", Cursor: 7},
		{Listener: "a", Person: "p", Client: "z", Cursor: 2},
		{Listener: "a", Person: "q", Cursor: 1},
		{Listener: "a\x00b", Person: "", Cursor: 8},
		{Listener: "b", Person: "p", Client: "c", Cursor: 5, LeaseExpires: t2},
		{Listener: "c", Person: "p", Cursor: 3, Created: t1},
		{Listener: "c", Person: "p", Cursor: 6, Created: t2},
	}
	if !slices.Equal(got, want) {
		t.Errorf("Merge =\n%v\nwant\n%v", got, want)
	}
	if !slices.Equal(in, orig) {
		t.Errorf("Merge modified its argument")
	}
	if got := Merge(nil); len(got) != 0 {
		t.Errorf("Merge(nil) = %v; want empty", got)
	}
}
