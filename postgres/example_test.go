package postgres_test

import (
	"context"
	"log"

	"github.com/jackc/pgx/v5"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/postgres"
)

// A hub on PostgreSQL. Every process that opens the same database and
// schema shares the listeners and messages, and is woken when another
// dispatches.
func Example() {
	ctx := context.Background()
	store, err := postgres.Open(ctx, "postgres://app@127.0.0.1:5432/app?pool_max_conns=16")
	if err != nil {
		log.Fatal(err) // names the host it could not reach
	}
	hub, err := moitessier.New(store, moitessier.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer hub.Close()
	defer store.Close()
	if _, err := hub.Dispatch(ctx, "alice", "room.42", "hello"); err != nil {
		log.Fatal(err)
	}
}

// A transactional outbox: the message exists if and only if the order row
// does.
func ExampleDispatchTx() {
	ctx := context.Background()
	store, err := postgres.Open(ctx, "postgres://app@127.0.0.1:5432/app")
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	hub, err := moitessier.New(store, moitessier.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer hub.Close()
	err = pgx.BeginFunc(ctx, store.Pool(), func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "UPDATE orders SET paid = true WHERE id = $1", 42); err != nil {
			return err
		}
		_, err := postgres.DispatchTx(ctx, hub, store, tx, "shop", "orders.42", "paid")
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
}
