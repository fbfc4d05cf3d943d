// Command quickstart is the README's quick start: a chat room on SQLite.
// In a new module: go mod init example && go get github.com/likestripes/moitessier && go run .
package main

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/sqlite"
)

func main() {
	if err := run(context.Background()); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context) error {
	store, err := sqlite.Open(ctx, "app.db") // or memstore.New(), or postgres.Open(ctx, dsn)
	if err != nil {
		return err
	}
	defer store.Close()
	hub, err := moitessier.New(store, moitessier.Options{})
	if err != nil {
		return err
	}
	defer hub.Close()

	// A chat room: one Shared listener per scope, any number of subscribers.
	room, err := hub.NewListener(ctx, moitessier.Conditions{
		Person: "alice", Client: "tab-1", Type: moitessier.Shared, Scope: "room.lobby",
	})
	if err != nil {
		return err
	}
	if _, err := hub.Dispatch(ctx, "bob", "room.lobby", "hello, lobby"); err != nil {
		return err
	}

	// Hand alice every new message as soon as it is stored, here for one
	// second (a web app writes them to her connection until she leaves).
	// moitessier.Resume starts where this subscriber left off, after any
	// reconnect or restart: run this twice and the second run shows only
	// its own message. Returning nil acknowledges the messages.
	_, err = room.ListenUntil(ctx, nil,
		func(ctx context.Context, msgs []moitessier.Message) error {
			for _, m := range msgs {
				fmt.Printf("#%d %s: %s\n", m.Seq, m.Sender, m.Text)
			}
			return nil
		},
		moitessier.Resume, 0, time.Second)
	return err
}
