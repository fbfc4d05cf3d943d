package sqlite_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
)

// text100 is a 100-byte message, the size of the standard workloads.
var text100 = strings.Repeat("m", 100)

// BenchmarkAppend measures dispatches from one dispatcher: one Append of one
// entry each, each its own transaction.
func BenchmarkAppend(b *testing.B) {
	for _, keyed := range []bool{false, true} {
		name := "plain"
		if keyed {
			name = "keyed"
		}
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			s := mustOpen(b, dbPath(b))
			mustJoin(b, s, listener("l", "room.1"), "alice")
			batch := &moitessier.Batch{Dispatch: "d", Scope: "room.1", Sender: "bob", Created: time.Now(),
				Entries: []moitessier.Entry{{Listener: "l", Text: text100}}}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if keyed {
					batch.Key = fmt.Sprint("k", i)
				}
				if _, _, err := s.Append(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
		})
	}
}

// BenchmarkAppendConcurrent measures Appends of one entry from 8 goroutines
// per GOMAXPROCS at once, to one listener each: concurrent writes share
// transactions.
func BenchmarkAppendConcurrent(b *testing.B) {
	ctx := context.Background()
	s := mustOpen(b, dbPath(b))
	var next atomic.Int64
	const listeners = 64
	for i := range listeners {
		mustJoin(b, s, listener(fmt.Sprint("l", i), "room.1"), "alice")
	}
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		id := fmt.Sprint("l", next.Add(1)%listeners)
		batch := &moitessier.Batch{Dispatch: "d", Scope: "room.1", Sender: "bob", Created: time.Now(),
			Entries: []moitessier.Entry{{Listener: id, Text: text100}}}
		for pb.Next() {
			if _, _, err := s.Append(ctx, batch); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
}

// BenchmarkAppendFanout measures one Append of one entry to each of n
// listeners, as a dispatch to a scope n listeners hear.
func BenchmarkAppendFanout(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			ctx := context.Background()
			s := mustOpen(b, dbPath(b))
			batch := &moitessier.Batch{Dispatch: "d", Scope: "room.1", Sender: "bob", Created: time.Now()}
			for i := range n {
				id := fmt.Sprint("l", i)
				mustJoin(b, s, listener(id, "room.1"), "alice")
				batch.Entries = append(batch.Entries, moitessier.Entry{Listener: id, Text: text100})
			}
			b.ResetTimer()
			for b.Loop() {
				if _, _, err := s.Append(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkRead measures catch-up reads of 100 messages from a listener
// holding 10 000.
func BenchmarkRead(b *testing.B) {
	ctx := context.Background()
	s := mustOpen(b, dbPath(b))
	mustJoin(b, s, listener("l", "room.1"), "alice")
	const stored, limit = 10000, 100
	batch := &moitessier.Batch{Dispatch: "d", Scope: "room.1", Sender: "bob", Created: time.Now()}
	for range stored {
		batch.Entries = append(batch.Entries, moitessier.Entry{Listener: "l", Text: text100})
	}
	if _, _, err := s.Append(ctx, batch); err != nil {
		b.Fatal(err)
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			after := moitessier.Cursor(i*limit) % (stored - limit)
			msgs, err := s.Read(ctx, "l", after, limit)
			if err != nil || len(msgs) != limit {
				b.Fatalf("Read: %d messages, %v", len(msgs), err)
			}
		}
		b.ReportMetric(float64(b.N*limit)/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				after := moitessier.Cursor(i*limit) % (stored - limit)
				i++
				msgs, err := s.Read(ctx, "l", after, limit)
				if err != nil || len(msgs) != limit {
					b.Errorf("Read: %d messages, %v", len(msgs), err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N*limit)/b.Elapsed().Seconds(), "msgs/s")
	})
}

// BenchmarkQuotaAmplification measures the most one person's listeners can
// add to another person's dispatch under the default quotas: mallory
// creates Shared and Handler listeners that all hear room.1 (each with
// another scope set) until the quotas refuse, then bob dispatches 1 KiB to
// room.1. It reports the copies stored per dispatch and the database's
// growth (file and WAL) per dispatch.
func BenchmarkQuotaAmplification(b *testing.B) {
	ctx := context.Background()
	path := dbPath(b)
	hub, err := moitessier.New(mustOpen(b, path), moitessier.Options{GCInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = hub.Close() })
	for _, typ := range []moitessier.ListenerType{moitessier.Shared, moitessier.Handler} {
		for i := 0; ; i++ {
			_, err := hub.NewListener(ctx, moitessier.Conditions{Person: "mallory", Type: typ, Scopes: []string{"room.1", fmt.Sprintf("room.x.%d", i)}})
			if errors.Is(err, moitessier.ErrQuotaExceeded) {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	size := func() int64 {
		var n int64
		for _, p := range []string{path, path + "-wal"} {
			if fi, err := os.Stat(p); err == nil {
				n += fi.Size()
			}
		}
		return n
	}
	text := strings.Repeat("m", 1<<10)
	var copies int
	before := size()
	b.ResetTimer()
	for b.Loop() {
		d, err := hub.Dispatch(ctx, "bob", "room.1", text)
		if err != nil {
			b.Fatal(err)
		}
		copies = len(d.Messages)
	}
	b.StopTimer()
	if want := moitessier.DefaultQuotaShared + moitessier.DefaultQuotaHandlers; copies != want {
		b.Fatalf("%d copies per dispatch, want Shared + Handlers quotas, %d", copies, want)
	}
	b.ReportMetric(float64(copies), "copies/op")
	b.ReportMetric(float64(size()-before)/float64(b.N), "db-bytes/op")
}
