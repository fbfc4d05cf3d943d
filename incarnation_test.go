package moitessier_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/memstore"
)

// TestStaleCatchUpKeepsCurrent: a catch-up whose Heads answer was read
// before the listener was deleted and made again in this very hub (naming
// the old incarnation), or between the deletion and the re-creation
// (missing it), does not end the ListenUntil of the new incarnation, whose
// cache was made after the answer was read, and which then gets what is
// dispatched to it.
func TestStaleCatchUpKeepsCurrent(t *testing.T) {
	for _, tc := range []struct {
		name        string
		readDeleted bool
	}{{"answer names the old incarnation", false}, {"answer misses the listener", true}} {
		t.Run(tc.name, func(t *testing.T) { staleCatchUp(t, tc.readDeleted) })
	}
}

func staleCatchUp(t *testing.T, readDeleted bool) {
	ctx := context.Background()
	st := &headsStore{Store: memstore.New()}
	hub := memHubOn(t, st, moitessier.Options{CatchUpInterval: 5 * time.Millisecond})
	c := moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "room"}
	l1, err := hub.NewListener(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	ctx1, cancel1 := context.WithCancel(ctx)
	done1 := make(chan error, 1)
	go func() {
		_, err := l1.ListenUntil(ctx1, nil, func(context.Context, []moitessier.Message) error { return nil }, 0, 0, 0)
		done1 <- err
	}()
	for hub.Stats().Listening < 1 {
		time.Sleep(time.Millisecond)
	}
	br, rg, ar, ag := make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{})
	st.mu.Lock()
	st.beforeRead, st.readGate, st.afterRead, st.applyGate = br, rg, ar, ag
	st.mu.Unlock()
	<-br // a catch-up took the caches (the listener's among them)
	read := func() { close(rg); <-ar }
	if !readDeleted {
		read()
	}
	cancel1()
	<-done1
	if err := l1.Close(ctx); err != nil { // deleted
		t.Fatal(err)
	}
	if readDeleted {
		read()
	}
	time.Sleep(2 * time.Millisecond) // a creation time of its own
	l2, err := hub.NewListener(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if l2.ID() != l1.ID() {
		t.Fatal("another ID")
	}
	done2 := make(chan error, 1)
	got := make(chan []moitessier.Message, 1)
	go func() {
		_, err := l2.ListenUntil(ctx, nil, func(_ context.Context, m []moitessier.Message) error { got <- m; return errGot }, 0, 0, 5*time.Second)
		done2 <- err
	}()
	for hub.Stats().Listening < 1 {
		time.Sleep(time.Millisecond)
	}
	close(ag) // the stale answer is applied
	time.Sleep(50 * time.Millisecond)
	select {
	case err := <-done2:
		t.Fatalf("the current incarnation's ListenUntil ended: %v", err)
	default:
	}
	if _, err := hub.Dispatch(ctx, "s", "room", "hello"); err != nil {
		t.Fatal(err)
	}
	var m []moitessier.Message
	select {
	case m = <-got:
	case err := <-done2:
		// The responder hands the messages over before it returns errGot,
		// so both may be ready when the select runs.
		if !errors.Is(err, errGot) {
			t.Fatalf("ListenUntil ended: %v", err)
		}
		m = <-got
	}
	if len(m) != 1 || m[0].Text != "hello" {
		t.Fatalf("delivered %+v, want hello", m)
	}
}

// errGot is what staleCatchUp's responder returns once it has the messages.
var errGot = errors.New("got")

// TestOldCacheIgnoresNewIncarnation: a ListenUntil on a listener deleted
// elsewhere and made again is not handed the new incarnation's messages
// that its own hub dispatches (its cache, bound to the old one, ignores
// them).
func TestOldCacheIgnoresNewIncarnation(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := memstore.New()
	hubA := memHubOn(t, st, moitessier.Options{})
	hubB := memHubOn(t, st, moitessier.Options{})
	a, err := hubA.NewListener(ctx, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "room"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hubA.Dispatch(ctx, "s", "room", "old"); err != nil {
		t.Fatal(err)
	}
	texts, _ := listenTexts(ctx, a)
	waitTexts(t, texts, 1)
	if err := hubB.Leave(ctx, a.ID(), "alice", ""); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond)
	if _, err := hubB.NewListener(ctx, moitessier.Conditions{Person: "bob", Type: moitessier.Shared, Scope: "room"}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := hubA.Dispatch(ctx, "s", "room", "new"+string(rune('0'+i))); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond)
	if got := texts(); len(got) > 1 {
		t.Fatalf("the deleted incarnation's subscriber got the new one's messages: %q", got)
	}
}

// listenTexts runs l.ListenUntil from cursor 0 under ctx: texts returns
// the texts it handed over so far, and its result comes on done.
func listenTexts(ctx context.Context, l *moitessier.Listener) (texts func() []string, done <-chan error) {
	var (
		mu  sync.Mutex
		got []string
	)
	d := make(chan error, 1)
	go func() {
		_, err := l.ListenUntil(ctx, nil, func(_ context.Context, ms []moitessier.Message) error {
			mu.Lock()
			defer mu.Unlock()
			for _, m := range ms {
				got = append(got, m.Text)
			}
			return nil
		}, 0, 0, 0)
		d <- err
	}()
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}, d
}

// waitTexts waits up to 10 s until texts has n texts.
func waitTexts(t *testing.T, texts func() []string, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); len(texts()) < n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d texts handed over in 10 s, want %d: %q", len(texts()), n, texts())
		}
	}
}

// recreatingStore is a memory store that, once armed, deletes listener id
// and makes it again (another incarnation, with messages of its own) just
// before the next read of it: as another process may between a reader's
// last look at the listener and its read.
type recreatingStore struct {
	*memstore.Store
	mu sync.Mutex
	id string // armed for this listener; "" when not
}

func (s *recreatingStore) recreate(ctx context.Context, id string) error {
	s.mu.Lock()
	armed := s.id == id
	if armed {
		s.id = ""
	}
	s.mu.Unlock()
	if !armed {
		return nil
	}
	old, err := s.Listener(ctx, id)
	if err != nil {
		return err
	}
	if _, err := s.Leave(ctx, id, "alice", ""); err != nil {
		return err
	}
	l := old
	l.Created, l.Head = old.Created.Add(time.Second), 0
	now := time.Now()
	if _, _, _, err := s.Join(ctx, l, moitessier.Subscriber{Person: "bob", Joined: now, LeaseExpires: now.Add(time.Hour)}, moitessier.Quota{}); err != nil {
		return err
	}
	_, _, err = s.Append(ctx, &moitessier.Batch{Dispatch: "d-new", Scope: "room", Sender: "s", Created: now,
		Entries: []moitessier.Entry{{Listener: id, Text: "new0"}, {Listener: id, Text: "new1"}}})
	return err
}

func (s *recreatingStore) Read(ctx context.Context, id string, after moitessier.Cursor, limit int) ([]moitessier.Message, error) {
	if err := s.recreate(ctx, id); err != nil {
		return nil, err
	}
	return s.Store.Read(ctx, id, after, limit)
}

func (s *recreatingStore) ReadOf(ctx context.Context, id string, created time.Time, after moitessier.Cursor, limit int) ([]moitessier.Message, error) {
	if err := s.recreate(ctx, id); err != nil {
		return nil, err
	}
	return s.Store.ReadOf(ctx, id, created, after, limit)
}

// TestReadAfterRecreation: a listener deleted and made again between a
// ListenUntil's join (which found it current) and its first read of the
// store: the listen ends with ErrClosed and hands over none of the new
// incarnation's messages, which share the old one's sequence numbers. So
// does Messages.
func TestReadAfterRecreation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st := &recreatingStore{Store: memstore.New()}
	hub := memHubOn(t, st, moitessier.Options{})
	l, err := hub.NewListener(ctx, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "room"})
	if err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{"old0", "old1"} {
		if _, err := hub.Dispatch(ctx, "s", "room", text); err != nil {
			t.Fatal(err)
		}
	}
	st.mu.Lock()
	st.id = l.ID()
	st.mu.Unlock()
	var got []string
	_, err = l.ListenUntil(ctx, nil, func(_ context.Context, ms []moitessier.Message) error {
		for _, m := range ms {
			got = append(got, m.Text)
		}
		return nil
	}, 0, 0, 5*time.Second)
	if !errors.Is(err, moitessier.ErrClosed) || len(got) > 0 {
		t.Fatalf("ListenUntil = %v, handing over %q; want ErrClosed and nothing", err, got)
	}
	// Messages, made again once more between its look and its read.
	st2 := &recreatingStore{Store: memstore.New()}
	hub2 := memHubOn(t, st2, moitessier.Options{})
	l2, err := hub2.NewListener(ctx, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "room"})
	if err != nil {
		t.Fatal(err)
	}
	st2.mu.Lock()
	st2.id = l2.ID()
	st2.mu.Unlock()
	if msgs, err := l2.Messages(ctx, 0, 10); !errors.Is(err, moitessier.ErrClosed) || len(msgs) > 0 {
		t.Fatalf("Messages = %v, %v; want ErrClosed and nothing", msgs, err)
	}
}
