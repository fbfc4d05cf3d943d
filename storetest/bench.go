package storetest

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/likestripes/moitessier/internal/workload"
)

// Benchmark runs the standard workloads of Moitessier's benchmarks against a
// store, through a hub, beside a bare Go-channel fan-out baseline measured in
// the same run:
//
//	baseline-channel-fanout-100  100 goroutines fed by channels
//	fanout-1, fanout-100, fanout-1000
//	                             1 Shared listener, N subscribers in ListenUntil
//	scopes-10k                   10 000 scopes, one listener each, one dispatch per scope in turn;
//	                             also reports the seconds NewListener took to create the 10 000,
//	                             one call after the other (create-s), and ListenUntil to start
//	                             on all of them (listen-s), and the seconds 64 goroutines at once
//	                             took to create 10 000 more (create-concurrent-s)
//	dispatch-8                   8 concurrent dispatchers, 1 Shared listener with 100 subscribers
//	idle-10k                     10 000 listeners waiting, no traffic, for 10 s
//
// The workloads are those of "moitessier bench" (package internal/workload
// holds the one copy). Messages are 100 bytes. Each reports delivered messages per second
// (msgs/s: checked deliveries — right listener, in order, no duplicate —
// divided by the time from the first dispatch to the last delivery), and
// p50-ms and p99-ms: dispatch-to-respond latency of every delivery.
// Like the baseline, whose channels hold 256 messages, the dispatchers keep
// at most 256 messages in flight beyond the slowest subscriber (1 024 in all
// for scopes-10k), so that latency measures delivery, not an ever-growing
// backlog. The fan-out workloads and scopes-10k also report store calls per dispatch
// (calls/dispatch: Match, Append, Read, Checkpoint…, but not MatchCached,
// which a store answers from memory but on a miss) and messages per respond
// call (msgs/respond: how many a subscriber gets per wake-up). idle-10k reports store
// calls per second while idle (queries/s) and heap
// and stack bytes per waiting listener. Set MOITESSIER_IDLE_SECONDS to
// shorten the idle window.
func Benchmark(b *testing.B, h Harness) {
	b.Run("baseline-channel-fanout-100", func(b *testing.B) { benchChannels(b, 100) })
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("fanout-%d", n), func(b *testing.B) { benchFanout(b, h, n, 1) })
	}
	b.Run("scopes-10k", func(b *testing.B) { benchScopes(b, h, 10_000) })
	b.Run("dispatch-8", func(b *testing.B) { benchFanout(b, h, 100, 8) })
	b.Run("idle-10k", func(b *testing.B) { benchIdle(b, h, 10_000) })
}

// report reports a delivery workload's figures.
func report(b *testing.B, res workload.Result, dispatches int) {
	b.ReportMetric(res.MsgsPerSecond(), "msgs/s")
	b.ReportMetric(res.PerSecond(dispatches), "dispatches/s")
	b.ReportMetric(res.Percentile(0.50), "p50-ms")
	b.ReportMetric(res.Percentile(0.99), "p99-ms")
}

// hooks stop and start b's timer around a workload's measured part.
func hooks(b *testing.B) workload.Hooks {
	return workload.Hooks{Start: b.ResetTimer, Stop: b.StopTimer}
}

func benchChannels(b *testing.B, subs int) {
	type msg struct {
		seq  int
		sent time.Time
	}
	chans := make([]chan msg, subs)
	lats := make([][]time.Duration, subs)
	var wg sync.WaitGroup
	var end atomic.Int64
	for i := range chans {
		chans[i] = make(chan msg, 256)
		lats[i] = make([]time.Duration, 0, b.N)
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := 0
			for m := range chans[i] {
				now := time.Now()
				if m.seq != next {
					panic("out of order")
				}
				next++
				lats[i] = append(lats[i], now.Sub(m.sent))
				end.Store(now.UnixNano())
			}
		}()
	}
	b.ResetTimer()
	start := time.Now()
	for n := range b.N {
		m := msg{n, time.Now()}
		for _, c := range chans {
			c <- m
		}
	}
	for _, c := range chans {
		close(c)
	}
	wg.Wait()
	b.StopTimer()
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	slices.Sort(all)
	report(b, workload.Result{Deliveries: len(all), Latencies: all, Wall: time.Unix(0, end.Load()).Sub(start)}, b.N)
}

func benchFanout(b *testing.B, h Harness, subs, dispatchers int) {
	res, err := workload.Fanout(context.Background(), newStore(b, h), subs, dispatchers, b.N, workload.DefaultWindow, hooks(b))
	if err != nil {
		b.Fatal(err)
	}
	report(b, res, b.N)
	b.ReportMetric(float64(res.StoreCalls)/float64(b.N), "calls/dispatch")
	b.ReportMetric(float64(res.Deliveries)/float64(max(res.Responds, 1)), "msgs/respond")
}

func benchScopes(b *testing.B, h Harness, scopes int) {
	res, err := workload.Scopes(context.Background(), newStore(b, h), scopes, b.N, workload.DefaultWindow, hooks(b))
	if err != nil {
		b.Fatal(err)
	}
	report(b, res, b.N)
	b.ReportMetric(float64(res.StoreCalls)/float64(b.N), "calls/dispatch")
	b.ReportMetric(res.Create.Seconds(), "create-s")
	b.ReportMetric(res.Listen.Seconds(), "listen-s")
	b.ReportMetric(res.CreateConcurrent.Seconds(), "create-concurrent-s")
}

func benchIdle(b *testing.B, h Harness, n int) {
	idle := 10 * time.Second
	if v := os.Getenv("MOITESSIER_IDLE_SECONDS"); v != "" {
		secs, err := strconv.ParseFloat(v, 64)
		if err != nil {
			b.Fatalf("MOITESSIER_IDLE_SECONDS=%q: %v", v, err)
		}
		idle = time.Duration(secs * float64(time.Second))
	}
	for range b.N {
		res, err := workload.Idle(context.Background(), newStore(b, h), n, 100*time.Millisecond, idle, workload.Hooks{})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(res.QueriesPerSecond, "queries/s")
		b.ReportMetric(res.HeapPerListener, "heap-B/listener")
		b.ReportMetric(res.StackPerListener, "stack-B/listener")
	}
}
