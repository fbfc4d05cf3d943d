package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/postgres"
)

// BenchmarkFanOutStrategies compares ways to write one dispatch to 100
// listeners: Store.Append's single statement against a statement per entry,
// sent one at a time or pipelined in a pgx.Batch, both in a transaction.
// It is what the package docs' choice rests on.
func BenchmarkFanOutStrategies(b *testing.B) {
	const n = 100
	body := strings.Repeat("x", 100)
	type fixture struct {
		s *postgres.Store
		b *moitessier.Batch
	}
	setup := func(b *testing.B) (fixture, []string) {
		s := benchStore(b)
		var ids []string
		bt := &moitessier.Batch{Dispatch: "d", Scope: "fan", Sender: "p", Created: time.Now()}
		for i := range n {
			l := join(b, s, fmt.Sprint("fan.", i))
			ids = append(ids, l.ID)
			bt.Entries = append(bt.Entries, moitessier.Entry{Listener: l.ID, Text: body})
		}
		return fixture{s, bt}, ids
	}
	report := func(b *testing.B, start time.Time) {
		el := time.Since(start).Seconds()
		b.ReportMetric(float64(b.N)/el, "appends/s")
		b.ReportMetric(float64(b.N*n)/el, "msgs/s")
	}
	b.Run("one-statement", func(b *testing.B) {
		ms, _ := setup(b)
		ctx := context.Background()
		b.ResetTimer()
		start := time.Now()
		for range b.N {
			if _, _, err := ms.s.Append(ctx, ms.b); err != nil {
				b.Fatal(err)
			}
		}
		report(b, start)
	})
	perEntry := func(pipelined bool) func(b *testing.B) {
		return func(b *testing.B) {
			ms, ids := setup(b)
			ctx := context.Background()
			q := pgx.Identifier{ms.s.Schema()}.Sanitize()
			upd := "UPDATE " + q + ".listeners SET head = head + 1 WHERE id = $1 RETURNING head"
			ins := "INSERT INTO " + q + ".messages (listener, seq, dispatch, scope, sender, body, created_ns) VALUES ($1, (SELECT head FROM " + q + ".listeners WHERE id = $1), 'd', 'fan', 'p', $2, 0)"
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				err := pgx.BeginFunc(ctx, ms.s.Pool(), func(tx pgx.Tx) error {
					if pipelined {
						var batch pgx.Batch
						for _, id := range ids {
							batch.Queue(upd, id)
							batch.Queue(ins, id, []byte(body))
						}
						return tx.SendBatch(ctx, &batch).Close()
					}
					for _, id := range ids {
						var head int64
						if err := tx.QueryRow(ctx, upd, id).Scan(&head); err != nil {
							return err
						}
						if _, err := tx.Exec(ctx, ins, id, []byte(body)); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			report(b, start)
		}
	}
	b.Run("per-entry", perEntry(false))
	b.Run("per-entry-pipelined", perEntry(true))
}
