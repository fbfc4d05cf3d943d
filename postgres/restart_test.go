package postgres_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/likestripes/moitessier"
)

// pgCluster runs pg_ctlcluster on the local cluster "main" of the one
// installed PostgreSQL version.
func pgCluster(tb testing.TB, action string) error {
	tb.Helper()
	vers, err := os.ReadDir("/etc/postgresql")
	if err != nil || len(vers) == 0 {
		return fmt.Errorf("no local PostgreSQL cluster in /etc/postgresql: %v", err)
	}
	out, err := exec.Command("pg_ctlcluster", "--skip-systemctl-redirect", vers[0].Name(), "main", action).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctlcluster %s: %v: %s", action, err, out)
	}
	return nil
}

func serverUp() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, testDSN())
	if err != nil {
		return false
	}
	_ = conn.Close(ctx)
	return true
}

// TestRestart restarts the local PostgreSQL server between dispatches. Watch
// reconnects, and a listener in another hub gets every message dispatched
// before and after the restart, in order. It runs only with
// MOITESSIER_PG_RESTART=1, since it interrupts every client of the server.
func TestRestart(t *testing.T) {
	if os.Getenv("MOITESSIER_PG_RESTART") != "1" {
		t.Skip("restarts the local PostgreSQL server; set MOITESSIER_PG_RESTART=1 to run it")
	}
	schema := newSchema(t)
	// Registered after newSchema's cleanup, so it runs before the drop.
	t.Cleanup(func() {
		if serverUp() {
			return
		}
		if err := pgCluster(t, "start"); err != nil {
			t.Errorf("server down after the test and cannot be started: %v", err)
		}
	})
	sa, sb := openStore(t, schema), openStore(t, schema)
	ctx := ctxT(t)

	// Watch on store A directly: it must report heads after the restart.
	var (
		mu    sync.Mutex
		heads = map[string]moitessier.Cursor{}
	)
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	go func() {
		_ = sa.Watch(wctx, func(hs []moitessier.Head) {
			mu.Lock()
			defer mu.Unlock()
			for _, h := range hs {
				heads[h.Listener] = max(heads[h.Listener], h.Seq)
			}
		})
	}()

	ha := newHub(t, sa, moitessier.Options{CatchUpInterval: time.Hour})
	hb := newHub(t, sb, moitessier.Options{CatchUpInterval: time.Hour})
	l, err := ha.NewListener(ctx, moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "r"})
	if err != nil {
		t.Fatal(err)
	}
	// A listener that survives errors: ListenUntil again from its cursor.
	got := make(chan moitessier.Message, 100)
	lctx, lcancel := context.WithCancel(ctx)
	ldone := make(chan struct{})
	go func() {
		defer close(ldone)
		var cur moitessier.Cursor
		for lctx.Err() == nil {
			cur, _ = l.ListenUntil(lctx, nil, func(_ context.Context, msgs []moitessier.Message) error {
				for _, m := range msgs {
					got <- m
				}
				return nil
			}, cur, 0, 0)
			time.Sleep(50 * time.Millisecond)
		}
	}()
	defer func() { lcancel(); <-ldone }()
	time.Sleep(200 * time.Millisecond)

	// dispatch retries through the restart; the idempotency key makes a
	// retry of a dispatch that did commit a no-op.
	dispatch := func(i int) {
		deadline := time.Now().Add(60 * time.Second)
		for {
			_, err := hb.Dispatch(ctx, "b", "r", fmt.Sprint(i), moitessier.IdempotencyKey(fmt.Sprint("k", i)))
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("dispatch %d: %v", i, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	receive := func(from, to int) {
		for i := from; i < to; i++ {
			select {
			case m := <-got:
				if m.Seq != moitessier.Cursor(i+1) || m.Text != fmt.Sprint(i) {
					t.Fatalf("received %d %q, want %d %q", m.Seq, m.Text, i+1, fmt.Sprint(i))
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("message %d not received in 30s", i)
			}
		}
	}
	for i := range 5 {
		dispatch(i)
	}
	receive(0, 5)

	if err := pgCluster(t, "restart"); err != nil {
		t.Fatal(err)
	}
	for i := 5; i < 10; i++ {
		dispatch(i)
	}
	receive(5, 10)

	// Store A's own Watch reported the head after reconnecting.
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		h := heads[l.ID()]
		mu.Unlock()
		if h == 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Watch reported head %d after the restart, want 10", h)
		}
		time.Sleep(20 * time.Millisecond)
	}
	msgs, err := sa.Read(ctx, l.ID(), 0, 100)
	if err != nil || len(msgs) != 10 {
		t.Fatalf("Read after restart = %d messages, %v", len(msgs), err)
	}
	var texts []string
	for _, m := range msgs {
		texts = append(texts, m.Text)
	}
	if s := strings.Join(texts, ","); s != "0,1,2,3,4,5,6,7,8,9" {
		t.Fatalf("stored %s", s)
	}
}
