package moitessier_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/memstore"
)

// deletingStore deletes listener id (its one subscriber, alice, leaves)
// right after the first lookup of it: as if another process did, between
// Hub.Open's lookup and its join.
type deletingStore struct {
	moitessier.Store
	id   string
	done atomic.Bool
}

func (s *deletingStore) Listener(ctx context.Context, id string) (moitessier.ListenerInfo, error) {
	info, err := s.Store.Listener(ctx, id)
	if id == s.id && err == nil && !s.done.Swap(true) {
		if _, err := s.Store.Leave(ctx, id, "alice", ""); err != nil {
			return info, err
		}
	}
	return info, err
}

// TestOpenDeletedMeanwhile: Open of a listener deleted between its lookup
// and its join reports ErrNotFound and leaves no listener behind (nor one
// made again under the deleted incarnation's creation time), announcing
// nothing.
func TestOpenDeletedMeanwhile(t *testing.T) {
	ctx := context.Background()
	mem := memstore.New()
	created := 0
	hooks := moitessier.Hooks{Created: func(context.Context, moitessier.ListenerInfo) { created++ }}
	first, err := moitessier.New(mem, moitessier.Options{GCInterval: -1, Hooks: hooks})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	l, err := first.NewListener(ctx, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "room"})
	if err != nil {
		t.Fatal(err)
	}
	s := &deletingStore{Store: mem, id: l.ID()}
	hub, err := moitessier.New(s, moitessier.Options{GCInterval: -1, Hooks: hooks})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	created = 0
	if _, err := hub.Open(ctx, l.ID(), "bob", ""); !errors.Is(err, moitessier.ErrNotFound) {
		t.Fatalf("Open of a listener deleted meanwhile: %v, want ErrNotFound", err)
	}
	if _, err := hub.Info(ctx, l.ID()); !errors.Is(err, moitessier.ErrNotFound) {
		t.Fatalf("the deleted listener is back: Info = %v", err)
	}
	if created != 0 {
		t.Fatalf("Hooks.Created called %d times", created)
	}
}
