package clouddatastore_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/clouddatastore"
	"github.com/likestripes/moitessier/storetest"
)

// noQuota lets a benchmark make many listeners as one person.
var noQuota = moitessier.Quota{Listeners: -1, Handlers: -1, Subscriptions: -1}

// BenchmarkWorkloads runs the standard workloads of the shared benchmark
// harness on the emulators. On Datastore pick them by name: idle-10k and
// scopes-10k create 10 000 listeners, minutes on the emulator, e.g.
//
//	go test -run '^$' -bench 'Workloads/(fanout-1|fanout-100|dispatch-8)$' -benchtime 200x ./clouddatastore
func BenchmarkWorkloads(b *testing.B) {
	storetest.Benchmark(b, storetest.Harness{
		New: func(tb testing.TB) moitessier.Store { return mustStore(tb) },
	})
}

// BenchmarkHotScope measures the dispatches per second one Shared
// listener takes from 4 hubs, each on its own store (its own client,
// combiner and Pub/Sub subscription, as 4 processes would have), with 4 or
// 16 dispatchers each, and fails if any dispatch returns an error. It
// reports dispatches/s, the aborted transactions per dispatch (conflicts
// between the hubs, retried), and the commit RPCs per dispatch (aborted
// ones included; below 1: combined).
func BenchmarkHotScope(b *testing.B) {
	for _, perHub := range []int{4, 16} {
		b.Run(fmt.Sprintf("dispatchers-per-hub=%d", perHub), func(b *testing.B) { benchHotScope(b, perHub) })
	}
}

func benchHotScope(b *testing.B, perHub int) {
	ns := newNamespace(b)
	const hubs = 4
	stores := make([]*clouddatastore.Store, hubs)
	hs := make([]*moitessier.Hub, hubs)
	for i := range hubs {
		stores[i] = openStore(b, ns)
		hs[i] = newHub(b, stores[i], moitessier.Options{Quota: noQuota})
	}
	l, err := hs[0].NewListener(ctxT(b), moitessier.Conditions{Person: "p", Type: moitessier.Shared, Scope: "hot.room"})
	if err != nil {
		b.Fatal(err)
	}
	before := make([]clouddatastore.Stats, hubs)
	for i, s := range stores {
		before[i] = s.Stats()
	}
	var next, failed atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range hubs * perHub {
		hub := hs[i%hubs]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if _, err := hub.Dispatch(context.Background(), "p", "hot.room", "x"); err != nil {
					failed.Add(1)
					b.Errorf("dispatch: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	b.StopTimer()
	if failed.Load() > 0 {
		b.Fatalf("%d of %d dispatches failed", failed.Load(), b.N)
	}
	info, err := hs[0].Info(ctxT(b), l.ID())
	if err != nil || int(info.Head) != b.N {
		b.Fatalf("head %d, %v after %d dispatches", info.Head, err, b.N)
	}
	var d clouddatastore.Stats
	for i, s := range stores {
		st := s.Stats().Sub(before[i])
		d.Aborts += st.Aborts
		d.Commits += st.Commits
	}
	b.ReportMetric(float64(b.N)/el, "dispatches/s")
	b.ReportMetric(float64(d.Aborts)/float64(b.N), "aborts/dispatch")
	b.ReportMetric(float64(d.Commits)/float64(b.N), "commits/dispatch")
}

// BenchmarkCrossHub measures dispatch-to-respond latency between two hubs,
// each on its own store on one namespace, as two processes would be: hub B
// dispatches, one message at a time, and a subscriber in hub A, woken over
// Pub/Sub (the catch-up read is set to an hour), receives it. It reports
// p50-ms and p99-ms.
func BenchmarkCrossHub(b *testing.B) {
	ns := newNamespace(b)
	ha := newHub(b, openStore(b, ns), moitessier.Options{CatchUpInterval: time.Hour})
	hb := newHub(b, openStore(b, ns), moitessier.Options{CatchUpInterval: time.Hour})
	ctx := context.Background()
	la, err := ha.NewListener(ctx, moitessier.Conditions{Person: "a", Type: moitessier.Shared, Scope: "chat"})
	if err != nil {
		b.Fatal(err)
	}
	got := make(chan moitessier.Message, 16)
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		_, _ = la.ListenUntil(lctx, nil, func(_ context.Context, msgs []moitessier.Message) error {
			for _, m := range msgs {
				got <- m
			}
			return nil
		}, 0, 0, 0)
	}()
	time.Sleep(500 * time.Millisecond) // both hubs' Watch calls subscribe
	storetest.CrossHubLatency(ctx, b, hb, got)
}

// report adds the Datastore operations of d per unit (dispatch, listener
// per minute, pass…) to a benchmark's output.
func report(b *testing.B, d clouddatastore.Stats, per float64, unit string) {
	b.ReportMetric(float64(d.Reads())/per, "reads/"+unit)
	b.ReportMetric(float64(d.Writes+d.Deletes)/per, "writes/"+unit)
	b.ReportMetric(float64(d.RPCs)/per, "rpcs/"+unit)
}

// listenAll runs ListenUntil for every listener and returns how many
// messages arrived in all, and a stop func.
func listenAll(ls []*moitessier.Listener) (*atomic.Int64, func()) {
	var n atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = l.ListenUntil(ctx, nil, func(_ context.Context, msgs []moitessier.Message) error {
				n.Add(int64(len(msgs)))
				return nil
			}, 0, 0, 0)
		}()
	}
	return &n, func() { cancel(); wg.Wait() }
}

// BenchmarkCost counts the Datastore operations (Stats: entity reads as
// billed, entity writes and deletes, RPCs) that Moitessier's work costs:
//
//   - dispatch/fanout-N: a dispatch to one Shared listener with N
//     subscribers listening in the dispatching hub (one at a time, each
//     delivered to all before the next), their cursors saved every 100 ms;
//   - dispatch/listeners-100: a dispatch that reaches 100 listeners (one
//     message each), no one listening;
//   - other-process/fanout-N: as fanout-N with the subscribers in another
//     hub (another store), which reads the messages it is woken for: both
//     stores counted;
//   - idle: 100 listeners waiting with nothing dispatched, per listener
//     and per minute, and what the hub's catch-up costs per minute
//     whatever the number of listeners (MOITESSIER_IDLE_SECONDS, default
//     30 s, is the window, measured once whatever b.N);
//   - gc: one Hub.GC pass on a store of 100 listeners with nothing to
//     remove.
func BenchmarkCost(b *testing.B) {
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprintf("dispatch/fanout-%d", n), func(b *testing.B) { benchCostFanout(b, n, false) })
	}
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprintf("other-process/fanout-%d", n), func(b *testing.B) { benchCostFanout(b, n, true) })
	}
	b.Run("dispatch/listeners-100", func(b *testing.B) {
		s := mustStore(b)
		hub := newHub(b, s, moitessier.Options{Quota: noQuota})
		for i := range 100 {
			if _, err := hub.NewListener(ctxT(b), moitessier.Conditions{Person: "p", Client: strconv.Itoa(i), Type: moitessier.Private, Scope: "cost.many"}); err != nil {
				b.Fatal(err)
			}
		}
		mustBenchDispatch(b, hub, "cost.many") // match once: the answer is cached
		before := s.Stats()
		b.ResetTimer()
		for range b.N {
			if d := mustBenchDispatch(b, hub, "cost.many"); len(d.Messages) != 100 {
				b.Fatalf("%d messages, want 100", len(d.Messages))
			}
		}
		b.StopTimer()
		report(b, s.Stats().Sub(before), float64(b.N), "dispatch")
	})
	b.Run("idle", func(b *testing.B) {
		secs := 30.0
		if v := os.Getenv("MOITESSIER_IDLE_SECONDS"); v != "" {
			secs, _ = strconv.ParseFloat(v, 64)
		}
		const n = 100
		for range 1 { // one window, whatever b.N
			s := mustStore(b)
			hub := newHub(b, s, moitessier.Options{Quota: noQuota})
			ls := make([]*moitessier.Listener, n)
			for i := range ls {
				l, err := hub.NewListener(ctxT(b), moitessier.Conditions{Person: "p", Type: moitessier.Shared, Scope: fmt.Sprint("idle.", i)})
				if err != nil {
					b.Fatal(err)
				}
				ls[i] = l
			}
			_, stop := listenAll(ls)
			for hub.Stats().Listening < n {
				time.Sleep(time.Millisecond)
			}
			// Past the first catch-up, which reads each listener once, and
			// past the catch-up margin (10 s), within which Heads reads
			// again the listeners created or written in it.
			time.Sleep(13 * time.Second)
			before := s.Stats()
			time.Sleep(time.Duration(secs * float64(time.Second)))
			d := s.Stats().Sub(before)
			stop()
			mins := secs / 60
			b.ReportMetric(float64(d.Reads())/mins/n, "reads/listener/min")
			b.ReportMetric(float64(d.Reads())/mins, "reads/hub/min")
			b.ReportMetric(float64(d.RPCs)/mins, "rpcs/hub/min")
			b.ReportMetric(float64(d.Writes+d.Deletes)/mins, "writes/hub/min")
		}
	})
	b.Run("gc", func(b *testing.B) {
		s := mustStore(b)
		hub := newHub(b, s, moitessier.Options{Quota: noQuota})
		for i := range 100 {
			if _, err := hub.NewListener(ctxT(b), moitessier.Conditions{Person: "p", Type: moitessier.Shared, Scope: fmt.Sprint("gc.", i)}); err != nil {
				b.Fatal(err)
			}
		}
		before := s.Stats()
		b.ResetTimer()
		for range b.N {
			if _, err := hub.GC(ctxT(b)); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		report(b, s.Stats().Sub(before), float64(b.N), "pass")
	})
}

func mustBenchDispatch(b *testing.B, hub *moitessier.Hub, scope string) moitessier.Dispatched {
	b.Helper()
	d, err := hub.Dispatch(context.Background(), "p", scope, strings.Repeat("x", 100))
	if err != nil {
		b.Fatal(err)
	}
	return d
}

func benchCostFanout(b *testing.B, subs int, other bool) {
	ns := newNamespace(b)
	sa := openStore(b, ns)
	ha := newHub(b, sa, moitessier.Options{Quota: noQuota})
	sl, hl := sa, ha
	if other {
		sl = openStore(b, ns)
		hl = newHub(b, sl, moitessier.Options{Quota: noQuota})
	}
	ls := make([]*moitessier.Listener, subs)
	for i := range ls {
		l, err := hl.NewListener(ctxT(b), moitessier.Conditions{Person: "p", Client: strconv.Itoa(i), Type: moitessier.Shared, Scope: "cost.room"})
		if err != nil {
			b.Fatal(err)
		}
		ls[i] = l
	}
	got, stop := listenAll(ls)
	defer stop()
	for hl.Stats().Listening < int64(subs) {
		time.Sleep(time.Millisecond)
	}
	wait := func(want int64) {
		deadline := time.Now().Add(30 * time.Second)
		for got.Load() < want {
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d deliveries in 30 s", got.Load(), want)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	mustBenchDispatch(b, ha, "cost.room") // match once: the answer is cached
	wait(int64(subs))
	time.Sleep(300 * time.Millisecond) // cursors saved
	before := sa.Stats()
	beforeL := sl.Stats()
	b.ResetTimer()
	for i := range b.N {
		mustBenchDispatch(b, ha, "cost.room")
		wait(int64(subs * (i + 2)))
	}
	time.Sleep(300 * time.Millisecond) // the last cursors saved
	b.StopTimer()
	d := sa.Stats().Sub(before)
	if other {
		dl := sl.Stats().Sub(beforeL)
		d = addStats(d, dl)
	}
	report(b, d, float64(b.N), "dispatch")
}

func addStats(a, b clouddatastore.Stats) clouddatastore.Stats {
	// Sub of a negated zero is the sum: a - (0 - b).
	var zero clouddatastore.Stats
	return a.Sub(zero.Sub(b))
}
