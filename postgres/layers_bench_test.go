package postgres_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/likestripes/moitessier"
)

// BenchmarkLayers takes one dispatcher's single-message dispatch apart, on
// one schema with one hub: the raw single-row INSERT + NOTIFY of the
// bench's baseline, with no one listening (raw) and with a connection
// listening and a payload like ours (raw-listened); the store's one-entry
// append statement notifying, without looking, a channel no one listens
// on (statement-unlistened) and the hub's own (statement-notifying); the
// statement looking for a Watch to notify and finding the hub's, as a
// dispatch on a schema with another hub does (statement-looking-notifying);
// the statement as the hub's own dispatch sends it, leaving its Watch out
// (statement); Hub.Dispatch to a listener with one subscriber in
// ListenUntil; and a direct Store.Append, which notifies the hub's Watch.
// Each op is one commit; compare layers of one run:
//
//	go test -run '^$' -bench Layers -count 3 ./postgres
func BenchmarkLayers(b *testing.B) {
	needPostgres(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := benchStore(b)
	hub, err := moitessier.New(s, moitessier.Options{GCInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer hub.Close()
	quiet, err := hub.NewListener(ctx, moitessier.Conditions{Type: moitessier.Shared, Person: "p", Scope: "quiet"})
	if err != nil {
		b.Fatal(err)
	}
	room, err := hub.NewListener(ctx, moitessier.Conditions{Type: moitessier.Shared, Person: "p", Scope: "room"})
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		_, _ = room.ListenUntil(ctx, nil, func(context.Context, []moitessier.Message) error { return nil }, 0, time.Hour, time.Hour)
	}()
	raw, err := pgx.Connect(ctx, testDSN())
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close(context.Background())
	listener, err := pgx.Connect(ctx, testDSN())
	if err != nil {
		b.Fatal(err)
	}
	defer listener.Close(context.Background())
	schema := s.Schema()
	table := pgx.Identifier{schema, "layers_raw"}.Sanitize()
	channel, heard := schema+"_raw", schema+"_heard"
	if _, err := raw.Exec(ctx, "CREATE TABLE "+table+" (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL, created TIMESTAMPTZ NOT NULL DEFAULT now())"); err != nil {
		b.Fatal(err)
	}
	if _, err := listener.Exec(ctx, "LISTEN "+pgx.Identifier{heard}.Sanitize()); err != nil {
		b.Fatal(err)
	}
	heardDone := make(chan struct{})
	go func() {
		defer close(heardDone)
		for {
			if _, err := listener.WaitForNotification(ctx); err != nil {
				return
			}
		}
	}()
	// The connection is closed (deferred above) only once its reader has
	// returned.
	defer func() {
		cancel()
		<-heardDone
	}()
	text := strings.Repeat("x", 100)
	insert := "INSERT INTO " + table + " (body) VALUES ('" + strings.Repeat(".", 100) + "'); "
	rawSQL := insert + "NOTIFY " + pgx.Identifier{channel}.Sanitize()
	heardSQL := insert + "SELECT pg_notify('" + heard + "', '" + quiet.ID() + " 123456')"
	layers := []struct {
		name string
		op   func() error
	}{
		{"raw", func() error { _, err := raw.Exec(ctx, rawSQL, pgx.QueryExecModeSimpleProtocol); return err }},
		{"raw-listened", func() error { _, err := raw.Exec(ctx, heardSQL, pgx.QueryExecModeSimpleProtocol); return err }},
		{"statement-unlistened", func() error { _, err := s.AppendOneStatement(ctx, quiet.ID(), text, channel, "always"); return err }},
		{"statement-notifying", func() error { _, err := s.AppendOneStatement(ctx, quiet.ID(), text, "", "always"); return err }},
		{"statement-looking-notifying", func() error { _, err := s.AppendOneStatement(ctx, quiet.ID(), text, "", "none"); return err }},
		{"statement", func() error { _, err := s.AppendOneStatement(ctx, quiet.ID(), text, "", "own"); return err }},
		{"dispatch", func() error { _, err := hub.Dispatch(ctx, "p", "room", text); return err }},
		// Last: it notifies the hub's Watch (the hub does not publish a
		// direct Append), and then the store's appends notify without
		// looking for a second.
		{"store-append", func() error {
			_, _, err := s.Append(ctx, &moitessier.Batch{Dispatch: "d", Scope: "quiet", Sender: "p", Created: time.Now(),
				Entries: []moitessier.Entry{{Listener: quiet.ID(), Text: text}}})
			return err
		}},
	}
	for _, l := range layers {
		b.Run(l.name, func(b *testing.B) {
			for b.Loop() {
				if err := l.op(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
