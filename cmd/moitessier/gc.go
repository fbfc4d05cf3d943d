package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/likestripes/moitessier"
)

const gcDescription = `
Remove from a store what has expired: subscribers whose lease ended,
listeners left with no subscriber (with their messages), messages older than
--retention, and idempotency keys older than --keys.

A running hub does this every --gc-interval by itself. gc opens the store
directly: with SQLite, stop the hub first (it holds the file); with
PostgreSQL, run it from anywhere at any time.`

func runGC(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	var store, schema string
	var retention, keys time.Duration
	var maxCount int
	var asJSON bool
	fs := newFlags("gc", "[flags]", gcDescription, stderr)
	fs.StringVar(&store, "store", env("MOITESSIER_STORE", "moitessier.db"), storeHelp)
	fs.StringVar(&schema, "schema", env("MOITESSIER_PG_SCHEMA", ""), "PostgreSQL schema of the store (env MOITESSIER_PG_SCHEMA)")
	fs.DurationVar(&retention, "retention", envDuration("MOITESSIER_RETENTION", 7*24*time.Hour), "remove messages older than this; negative keeps all (env MOITESSIER_RETENTION)")
	fs.IntVar(&maxCount, "max-count", 0, "keep at most this many newest messages per listener (0: no limit)")
	fs.DurationVar(&keys, "keys", 24*time.Hour, "remove idempotency keys older than this")
	fs.BoolVar(&asJSON, "json", false, "print the result as JSON")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	st, err := openStore(ctx, store, schema, false)
	if err != nil {
		return err
	}
	defer st.Close()
	hub, err := moitessier.New(st.Store, moitessier.Options{GCInterval: -1, Retention: moitessier.Retention{MaxAge: retention, MaxCount: maxCount}, IdempotencyWindow: keys})
	if err != nil {
		return err
	}
	defer hub.Close()
	start := time.Now()
	res, err := hub.GC(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(stdout).Encode(map[string]any{
			"store": st.kind, "listeners": len(res.Expired), "subscribers": res.Subscribers,
			"messages": res.Messages, "keys": res.Keys, "seconds": time.Since(start).Seconds(),
		})
	}
	_, err = fmt.Fprintf(stdout, "gc %s %s: removed %d listeners, %d subscribers, %d messages, %d idempotency keys in %v\n",
		st.kind, st.where, len(res.Expired), res.Subscribers, res.Messages, res.Keys, time.Since(start).Round(time.Millisecond))
	return err
}
