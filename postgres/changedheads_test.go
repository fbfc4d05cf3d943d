package postgres_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
)

// headsOnly is a Watcher with the store's Watch and Heads and nothing
// more, so that moitessier.CompareHeads works its answer out from Heads.
type headsOnly struct{ w moitessier.Watcher }

func (h headsOnly) Watch(ctx context.Context, fn func([]moitessier.Head)) error {
	return h.w.Watch(ctx, fn)
}
func (h headsOnly) Heads(ctx context.Context, ids []string) ([]moitessier.Head, error) {
	return h.w.Heads(ctx, ids)
}

// TestChangedHeads checks the store's ChangedHeads, one query, against
// the answer moitessier.CompareHeads works out from its Heads for the same
// heads known: a listener written to since, one deleted, one deleted and
// made again under its ID, one whose creation the caller does not know,
// and ones that did not change (left out).
func TestChangedHeads(t *testing.T) {
	s := mustStore(t)
	ctx := ctxT(t)
	quiet, written, deleted, remade, unbound := join(t, s, "quiet"), join(t, s, "written"), join(t, s, "deleted"), join(t, s, "remade"), join(t, s, "unbound")
	for _, l := range []moitessier.ListenerInfo{quiet, written, remade, unbound} {
		if _, _, err := s.Append(ctx, batch(l.Scopes[0], map[string]string{l.ID: "first"})); err != nil {
			t.Fatal(err)
		}
	}
	known := []moitessier.Head{
		{Listener: quiet.ID, Seq: 1, Created: quiet.Created},
		{Listener: written.ID, Seq: 1, Created: written.Created},
		{Listener: deleted.ID, Seq: 0, Created: deleted.Created},
		{Listener: remade.ID, Seq: 1, Created: remade.Created},
		{Listener: unbound.ID, Seq: 1},
		{Listener: "never made", Seq: 0, Created: time.Now()},
	}
	if _, _, err := s.Append(ctx, batch("written", map[string]string{written.ID: "second"})); err != nil {
		t.Fatal(err)
	}
	for _, l := range []moitessier.ListenerInfo{deleted, remade} {
		if _, err := s.Leave(ctx, l.ID, "p", ""); err != nil {
			t.Fatal(err)
		}
	}
	again := join(t, s, "remade")
	if again.ID != remade.ID || again.Created.Equal(remade.Created) {
		t.Fatalf("made again: %+v, before %+v", again, remade)
	}

	changed, gone, err := s.ChangedHeads(ctx, known)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]moitessier.Head{
		written.ID: {Listener: written.ID, Seq: 2, Created: written.Created},
		remade.ID:  {Listener: remade.ID, Seq: 0, Created: again.Created},
		unbound.ID: {Listener: unbound.ID, Seq: 1, Created: unbound.Created},
	}
	if len(changed) != len(want) {
		t.Fatalf("changed %+v, want %+v", changed, want)
	}
	for _, h := range changed {
		if w, ok := want[h.Listener]; !ok || h.Seq != w.Seq || !h.Created.Equal(w.Created) {
			t.Fatalf("changed %+v, want %+v", h, w)
		}
	}
	slices.Sort(gone)
	if wantGone := slices.Sorted(slices.Values([]string{deleted.ID, "never made"})); !slices.Equal(gone, wantGone) {
		t.Fatalf("gone %v, want %v", gone, wantGone)
	}

	// The same answer as the one worked out from Heads.
	changed2, gone2, err := moitessier.CompareHeads(ctx, headsOnly{s}, known)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(gone2)
	byID := func(a, b moitessier.Head) int {
		switch {
		case a.Listener < b.Listener:
			return -1
		case a.Listener > b.Listener:
			return 1
		}
		return 0
	}
	slices.SortFunc(changed, byID)
	slices.SortFunc(changed2, byID)
	if !slices.EqualFunc(changed, changed2, func(a, b moitessier.Head) bool {
		return a.Listener == b.Listener && a.Seq == b.Seq && a.Created.Equal(b.Created)
	}) || !slices.Equal(gone, gone2) {
		t.Fatalf("ChangedHeads: %+v, gone %v; from Heads: %+v, gone %v", changed, gone, changed2, gone2)
	}

	if changed, gone, err := s.ChangedHeads(ctx, nil); err != nil || changed != nil || gone != nil {
		t.Fatalf("ChangedHeads(nil) = %v, %v, %v", changed, gone, err)
	}
}
