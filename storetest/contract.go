package storetest

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
)

// The tests in this file call the Store's methods directly, without a hub:
// they hold every store to the contract written on moitessier.Store.

// st0 is the time of the contract tests, in whole microseconds: a store may
// keep times to the microsecond.
var st0 = time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)

// sid returns a listener ID of the form the hub makes.
func sid(n int) string { return fmt.Sprintf("s%032x", n) }

func info(id string, scopes ...string) moitessier.ListenerInfo {
	return moitessier.ListenerInfo{ID: id, Type: moitessier.Shared, Person: "alice", Scopes: scopes, Created: st0}
}

func subOf(person string) moitessier.Subscriber {
	return moitessier.Subscriber{Person: person, Cursor: moitessier.Resume, Joined: st0, LeaseExpires: st0.Add(time.Hour)}
}

func join(tb testing.TB, s moitessier.Store, l moitessier.ListenerInfo, person string) moitessier.Subscriber {
	tb.Helper()
	_, got, _, err := s.Join(ctxT(tb), l, subOf(person), moitessier.Quota{})
	if err != nil {
		tb.Fatalf("Join(%s, %s): %v", l.ID, person, err)
	}
	return got
}

func batchOf(dispatch string, texts map[string]string) *moitessier.Batch {
	b := &moitessier.Batch{Dispatch: dispatch, Scope: "room.1", Sender: "bob", Created: st0}
	ids := make([]string, 0, len(texts))
	for id := range texts {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		b.Entries = append(b.Entries, moitessier.Entry{Listener: id, Text: texts[id]})
	}
	return b
}

func appendB(tb testing.TB, s moitessier.Store, b *moitessier.Batch) []moitessier.Message {
	tb.Helper()
	msgs, _, err := s.Append(ctxT(tb), b)
	if err != nil {
		tb.Fatalf("Append(%s): %v", b.Dispatch, err)
	}
	return msgs
}

func read(tb testing.TB, s moitessier.Store, id string, after moitessier.Cursor) []moitessier.Message {
	tb.Helper()
	msgs, err := s.Read(ctxT(tb), id, after, 1000)
	if err != nil {
		tb.Fatalf("Read(%s, %d): %v", id, after, err)
	}
	return msgs
}

func textsOf(msgs []moitessier.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.Text
	}
	return out
}

func headOf(tb testing.TB, s moitessier.Store, id string) moitessier.Cursor {
	tb.Helper()
	l, err := s.Listener(ctxT(tb), id)
	if err != nil {
		tb.Fatalf("Listener(%s): %v", id, err)
	}
	return l.Head
}

// reopened returns s reopened if the harness can, else s.
func reopened(tb testing.TB, h Harness, s moitessier.Store) moitessier.Store {
	tb.Helper()
	if h.Reopen == nil {
		return s
	}
	return h.Reopen(tb, s)
}

// testStoreClose: after Close every method fails with an error wrapping
// moitessier.ErrClosed, and a second Close returns nil: closing is
// idempotent, as sql.DB.Close and pgxpool.Pool.Close are, so that a
// deferred Close after an explicit one is harmless.
func testStoreClose(t *testing.T, h Harness) {
	s := h.New(t)
	c, ok := s.(moitessier.Closer)
	if !ok {
		t.Skip("the store is not a moitessier.Closer")
	}
	ctx := ctxT(t)
	l := info(sid(1), "x")
	join(t, s, l, "alice")
	mc, caches := s.(moitessier.MatchCacher)
	if caches {
		// With an answer cached for "x", a store that answered from its
		// cache without checking that it is open would pass MatchCached
		// and MatchAppend below.
		if _, _, err := mc.MatchCached(ctx, "x"); err != nil {
			t.Fatalf("MatchCached before Close: %v", err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v, want nil", err)
	}
	errs := map[string]error{}
	_, _, _, errs["Join"] = s.Join(ctx, info(sid(2), "x"), subOf("bob"), moitessier.Quota{})
	_, errs["Listener"] = s.Listener(ctx, l.ID)
	_, errs["Subscribers"] = s.Subscribers(ctx, l.ID, moitessier.SubscriberRange{})
	_, errs["Leave"] = s.Leave(ctx, l.ID, "alice", "")
	_, errs["Match"] = s.Match(ctx, "x")
	_, _, errs["Append"] = s.Append(ctx, batchOf("d", map[string]string{l.ID: "t"}))
	_, errs["Read"] = s.Read(ctx, l.ID, 0, 10)
	_, errs["Seek"] = s.Seek(ctx, l.ID, st0)
	errs["Checkpoint"] = s.Checkpoint(ctx, []moitessier.Checkpoint{{Listener: l.ID, Person: "alice", Cursor: 1}})
	_, errs["Sweep"] = s.Sweep(ctx, moitessier.SweepParams{Now: st0})
	if w, ok := s.(moitessier.Watcher); ok {
		_, errs["Heads"] = w.Heads(ctx, []string{l.ID})
		errs["Watch"] = w.Watch(ctx, func([]moitessier.Head) {})
	}
	if caches {
		_, _, errs["MatchCached"] = mc.MatchCached(ctx, "x")
	}
	if ma, ok := s.(moitessier.MatchAppender); ok {
		b := batchOf("d", nil)
		b.Scope = "x"
		_, _, _, _, errs["MatchAppend"] = ma.MatchAppend(ctx, b, "t", moitessier.Selection{Sender: "bob"})
	}
	for name, err := range errs {
		if !errors.Is(err, moitessier.ErrClosed) {
			t.Errorf("%s after Close: %v, want an error wrapping ErrClosed", name, err)
		}
	}
}

func testStoreJoin(t *testing.T, h Harness) {
	s := newStore(t, h)
	ctx := ctxT(t)
	id := sid(1)
	l := info(id, "b", "a")
	got, alice, created, err := s.Join(ctx, l, subOf("alice"), moitessier.Quota{})
	if err != nil || !created || got.Head != 0 || !slices.Equal(got.Scopes, []string{"b", "a"}) || alice.Cursor != 0 {
		t.Fatalf("first Join: %+v %+v %v %v", got, alice, created, err)
	}
	if !got.Created.Equal(st0) {
		t.Fatalf("first Join: Created %v, want %v", got.Created, st0)
	}
	appendB(t, s, batchOf("d1", map[string]string{id: "one"}))
	appendB(t, s, batchOf("d2", map[string]string{id: "two"}))

	other := l
	other.Person, other.Scopes, other.Created = "bob", []string{"z"}, st0.Add(time.Minute)
	got, bob, created, err := s.Join(ctx, other, subOf("bob"), moitessier.Quota{})
	if err != nil || created || got.Person != "alice" || !slices.Equal(got.Scopes, []string{"b", "a"}) || got.Head != 2 || !got.Created.Equal(st0) {
		t.Fatalf("second Join: %+v %v %v; want alice's listener as stored, head 2", got, created, err)
	}
	if bob.Cursor != 2 || !bob.LeaseExpires.Equal(st0.Add(time.Hour)) {
		t.Fatalf("new subscriber %+v, want cursor 2", bob)
	}

	// Rejoining keeps the cursor and extends the lease only forward.
	longer := subOf("alice")
	longer.LeaseExpires = st0.Add(3 * time.Hour)
	longer.Joined = st0.Add(time.Hour)
	if _, again, _, err := s.Join(ctx, l, longer, moitessier.Quota{}); err != nil || again.Cursor != 0 || !again.LeaseExpires.Equal(longer.LeaseExpires) || !again.Joined.Equal(st0) {
		t.Fatalf("rejoin: %+v, %v; want cursor 0, the longer lease, the first Joined", again, err)
	}
	shorter := subOf("alice")
	shorter.LeaseExpires = st0
	if _, again, _, err := s.Join(ctx, l, shorter, moitessier.Quota{}); err != nil || !again.LeaseExpires.Equal(longer.LeaseExpires) {
		t.Fatalf("rejoin with a shorter lease: %+v, %v", again, err)
	}

	// Subscribers are ordered by person, then client.
	for _, ps := range [][2]string{{"bob", "tab"}, {"aaron", "z"}, {"bob", "a"}} {
		s2 := subOf(ps[0])
		s2.Client = ps[1]
		if _, _, _, err := s.Join(ctx, l, s2, moitessier.Quota{}); err != nil {
			t.Fatal(err)
		}
	}
	subs, err := s.Subscribers(ctx, id, moitessier.SubscriberRange{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range subs {
		names = append(names, s.Person+"/"+s.Client)
	}
	if want := []string{"aaron/z", "alice/", "bob/", "bob/a", "bob/tab"}; !slices.Equal(names, want) {
		t.Fatalf("subscribers %q, want %q", names, want)
	}
	if _, err := s.Subscribers(ctx, sid(99), moitessier.SubscriberRange{}); !errors.Is(err, moitessier.ErrNotFound) {
		t.Fatalf("Subscribers of a missing listener: %v, want ErrNotFound", err)
	}
	if _, err := s.Listener(ctx, sid(99)); !errors.Is(err, moitessier.ErrNotFound) {
		t.Fatalf("Listener of a missing listener: %v, want ErrNotFound", err)
	}
}

func testStoreLeave(t *testing.T, h Harness) {
	s := newStore(t, h)
	ctx := ctxT(t)
	id := sid(1)
	l := info(id, "room")
	join(t, s, l, "alice")
	join(t, s, l, "bob")
	appendB(t, s, batchOf("d1", map[string]string{id: "one"}))
	if _, err := s.Leave(ctx, id, "carol", ""); !errors.Is(err, moitessier.ErrNotFound) {
		t.Fatalf("Leave of a stranger: %v, want ErrNotFound", err)
	}
	if deleted, err := s.Leave(ctx, id, "alice", ""); err != nil || deleted {
		t.Fatalf("Leave(alice) = %v, %v; want false", deleted, err)
	}
	if deleted, err := s.Leave(ctx, id, "bob", ""); err != nil || !deleted {
		t.Fatalf("Leave(bob) = %v, %v; want true", deleted, err)
	}
	if _, err := s.Listener(ctx, id); !errors.Is(err, moitessier.ErrNotFound) {
		t.Fatalf("Listener after the last Leave: %v", err)
	}
	if ls, _ := s.Match(ctx, "room"); len(ls) != 0 {
		t.Fatalf("Match after the last Leave: %+v", ls)
	}
	if _, err := s.Leave(ctx, id, "bob", ""); !errors.Is(err, moitessier.ErrNotFound) {
		t.Fatalf("Leave of a deleted listener: %v, want ErrNotFound", err)
	}
	// A listener made again under the same ID starts empty, at seq 1.
	join(t, s, l, "alice")
	if got := read(t, s, id, 0); len(got) != 0 {
		t.Fatalf("a recreated listener holds %+v", got)
	}
	if msgs := appendB(t, s, batchOf("d2", map[string]string{id: "two"})); len(msgs) != 1 || msgs[0].Seq != 1 {
		t.Fatalf("append to a recreated listener: %+v, want seq 1", msgs)
	}
	s = reopened(t, h, s)
	if h := headOf(t, s, id); h != 1 {
		t.Fatalf("head %d after reopen, want 1", h)
	}
}

func testStoreReadSeekCheckpoint(t *testing.T, h Harness) {
	s := newStore(t, h)
	ctx := ctxT(t)
	id := sid(1)
	join(t, s, info(id, "x"), "alice")
	for i := range 10 {
		b := batchOf(fmt.Sprint(i), map[string]string{id: fmt.Sprint(i + 1)})
		b.Created = st0.Add(time.Duration(i) * time.Second)
		appendB(t, s, b)
	}
	if got, err := s.Read(ctx, id, 3, 4); err != nil || !slices.Equal(textsOf(got), []string{"4", "5", "6", "7"}) {
		t.Fatalf("Read(3, 4) = %q, %v", textsOf(got), err)
	}
	if got, err := s.Read(ctx, id, 10, 4); err != nil || len(got) != 0 {
		t.Fatalf("Read(10, 4) = %q, %v", textsOf(got), err)
	}
	if got, err := s.Read(ctx, id, moitessier.Resume, 4); err != nil || len(got) != 0 {
		t.Fatalf("Read(Resume, 4) = %q, %v", textsOf(got), err)
	}
	if got, err := s.Read(ctx, sid(99), 0, 4); err != nil || len(got) != 0 {
		t.Fatalf("Read of a missing listener = %q, %v; want nothing, nil", textsOf(got), err)
	}
	for _, tc := range []struct {
		t    time.Time
		want moitessier.Cursor
	}{
		{time.Time{}, 0}, {st0, 0}, {st0.Add(time.Millisecond), 1}, {st0.Add(5 * time.Second), 5},
		{st0.Add(9 * time.Second), 9}, {st0.Add(time.Hour), 10},
	} {
		if got, err := s.Seek(ctx, id, tc.t); err != nil || got != tc.want {
			t.Fatalf("Seek(%v) = %d, %v; want %d", tc.t, got, err, tc.want)
		}
	}
	if _, err := s.Seek(ctx, sid(99), st0); !errors.Is(err, moitessier.ErrNotFound) {
		t.Fatalf("Seek of a missing listener: %v, want ErrNotFound", err)
	}

	lease := st0.Add(5 * time.Hour)
	err := s.Checkpoint(ctx, []moitessier.Checkpoint{
		{Listener: id, Person: "alice", Cursor: 7, LeaseExpires: lease},
		{Listener: id, Person: "ghost", Cursor: 7},
		{Listener: sid(99), Person: "alice", Cursor: 7},
	})
	if err != nil {
		t.Fatalf("Checkpoint with subscribers that do not exist: %v, want them ignored", err)
	}
	if err := s.Checkpoint(ctx, []moitessier.Checkpoint{{Listener: id, Person: "alice", Cursor: 4}}); err != nil {
		t.Fatal(err)
	}
	subs, err := s.Subscribers(ctx, id, moitessier.SubscriberRange{})
	if err != nil || len(subs) != 1 || subs[0].Cursor != 7 || !subs[0].LeaseExpires.Equal(lease) {
		t.Fatalf("after checkpoints: %+v, %v; want alice alone, cursor 7 (it never moves back), lease %v", subs, err, lease)
	}
	earlier := st0.Add(time.Minute)
	if err := s.Checkpoint(ctx, []moitessier.Checkpoint{{Listener: id, Person: "alice", Cursor: 8, LeaseExpires: earlier}}); err != nil {
		t.Fatal(err)
	}
	if subs, _ := s.Subscribers(ctx, id, moitessier.SubscriberRange{}); len(subs) != 1 || subs[0].Cursor != 8 || !subs[0].LeaseExpires.Equal(earlier) {
		t.Fatalf("a checkpoint's lease replaces the stored one: %+v", subs)
	}
	if err := s.Checkpoint(ctx, nil); err != nil {
		t.Fatalf("Checkpoint of nothing: %v", err)
	}
}

// testStoreLeaveOf: IncarnationLeaver.LeaveOf leaves a listener while it
// is the incarnation named, as Leave does, and answers ErrNotFound, leaving
// nothing, for another incarnation (the listener deleted and made again
// under its ID), a listener that does not exist, or a stranger.
func testStoreLeaveOf(t *testing.T, h Harness) {
	s := newStore(t, h)
	il, ok := s.(moitessier.IncarnationLeaver)
	if !ok {
		t.Skip("storetest: StoreLeaveOf: the store has no IncarnationLeaver")
	}
	ctx := ctxT(t)
	id := sid(1)
	cur := info(id, "room")
	join(t, s, cur, "alice")
	join(t, s, cur, "bob")
	other := cur.Created.Add(time.Second)
	subscribers := func() int {
		t.Helper()
		subs, err := s.Subscribers(ctx, id, moitessier.SubscriberRange{})
		if err != nil {
			t.Fatal(err)
		}
		return len(subs)
	}
	for _, c := range []struct {
		what, id, person string
		created          time.Time
	}{
		{"another incarnation", id, "alice", other},
		{"a listener that does not exist", sid(2), "alice", cur.Created},
		{"a stranger", id, "carol", cur.Created},
	} {
		if deleted, err := il.LeaveOf(ctx, c.id, c.created, c.person, ""); !errors.Is(err, moitessier.ErrNotFound) || deleted {
			t.Fatalf("LeaveOf(%s) = %v, %v; want ErrNotFound", c.what, deleted, err)
		}
		if n := subscribers(); n != 2 {
			t.Fatalf("after LeaveOf(%s), %d subscribers; want 2", c.what, n)
		}
	}
	if deleted, err := il.LeaveOf(ctx, id, cur.Created, "alice", ""); err != nil || deleted {
		t.Fatalf("LeaveOf(its incarnation, alice) = %v, %v; want false", deleted, err)
	}
	if deleted, err := il.LeaveOf(ctx, id, cur.Created, "bob", ""); err != nil || !deleted {
		t.Fatalf("LeaveOf(its incarnation, bob) = %v, %v; want true", deleted, err)
	}
	// Made again under its ID: the deleted incarnation's handle leaves
	// nothing of the new one.
	again := cur
	again.Created = other
	join(t, s, again, "bob")
	if deleted, err := il.LeaveOf(ctx, id, cur.Created, "bob", ""); !errors.Is(err, moitessier.ErrNotFound) || deleted {
		t.Fatalf("LeaveOf(the deleted incarnation) = %v, %v; want ErrNotFound", deleted, err)
	}
	if n := subscribers(); n != 1 {
		t.Fatalf("the new incarnation has %d subscribers after a LeaveOf of the old; want 1", n)
	}
	if deleted, err := il.LeaveOf(ctx, id, other, "bob", ""); err != nil || !deleted {
		t.Fatalf("LeaveOf(the new incarnation, bob) = %v, %v; want true", deleted, err)
	}
}

// testStoreCheckpointIncarnation: a checkpoint that names an incarnation
// of its listener deleted since (another Created) is ignored: the new
// incarnation's sequence starts anew, and the old cursor would skip its
// first messages. One that names the incarnation that exists, or none,
// applies.
func testStoreCheckpointIncarnation(t *testing.T, h Harness) {
	s := newStore(t, h)
	ctx := ctxT(t)
	id := sid(1)
	old := info(id, "room")
	join(t, s, old, "alice")
	for i := range 5 {
		appendB(t, s, batchOf(fmt.Sprint("o", i), map[string]string{id: "old"}))
	}
	if deleted, err := s.Leave(ctx, id, "alice", ""); err != nil || !deleted {
		t.Fatalf("Leave(alice) = %v, %v; want the listener deleted", deleted, err)
	}
	cur := old
	cur.Created = st0.Add(time.Second)
	join(t, s, cur, "alice")
	for i := range 3 {
		appendB(t, s, batchOf(fmt.Sprint("n", i), map[string]string{id: "new"}))
	}
	alice := func() moitessier.Subscriber {
		t.Helper()
		subs, err := s.Subscribers(ctx, id, moitessier.SubscriberRange{})
		if err != nil || len(subs) != 1 {
			t.Fatalf("Subscribers = %+v, %v; want alice alone", subs, err)
		}
		return subs[0]
	}
	joined := alice()
	stale := moitessier.Checkpoint{Listener: id, Person: "alice", Cursor: 5, LeaseExpires: st0.Add(9 * time.Hour), Created: old.Created}
	if err := s.Checkpoint(ctx, []moitessier.Checkpoint{stale}); err != nil {
		t.Fatal(err)
	}
	if got := alice(); got.Cursor != joined.Cursor || !got.LeaseExpires.Equal(joined.LeaseExpires) {
		t.Fatalf("a checkpoint of the deleted incarnation moved alice to %d (lease %v); want %d (lease %v)",
			got.Cursor, got.LeaseExpires, joined.Cursor, joined.LeaseExpires)
	}
	lease := st0.Add(2 * time.Hour)
	if err := s.Checkpoint(ctx, []moitessier.Checkpoint{{Listener: id, Person: "alice", Cursor: 1, LeaseExpires: lease, Created: cur.Created}}); err != nil {
		t.Fatal(err)
	}
	if got := alice(); got.Cursor != 1 || !got.LeaseExpires.Equal(lease) {
		t.Fatalf("a checkpoint of the incarnation that exists: cursor %d, lease %v; want 1, %v", got.Cursor, got.LeaseExpires, lease)
	}
	// Both in one call: only the current one applies.
	stale.Cursor = 3
	if err := s.Checkpoint(ctx, []moitessier.Checkpoint{stale, {Listener: id, Person: "alice", Cursor: 2, Created: cur.Created}}); err != nil {
		t.Fatal(err)
	}
	if got := alice(); got.Cursor != 2 || !got.LeaseExpires.Equal(lease) {
		t.Fatalf("checkpoints of both incarnations in one call: cursor %d, lease %v; want 2, %v", got.Cursor, got.LeaseExpires, lease)
	}
	if err := s.Checkpoint(ctx, []moitessier.Checkpoint{{Listener: id, Person: "alice", Cursor: 3}}); err != nil {
		t.Fatal(err)
	}
	if got := alice(); got.Cursor != 3 {
		t.Fatalf("a checkpoint that names no incarnation: cursor %d, want 3", got.Cursor)
	}
	// One that names none and one that names this incarnation, in one
	// call: both apply.
	appendB(t, s, batchOf("n3", map[string]string{id: "new"}))
	lease = st0.Add(3 * time.Hour)
	if err := s.Checkpoint(ctx, []moitessier.Checkpoint{
		{Listener: id, Person: "alice", Cursor: 4},
		{Listener: id, Person: "alice", Cursor: 2, LeaseExpires: lease, Created: cur.Created},
	}); err != nil {
		t.Fatal(err)
	}
	if got := alice(); got.Cursor != 4 || !got.LeaseExpires.Equal(lease) {
		t.Fatalf("checkpoints naming no incarnation and this one: cursor %d, lease %v; want 4, %v", got.Cursor, got.LeaseExpires, lease)
	}
}

// testStoreOddInput: quotes, SQL, backslashes, format verbs, unicode and
// NUL bytes in every field the hub lets through are stored and returned
// byte for byte, never interpreted.
func testStoreOddInput(t *testing.T, h Harness) {
	s := newStore(t, h)
	ctx := ctxT(t)
	odd := []string{
		`it's "quoted"`,
		`'); DROP TABLE messages; --`,
		`back\slash %s %d ? ?1 :name @name $1 $$dollar$$`,
		"robert'); DELETE FROM listeners WHERE ('1'='1",
		"héllo wörld, 日本語, emoji 🎉, rtl \u202e",
	}
	texts := append(append([]string{}, odd...), "tab\tnewline\nreturn\r", "nul\x00byte\x00", "\x00", "\x01\x7f")
	person, client := `o'neil "x" \ 🎉`, `tab ' 1; --`
	check := func(s moitessier.Store) {
		t.Helper()
		for i, scope := range odd {
			id := sid(i + 1)
			msgs, err := s.Read(ctx, id, 0, 100)
			if err != nil || len(msgs) != len(texts) {
				t.Fatalf("listener %d holds %d messages, %v; want %d", i, len(msgs), err, len(texts))
			}
			for j, m := range msgs {
				if m.Text != texts[j] || m.Scope != scope || m.Sender != odd[(i+1)%len(odd)] || m.Dispatch != "d'"+fmt.Sprint(i) {
					t.Fatalf("message %d of listener %d: %q/%q/%q, want %q/%q/%q", j, i, m.Text, m.Scope, m.Sender, texts[j], scope, odd[(i+1)%len(odd)])
				}
			}
			l, err := s.Listener(ctx, id)
			if err != nil || l.Person != person || l.Client != client || !slices.Equal(l.Scopes, []string{scope}) {
				t.Fatalf("listener %d: %+v, %v", i, l, err)
			}
			if ls, err := s.Match(ctx, scope); err != nil || len(ls) != 1 || ls[0].ID != id {
				t.Fatalf("Match(%q) = %+v, %v", scope, ls, err)
			}
			subs, err := s.Subscribers(ctx, id, moitessier.SubscriberRange{})
			if err != nil || len(subs) != 1 || subs[0].Person != person || subs[0].Client != client {
				t.Fatalf("subscribers of listener %d: %+v, %v", i, subs, err)
			}
		}
	}
	for i, scope := range odd {
		if err := moitessier.ValidateScope(scope); err != nil {
			t.Fatalf("the test's scope %q is one the hub refuses: %v", scope, err)
		}
		l := moitessier.ListenerInfo{ID: sid(i + 1), Type: moitessier.Private, Person: person, Client: client, Scopes: []string{scope}, Created: st0}
		if _, _, _, err := s.Join(ctx, l, moitessier.Subscriber{Person: person, Client: client, Joined: st0, LeaseExpires: st0.Add(time.Hour)}, moitessier.Quota{}); err != nil {
			t.Fatalf("Join(%q): %v", scope, err)
		}
		b := &moitessier.Batch{Dispatch: "d'" + fmt.Sprint(i), Scope: scope, Sender: odd[(i+1)%len(odd)], Created: st0, Key: "k'" + scope}
		for _, text := range texts {
			b.Entries = append(b.Entries, moitessier.Entry{Listener: l.ID, Text: text})
		}
		appendB(t, s, b)
	}
	check(s)
	if h.Reopen != nil {
		check(h.Reopen(t, s))
	}
}

// testStoreMatchAppend: a MatchAppender matches and appends, on a scope it
// has no answer for, to exactly the listeners the selection takes, answers
// from its cache afterwards, and appends nothing when a Handler listener
// has handlers to run. Stores that are not MatchAppenders skip it.
func testStoreMatchAppend(t *testing.T, h Harness) {
	s := newStore(t, h)
	ma, ok := s.(moitessier.MatchAppender)
	if !ok {
		t.Skip("not a MatchAppender")
	}
	ctx := ctxT(t)
	scopes := []string{"m.a", "m.b", "m.c"}
	listener := func(n int, typ moitessier.ListenerType, person string, scopes ...string) string {
		l := info(sid(n), scopes...)
		l.Type, l.Person = typ, person
		join(t, s, l, person)
		return l.ID
	}
	shared := listener(1, moitessier.Shared, "alice", scopes...)
	bobs := listener(2, moitessier.Private, "bob", scopes...)
	carols := listener(3, moitessier.Private, "carol", scopes...)
	handler := listener(4, moitessier.Handler, "dave", scopes...)
	wild := listener(5, moitessier.Shared, "erin", "m.*")
	listener(6, moitessier.Shared, "alice", "n.a")
	// Scopes no pattern matches: one listener taken, one not, several.
	frank := listener(7, moitessier.Shared, "frank", "p.one")
	carolsOther := listener(8, moitessier.Private, "carol", "p.other")
	many := []string{listener(9, moitessier.Shared, "frank", "p.many"), listener(10, moitessier.Private, "bob", "p.many"), listener(11, moitessier.Private, "carol", "p.many")}
	all := []string{shared, bobs, carols, handler, wild}
	slices.Sort(all)
	sorted := func(ids []string) []string { slices.Sort(ids); return ids }
	heads := map[string]moitessier.Cursor{}
	call := func(scope string, sel moitessier.Selection) ([]string, []string, moitessier.MatchStamp, bool) {
		t.Helper()
		b := &moitessier.Batch{Dispatch: "d-" + scope, Scope: scope, Sender: "bob", Created: st0}
		ls, stamp, msgs, appended, err := ma.MatchAppend(ctx, b, "t", sel)
		if err != nil {
			t.Fatalf("MatchAppend(%s): %v", scope, err)
		}
		var matched, written []string
		for _, l := range ls {
			matched = append(matched, l.ID)
		}
		for i, m := range msgs {
			heads[m.Listener]++
			if m.Seq != heads[m.Listener] || m.Text != "t" || m.Scope != scope || m.Sender != "bob" || m.Dispatch != b.Dispatch || !m.Created.Equal(st0) {
				t.Errorf("MatchAppend(%s): message %d: %+v", scope, i, m)
			}
			written = append(written, m.Listener)
			if r, err := s.Read(ctx, m.Listener, m.Seq-1, 10); err != nil || len(r) != 1 || r[0] != m {
				t.Errorf("Read(%s) after MatchAppend(%s): %+v %v", m.Listener, scope, r, err)
			}
		}
		return sorted(matched), sorted(written), stamp, appended
	}

	// A Handler listener with handlers to run: nothing is appended.
	matched, written, stamp, appended := call("m.a", moitessier.Selection{Sender: "bob", Handlers: true})
	if appended || len(written) != 0 || !slices.Equal(matched, all) || stamp == nil {
		t.Fatalf("with handlers: matched %v, wrote %v, appended %v, stamp %v", matched, written, appended, stamp)
	}
	for _, id := range all {
		if r, err := s.Read(ctx, id, 0, 10); err != nil || len(r) != 0 {
			t.Fatalf("Read(%s) after a MatchAppend that appended nothing: %d messages, %v", id, len(r), err)
		}
	}
	// Without: the Shared, the sender's Private, the Handler and the
	// wildcard listener get the text; carol's Private one does not.
	matched, written, _, appended = call("m.b", moitessier.Selection{Sender: "bob"})
	if want := sorted([]string{shared, bobs, handler, wild}); !appended || !slices.Equal(matched, all) || !slices.Equal(written, want) {
		t.Fatalf("m.b: matched %v, wrote %v (want %v), appended %v", matched, written, want, appended)
	}
	// Now cached: answered without appending.
	matched, written, stamp, appended = call("m.b", moitessier.Selection{Sender: "bob"})
	if appended || len(written) != 0 || !slices.Equal(matched, all) || stamp == nil {
		t.Fatalf("m.b again: matched %v, wrote %v, appended %v, stamp %v", matched, written, appended, stamp)
	}
	// Addressed to carol: only the Private listeners of bob and carol, even
	// with handlers.
	matched, written, _, appended = call("m.c", moitessier.Selection{Sender: "bob", To: []string{"carol"}, Addressed: true, Handlers: true})
	if want := sorted([]string{bobs, carols}); !appended || !slices.Equal(matched, all) || !slices.Equal(written, want) {
		t.Fatalf("m.c: matched %v, wrote %v (want %v), appended %v", matched, written, want, appended)
	}
	// A scope nothing matches.
	matched, written, _, appended = call("o.a", moitessier.Selection{Sender: "bob"})
	if !appended || len(matched) != 0 || len(written) != 0 {
		t.Fatalf("o.a: matched %v, wrote %v, appended %v", matched, written, appended)
	}
	// A scope of one listener, taken or not, and one of several, of which
	// the Shared one and the sender's Private one get the text.
	for _, c := range []struct {
		scope            string
		matched, written []string
	}{
		{"p.one", []string{frank}, []string{frank}},
		{"p.other", []string{carolsOther}, nil},
		{"p.many", sorted(slices.Clone(many)), sorted(slices.Clone(many[:2]))},
	} {
		matched, written, stamp, appended = call(c.scope, moitessier.Selection{Sender: "bob"})
		if !appended || stamp == nil || !slices.Equal(matched, c.matched) || !slices.Equal(written, c.written) {
			t.Fatalf("%s: matched %v (want %v), wrote %v (want %v), appended %v, stamp %v", c.scope, matched, c.matched, written, c.written, appended, stamp)
		}
		// Now cached: the same listeners, and nothing appended.
		matched, written, stamp, appended = call(c.scope, moitessier.Selection{Sender: "bob"})
		if appended || stamp == nil || !slices.Equal(matched, c.matched) || len(written) != 0 {
			t.Fatalf("%s again: matched %v (want %v), wrote %v, appended %v, stamp %v", c.scope, matched, c.matched, written, appended, stamp)
		}
	}
}

// testStoreReadOf: IncarnationReader.ReadOf reads a listener's messages
// while it is the incarnation named, as Read does, and answers
// ErrNotFound for another incarnation (the listener deleted and made
// again under its ID) or a listener that does not exist, whatever the
// cursor and limit, rather than hand the new incarnation's messages over
// as the old one's.
func testStoreReadOf(t *testing.T, h Harness) {
	s := newStore(t, h)
	r, ok := s.(moitessier.IncarnationReader)
	if !ok {
		t.Skip("storetest: StoreReadOf: the store has no IncarnationReader")
	}
	ctx := ctxT(t)
	id := sid(1)
	old := info(id, "room")
	join(t, s, old, "alice")
	for i := range 3 {
		appendB(t, s, batchOf(fmt.Sprint("o", i), map[string]string{id: fmt.Sprint("old", i)}))
	}
	texts := func(msgs []moitessier.Message) []string {
		var out []string
		for _, m := range msgs {
			out = append(out, m.Text)
		}
		return out
	}
	got, err := r.ReadOf(ctx, id, old.Created, 1, 10)
	if err != nil || !slices.Equal(texts(got), []string{"old1", "old2"}) {
		t.Fatalf("ReadOf(its incarnation, after 1) = %q, %v; want old1, old2", texts(got), err)
	}
	if got, err := r.ReadOf(ctx, id, old.Created, 3, 10); err != nil || len(got) != 0 {
		t.Fatalf("ReadOf(its incarnation, at the head) = %q, %v; want nothing", texts(got), err)
	}
	notFound := func(what string, id string, created time.Time, after moitessier.Cursor, limit int) {
		t.Helper()
		if got, err := r.ReadOf(ctx, id, created, after, limit); !errors.Is(err, moitessier.ErrNotFound) {
			t.Fatalf("ReadOf(%s) = %q, %v; want ErrNotFound", what, texts(got), err)
		}
	}
	other := old.Created.Add(time.Second)
	notFound("another incarnation", id, other, 0, 10)
	notFound("another incarnation, at the head", id, other, 3, 10)
	notFound("another incarnation, no limit", id, other, 0, 0)
	notFound("another incarnation, from Resume", id, other, moitessier.Resume, 10)
	for _, c := range []struct {
		after moitessier.Cursor
		limit int
	}{{0, 0}, {moitessier.Resume, 10}} {
		if got, err := r.ReadOf(ctx, id, old.Created, c.after, c.limit); err != nil || len(got) != 0 {
			t.Fatalf("ReadOf(its incarnation, after %d, limit %d) = %q, %v; want nothing", c.after, c.limit, texts(got), err)
		}
	}
	notFound("a listener that does not exist", sid(2), old.Created, 0, 10)
	if deleted, err := s.Leave(ctx, id, "alice", ""); err != nil || !deleted {
		t.Fatalf("Leave(alice) = %v, %v; want the listener deleted", deleted, err)
	}
	notFound("a deleted listener", id, old.Created, 0, 10)
	cur := old
	cur.Created = other
	join(t, s, cur, "bob")
	for i := range 3 {
		appendB(t, s, batchOf(fmt.Sprint("n", i), map[string]string{id: fmt.Sprint("new", i)}))
	}
	notFound("the deleted incarnation", id, old.Created, 0, 10)
	notFound("the deleted incarnation, after 1", id, old.Created, 1, 1)
	if got, err := r.ReadOf(ctx, id, cur.Created, 0, 2); err != nil || !slices.Equal(texts(got), []string{"new0", "new1"}) {
		t.Fatalf("ReadOf(the new incarnation) = %q, %v; want new0, new1", texts(got), err)
	}
}
