package postgres_test

import (
	"context"
	"errors"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/postgres"
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
	behind, undated := join(t, s, "behind"), join(t, s, "undated")
	for _, l := range []moitessier.ListenerInfo{quiet, written, remade, unbound, behind, undated} {
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
		// IDs that an array's text must quote and escape come back as
		// they went.
		{Listener: `odd "id", with \ and {braces} NULL`, Seq: 0, Created: time.Now()},
		{Listener: "", Seq: 0},
		// A head known above the store's (a stale one), and a row whose
		// creation time the store does not know (as rows of versions
		// before creation times were kept): neither is news.
		{Listener: behind.ID, Seq: 5, Created: behind.Created},
		{Listener: undated.ID, Seq: 1, Created: undated.Created},
	}
	if _, err := s.Pool().Exec(ctx, "UPDATE "+pgx.Identifier{s.Schema(), "listeners"}.Sanitize()+" SET created_ns = $2 WHERE id = $1", undated.ID, int64(math.MinInt64)); err != nil {
		t.Fatal(err)
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
	if wantGone := slices.Sorted(slices.Values([]string{deleted.ID, "never made", `odd "id", with \ and {braces} NULL`, ""})); !slices.Equal(gone, wantGone) {
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

// TestHubCatchesUpWithChangedHeads runs a hub's catch-up read on the
// store's ChangedHeads: a message written by SQL, which sends no
// notification, reaches the subscriber by the read alone, and a listener
// deleted by SQL ends its ListenUntil with ErrClosed.
func TestHubCatchesUpWithChangedHeads(t *testing.T) {
	s := mustStore(t)
	ctx := ctxT(t)
	hub := newHub(t, s, moitessier.Options{CatchUpInterval: 20 * time.Millisecond})
	l, err := hub.NewListener(ctx, moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "quiet"})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan moitessier.Message, 16)
	done := make(chan error, 1)
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		_, err := l.ListenUntil(lctx, nil, func(_ context.Context, msgs []moitessier.Message) error {
			for _, m := range msgs {
				got <- m
			}
			return nil
		}, 0, 0, 0)
		done <- err
	}()
	q := pgx.Identifier{s.Schema()}.Sanitize()
	if _, err := s.Pool().Exec(ctx, `WITH up AS (UPDATE `+q+`.listeners SET head = head + 1 WHERE id = $1 RETURNING id, head)
		INSERT INTO `+q+`.messages (listener, seq, dispatch, scope, sender, body, created_ns)
		SELECT id, head, 'sql', 'quiet', 'sql', 'behind the hub', $2 FROM up`, l.ID(), time.Now().UnixNano()); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m.Text != "behind the hub" || m.Seq != 1 {
			t.Fatalf("delivered %+v", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a message written without a notification was not delivered by the catch-up read")
	}
	if _, err := s.Pool().Exec(ctx, `DELETE FROM `+q+`.listeners WHERE id = $1`, l.ID()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, moitessier.ErrClosed) {
			t.Fatalf("ListenUntil ended with %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ListenUntil went on on a deleted listener")
	}
}

// TestChangedHeadsNonASCII sends IDs that are not ASCII, on a connection
// whose client encoding is SJIS, in which the second byte of 表 (0x95
// 0x5C) is a backslash's: the store sends such IDs as an array, not as the
// text of one, whose escaping would go wrong, and a listener after them
// still gets its own head.
func TestChangedHeadsNonASCII(t *testing.T) {
	ctx := ctxT(t)
	s, err := postgres.New(ctx, postgres.Config{Schema: newSchema(t), DSN: testDSNWith("client_encoding=SJIS")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	var enc string
	if err := s.Pool().QueryRow(ctx, "SHOW client_encoding").Scan(&enc); err != nil || enc != "SJIS" {
		t.Fatalf("client_encoding %q, %v", enc, err)
	}
	l := join(t, s, "after")
	if _, _, err := s.Append(ctx, batch("after", map[string]string{l.ID: "one"})); err != nil {
		t.Fatal(err)
	}
	hyo := "\x95\x5c"
	known := []moitessier.Head{
		{Listener: hyo + `",x,NULL,"`, Seq: 0, Created: time.Now()},
		{Listener: "ünïcödé", Seq: 0},
		{Listener: l.ID, Seq: 0, Created: l.Created},
	}
	changed, gone, err := s.ChangedHeads(ctx, known)
	if err != nil {
		t.Fatal(err)
	}
	if len(changed) != 1 || changed[0].Listener != l.ID || changed[0].Seq != 1 {
		t.Fatalf("changed %+v, want %s at 1", changed, l.ID)
	}
	slices.Sort(gone)
	if want := slices.Sorted(slices.Values([]string{known[0].Listener, known[1].Listener})); !slices.Equal(gone, want) {
		t.Fatalf("gone %q, want %q", gone, want)
	}
}
