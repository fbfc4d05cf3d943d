package postgres_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/internal/countstore"
	"github.com/likestripes/moitessier/postgres"
	"github.com/likestripes/moitessier/storetest"
)

// benchStore opens a store on a fresh schema as Open does, with the
// store's own pool and its defaults.
func benchStore(b testing.TB) *postgres.Store {
	b.Helper()
	return openStore(b, newSchema(b))
}

// BenchmarkAppend measures Store.Append: batches of 1 or 100 entries (one
// per listener), from 1 or 8 concurrent writers. "shared" writers all write
// to the same listeners (the dispatch-8 workload: one scope, so every
// append queues on the same listener rows); "own" writers each have their
// own listeners. appends/s counts batches, msgs/s stored messages.
func BenchmarkAppend(b *testing.B) {
	body := strings.Repeat("x", 100)
	for _, entries := range []int{1, 100} {
		for _, writers := range []int{1, 8} {
			for _, mode := range []string{"shared", "own"} {
				if writers == 1 && mode == "own" {
					continue
				}
				b.Run(fmt.Sprintf("entries=%d/writers=%d/%s", entries, writers, mode), func(b *testing.B) {
					s := benchStore(b)
					sets := 1
					if mode == "own" {
						sets = writers
					}
					batches := make([]*moitessier.Batch, sets)
					for k := range sets {
						bt := &moitessier.Batch{Dispatch: "d", Scope: "bench", Sender: "p", Created: time.Now()}
						for i := range entries {
							l := join(b, s, fmt.Sprintf("bench.%d.%d", k, i))
							bt.Entries = append(bt.Entries, moitessier.Entry{Listener: l.ID, Text: body})
						}
						batches[k] = bt
					}
					ctx := context.Background()
					b.ResetTimer()
					start := time.Now()
					var wg sync.WaitGroup
					for w := range writers {
						n := b.N / writers
						if w < b.N%writers {
							n++
						}
						bt := batches[w%sets]
						wg.Add(1)
						go func() {
							defer wg.Done()
							for range n {
								if _, _, err := s.Append(ctx, bt); err != nil {
									b.Error(err)
									return
								}
							}
						}()
					}
					wg.Wait()
					el := time.Since(start).Seconds()
					b.ReportMetric(float64(b.N)/el, "appends/s")
					b.ReportMetric(float64(b.N*entries)/el, "msgs/s")
				})
			}
		}
	}
}

// BenchmarkWorkloads runs the standard workloads (fanout-1/100/1000,
// scopes-10k, dispatch-8, idle-10k) of the shared benchmark harness.
func BenchmarkWorkloads(b *testing.B) {
	needPostgres(b)
	storetest.Benchmark(b, storetest.Harness{
		New: func(tb testing.TB) moitessier.Store { return benchStore(tb) },
	})
}

// BenchmarkCrossHub measures dispatch-to-respond latency between two hubs,
// each with its own store and pool on one schema, as two processes would
// be: hub B dispatches, one message at a time, and a subscriber in hub A,
// woken by NOTIFY (the catch-up read is set to an hour), receives it. It
// reports p50-ms and p99-ms over every delivery.
func BenchmarkCrossHub(b *testing.B) {
	schema := newSchema(b)
	ctx := context.Background()
	open := func() *moitessier.Hub {
		h, err := moitessier.New(openStore(b, schema), moitessier.Options{CatchUpInterval: time.Hour, GCInterval: -1})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = h.Close() })
		return h
	}
	ha, hb := open(), open()
	la, err := ha.NewListener(ctx, moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "chat"})
	if err != nil {
		b.Fatal(err)
	}
	got := stream(b, la)
	time.Sleep(200 * time.Millisecond) // both hubs' Watch connections LISTEN
	storetest.CrossHubLatency(ctx, b, hb, got)
}

// BenchmarkJoin measures creating listeners one after the other, each on a
// scope of its own, as one caller does: Store.Join alone, and
// Hub.NewListener (the scopes-10k workload's create_s). The "durable"
// variants set Config.DurableJoins, so that each join waits for its
// commit's flush. Two floors, with no Moitessier Go code on the path, run
// each on a pgx connection of its own (with the store's plan cache mode),
// each commit asynchronous as a join's that creates its listener is:
// "raw/join_listener" sends the store's own join statement (the function
// of migration 10), as Store.Join sends it alone; "raw/insert" writes
// only the rows a creation must, the listener, its scope (whose trigger
// writes the scope's version) and its subscriber, in one statement of
// three inserts, with no quota, no conflict handling and nothing read
// back. Each reports the process's CPU time per creation (cpu-µs/op; the
// server's is not in it), steadier than the time per creation on a
// machine whose commits vary. Compare them within one run, with
// -skip 'BenchmarkJoin/Store.Join/parallel' so that the parallel
// variants do not run between them.
func BenchmarkJoin(b *testing.B) {
	b.Run("raw/join_listener", func(b *testing.B) {
		s, conn := rawJoinConn(b)
		q := s.JoinStatement()
		ctx := context.Background()
		i := 0
		cpu0 := benchCPU()
		for b.Loop() {
			i++
			id, scope, now := fmt.Sprint("jbench.join.", i), fmt.Sprint("bench.join.", i), time.Now().UnixNano()
			var created bool
			// As Store.Join sends it for a new subscriber (its cursor
			// Resume), with no quota (the quota keys unused) and the
			// listener's tag i.
			if err := conn.QueryRow(ctx, q, id, int(moitessier.Shared), "p", "", []string{scope}, []bool{false}, now,
				"p", "", now, now+int64(time.Hour), int64(math.MaxInt64), int64(0), int64(0), int64(0), int64(1), int64(1), true, int64(i),
			).Scan(&created, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil); err != nil {
				b.Fatal(err)
			}
			if !created {
				b.Fatalf("join_listener did not create %s", id)
			}
		}
		reportCPU(b, cpu0)
	})
	b.Run("raw/insert", func(b *testing.B) {
		s, conn := rawJoinConn(b)
		schema := pgx.Identifier{s.Schema()}.Sanitize()
		q := `WITH l AS (INSERT INTO ` + schema + `.listeners (id, type, person, client, scopes, created_ns)
				VALUES ($1, $2, 'p', '', ARRAY[$3::text], $4) RETURNING id),
			x AS (INSERT INTO ` + schema + `.listener_scopes (listener, scope, wild, tag) SELECT id, $3, false, $5 FROM l),
			s AS (INSERT INTO ` + schema + `.subscribers (listener, person, client, cursor, joined_ns, lease_ns)
				SELECT id, 'p', '', 0, $4, $4 + 3600000000000 FROM l)
			SELECT set_config('synchronous_commit', 'off', true)`
		ctx := context.Background()
		i := 0
		cpu0 := benchCPU()
		for b.Loop() {
			i++
			if _, err := conn.Exec(ctx, q, fmt.Sprint("jbench.join.", i), int(moitessier.Shared), fmt.Sprint("bench.join.", i), time.Now().UnixNano(), int64(i)); err != nil {
				b.Fatal(err)
			}
		}
		reportCPU(b, cpu0)
	})
	for _, durable := range []bool{false, true} {
		name := ""
		if durable {
			name = "durable/"
		}
		open := func(b *testing.B) *postgres.Store {
			return openStoreWith(b, postgres.Config{Schema: newSchema(b), DurableJoins: durable})
		}
		b.Run(name+"Store.Join", func(b *testing.B) {
			s := open(b)
			ctx := context.Background()
			now := time.Now()
			sub := moitessier.Subscriber{Person: "p", Cursor: moitessier.Resume, Joined: now, LeaseExpires: now.Add(time.Hour)}
			i := 0
			cpu0 := benchCPU()
			for b.Loop() {
				scope := "bench.join." + fmt.Sprint(i)
				i++
				l := moitessier.ListenerInfo{ID: "j" + scope, Type: moitessier.Shared, Person: "p", Scopes: []string{scope}, Created: now}
				if _, _, _, err := s.Join(ctx, l, sub, moitessier.Quota{}); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, cpu0)
		})
		// From many callers at once, as clients arriving together: the
		// store sends the joins that wait together (see joins.go). With
		// a quota, each caller is a person of its own, whose joins count
		// under that person's lock. With one scope, every join writes
		// that scope's version row, which a transaction holds until it
		// commits.
		for _, variant := range []string{"", "/quota", "/one-scope"} {
			sub, quota := "Store.Join/parallel"+variant, variant == "/quota"
			b.Run(name+sub, func(b *testing.B) {
				s := open(b)
				ctx := context.Background()
				now := time.Now()
				var next, persons atomic.Int64
				b.SetParallelism(32)
				b.RunParallel(func(pb *testing.PB) {
					person, q := "p", moitessier.Quota{}
					if quota {
						person, q = fmt.Sprint("p", persons.Add(1)), moitessier.Quota{Listeners: 1 << 20, Shared: 1 << 20, Subscriptions: 1 << 20}
					}
					sub := moitessier.Subscriber{Person: person, Cursor: moitessier.Resume, Joined: now, LeaseExpires: now.Add(time.Hour)}
					for pb.Next() {
						scope := "bench.join." + fmt.Sprint(next.Add(1))
						l := moitessier.ListenerInfo{ID: "j" + scope, Type: moitessier.Shared, Person: person, Scopes: []string{scope}, Created: now}
						if variant == "/one-scope" {
							l.Scopes = []string{"bench.join"}
						}
						if _, _, _, err := s.Join(ctx, l, sub, q); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(s.JoinsBatched())/float64(b.N), "batched/op")
			})
		}
		b.Run(name+"Hub.NewListener", func(b *testing.B) {
			h := newHub(b, open(b), moitessier.Options{Quota: moitessier.Quota{Listeners: -1, Shared: -1, Subscriptions: -1}})
			ctx := context.Background()
			i := 0
			cpu0 := benchCPU()
			for b.Loop() {
				scope := "bench.join." + fmt.Sprint(i)
				i++
				if _, err := h.NewListener(ctx, moitessier.Conditions{Person: "p", Type: moitessier.Shared, Scope: scope}); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, cpu0)
		})
	}
}

// BenchmarkMatchAppend measures Store.MatchAppend on scopes it has no
// cached answer for, as a hub's first dispatch to each scope (scopes-10k)
// calls it: one statement that matches the scope's one listener and
// appends to it. Every iteration dispatches to a scope of its own, whose
// listener the setup created, so that the tables hold b.N listeners:
// compare runs of one -benchtime Nx. "fresh" dispatches right after the
// creations, as in a new schema's first minute, before the server has
// statistics of the tables (autovacuum, which would gather them, is off
// for its tables); "analyzed" runs ANALYZE first; "append" is
// "analyzed" with a Store.Append of one entry to each scope's listener in
// place of MatchAppend, as a dispatch from a cached answer writes it.
func BenchmarkMatchAppend(b *testing.B) {
	for _, name := range []string{"fresh", "analyzed", "append"} {
		analyze := name != "fresh"
		b.Run(name, func(b *testing.B) {
			s := benchStore(b)
			ctx := context.Background()
			tables := []string{pgx.Identifier{s.Schema(), "listeners"}.Sanitize(), pgx.Identifier{s.Schema(), "listener_scopes"}.Sanitize()}
			if !analyze {
				for _, t := range tables {
					if _, err := s.Pool().Exec(ctx, "ALTER TABLE "+t+" SET (autovacuum_enabled = false)"); err != nil {
						b.Fatal(err)
					}
				}
			}
			scopes := make([]string, b.N)
			ids := make([]string, b.N)
			for i := range scopes {
				scopes[i] = fmt.Sprint("bench.first.", i)
				ids[i] = joinScopes(b, s, []string{scopes[i]}).ID
			}
			if analyze {
				if _, err := s.Pool().Exec(ctx, "ANALYZE "+strings.Join(tables, ", ")); err != nil {
					b.Fatal(err)
				}
			}
			// The first look loads the index of pattern scopes, which
			// MatchAppend's answers are checked against.
			if _, _, err := s.MatchCached(ctx, "bench.none"); err != nil {
				b.Fatal(err)
			}
			s.ForgetMatches() // those the joins cached
			b.ResetTimer()
			for i := range b.N {
				bt := &moitessier.Batch{Dispatch: fmt.Sprint("d", i), Scope: scopes[i], Sender: "p", Created: time.Now()}
				if name == "append" {
					bt.Entries = []moitessier.Entry{{Listener: ids[i], Text: "hello"}}
					if msgs, _, err := s.Append(ctx, bt); err != nil || len(msgs) != 1 {
						b.Fatalf("Append(%s): %d messages, %v", ids[i], len(msgs), err)
					}
					continue
				}
				_, _, msgs, ok, err := s.MatchAppend(ctx, bt, "hello", moitessier.Selection{})
				if err != nil || !ok || len(msgs) != 1 {
					b.Fatalf("MatchAppend(%s): %d messages, ok %v, %v", scopes[i], len(msgs), ok, err)
				}
			}
		})
	}
}

// BenchmarkChurn measures a room whose people come and go, in one hub: in
// each iteration one of its 10 Private listeners closes (the listener is
// deleted), another person's is created, and one message is dispatched to
// the room. "close-µs" is the close's part, "dispatch-µs" the dispatch's;
// "store-calls/dispatch" is how many store calls the dispatch made, 1 when
// its cached answer was right.
func BenchmarkChurn(b *testing.B) {
	s := benchStore(b)
	cs, calls := countstore.Wrap(s)
	h := newHub(b, cs, moitessier.Options{Quota: moitessier.Quota{Listeners: -1, Shared: -1, Subscriptions: -1}})
	ctx := context.Background()
	join := func(i int) *moitessier.Listener {
		l, err := h.NewListener(ctx, moitessier.Conditions{Person: fmt.Sprint("guest", i), Type: moitessier.Private, Scope: "bench.room"})
		if err != nil {
			b.Fatal(err)
		}
		return l
	}
	room := make([]*moitessier.Listener, 10)
	for i := range room {
		room[i] = join(i)
	}
	if _, err := h.Dispatch(ctx, "host", "bench.room", "hello"); err != nil {
		b.Fatal(err)
	}
	var (
		closing, dispatching time.Duration
		dispatched           int64
	)
	i := len(room)
	for b.Loop() {
		k := i % len(room)
		t0 := time.Now()
		if err := room[k].Close(ctx); err != nil {
			b.Fatal(err)
		}
		closing += time.Since(t0)
		room[k] = join(i)
		i++
		c0, t0 := calls.Load(), time.Now()
		if _, err := h.Dispatch(ctx, "host", "bench.room", "hello"); err != nil {
			b.Fatal(err)
		}
		dispatching += time.Since(t0)
		dispatched += calls.Load() - c0
	}
	b.ReportMetric(float64(closing.Microseconds())/float64(b.N), "close-µs")
	b.ReportMetric(float64(dispatching.Microseconds())/float64(b.N), "dispatch-µs")
	b.ReportMetric(float64(dispatched)/float64(b.N), "store-calls/dispatch")
}

// rawJoinConn returns a store on a fresh schema (migrated) and a pgx
// connection of its own to the test server, planning as the store's pool
// does (plan_cache_mode), closed when b ends.
func rawJoinConn(b *testing.B) (*postgres.Store, *pgx.Conn) {
	b.Helper()
	s := benchStore(b)
	cfg, err := pgx.ParseConfig(testDSN())
	if err != nil {
		b.Fatal(err)
	}
	cfg.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
	conn, err := pgx.ConnectConfig(ctxT(b), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close(context.Background()) })
	return s, conn
}
