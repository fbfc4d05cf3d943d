package storetest

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/internal/countstore"
)

// Benchmark runs the standard workloads of Moitessier's benchmarks against a
// store, through a hub, beside a bare Go-channel fan-out baseline measured in
// the same run:
//
//	baseline-channel-fanout-100  100 goroutines fed by channels
//	fanout-1, fanout-100, fanout-1000
//	                             1 Shared listener, N subscribers in ListenUntil
//	scopes-10k                   10 000 scopes, one listener each, one dispatch per scope in turn;
//	                             also reports the seconds NewListener took to create the 10 000
//	                             (create-s) and ListenUntil to start on all of them (listen-s)
//	dispatch-8                   8 concurrent dispatchers, 1 Shared listener with 100 subscribers
//	idle-10k                     10 000 listeners waiting, no traffic, for 10 s
//
// Messages are 100 bytes. Each reports delivered messages per second
// (msgs/s: checked deliveries — right listener, in order, no duplicate —
// divided by the time from the first dispatch to the last delivery), and
// p50-ms and p99-ms: dispatch-to-respond latency of every delivery.
// Like the baseline, whose channels hold 256 messages, the dispatchers keep
// at most 256 messages in flight beyond the slowest subscriber (1 024 in all
// for scopes-10k), so that latency measures delivery, not an ever-growing
// backlog. The fan-out workloads also report store calls per dispatch
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

const msgBytes = 100

var padding = strings.Repeat(".", msgBytes)

func textAt(t time.Time) string {
	s := strconv.FormatInt(t.UnixNano(), 16)
	return s + " " + padding[:msgBytes-len(s)-1]
}

func sentAt(text string) time.Time {
	i := strings.IndexByte(text, ' ')
	n, _ := strconv.ParseInt(text[:i], 16, 64)
	return time.Unix(0, n)
}

// recorder checks one subscriber's deliveries and records their latencies.
type recorder struct {
	next    moitessier.Cursor
	lat     []time.Duration
	bad     int
	last    atomic.Int64 // unix nanos of the last delivery
	count   atomic.Int64
	calls   atomic.Int64 // respond calls
	want    int64
	done    chan struct{}
	closeMu sync.Once
}

func newRecorder(want int) *recorder {
	return &recorder{next: 1, lat: make([]time.Duration, 0, want), want: int64(want), done: make(chan struct{})}
}

func (r *recorder) respond(ctx context.Context, msgs []moitessier.Message) error {
	now := time.Now()
	for i := range msgs {
		m := &msgs[i]
		if m.Seq != r.next {
			r.bad++
			continue
		}
		r.next++
		r.lat = append(r.lat, now.Sub(sentAt(m.Text)))
	}
	r.last.Store(now.UnixNano())
	r.calls.Add(1)
	if r.count.Add(int64(len(msgs))) >= r.want {
		r.closeMu.Do(func() { close(r.done) })
	}
	return nil
}

func report(b *testing.B, start time.Time, recs []*recorder, dispatches int) {
	var end int64
	var lat []time.Duration
	bad := 0
	for _, r := range recs {
		end = max(end, r.last.Load())
		lat = append(lat, r.lat...)
		bad += r.bad
	}
	if bad > 0 {
		b.Fatalf("%d deliveries out of order or repeated", bad)
	}
	wall := time.Unix(0, end).Sub(start).Seconds()
	reportLatency(b, lat, wall, dispatches)
}

func reportLatency(b *testing.B, lat []time.Duration, wall float64, dispatches int) {
	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[int(p*float64(len(lat)-1))]) / 1e6
	}
	b.ReportMetric(float64(len(lat))/wall, "msgs/s")
	b.ReportMetric(float64(dispatches)/wall, "dispatches/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

// window is how many messages a benchmark dispatcher may be ahead of the
// slowest subscriber: as many as the baseline's channels hold.
const window = 256

// waitWindow waits while sent is more than w ahead of done().
func waitWindow(sent int64, done func() int64, w int64) {
	for sent-done() > w {
		time.Sleep(20 * time.Microsecond)
	}
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
	reportLatency(b, all, time.Unix(0, end.Load()).Sub(start).Seconds(), b.N)
}

func benchHub(b *testing.B, h Harness, s moitessier.Store) *moitessier.Hub {
	// The workloads make thousands of listeners as one person.
	hub, err := moitessier.New(s, moitessier.Options{GCInterval: -1, Quota: noQuota})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = hub.Close() })
	return hub
}

// startListeners runs one ListenUntil per listener, waits until every one
// has joined, and returns a stop func.
func startListeners(b *testing.B, hub *moitessier.Hub, ls []*moitessier.Listener, recs []*recorder) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = l.ListenUntil(ctx, nil, recs[i].respond, 0, 0, 0)
		}()
	}
	deadline := time.Now().Add(5 * time.Minute)
	for hub.Stats().Listening < int64(len(ls)) {
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d listeners started in 5 minutes", hub.Stats().Listening, len(ls))
		}
		time.Sleep(time.Millisecond)
	}
	return func() { cancel(); wg.Wait() }
}

func benchFanout(b *testing.B, h Harness, subs, dispatchers int) {
	s, calls := countstore.Wrap(newStore(b, h))
	hub := benchHub(b, h, s)
	ls := make([]*moitessier.Listener, subs)
	recs := make([]*recorder, subs)
	for i := range ls {
		ls[i] = mustListener(b, hub, moitessier.Conditions{Person: "p", Client: strconv.Itoa(i), Type: moitessier.Shared, Scope: "bench.fanout"})
		recs[i] = newRecorder(b.N)
	}
	stop := startListeners(b, hub, ls, recs)
	defer stop()
	b.ResetTimer()
	start := time.Now()
	calls0 := calls.Load()
	var wg sync.WaitGroup
	var sent atomic.Int64
	for d := range dispatchers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			for n := d; n < b.N; n += dispatchers {
				if k := sent.Add(1); k%16 == 0 {
					waitWindow(k, func() int64 {
						low := int64(b.N)
						for _, r := range recs {
							low = min(low, r.count.Load())
						}
						return low
					}, window)
				}
				if _, err := hub.Dispatch(ctx, "p", "bench.fanout", textAt(time.Now())); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, r := range recs {
		<-r.done
	}
	b.StopTimer()
	report(b, start, recs, b.N)
	b.ReportMetric(float64(calls.Load()-calls0)/float64(b.N), "calls/dispatch")
	var delivered, responds int64
	for _, r := range recs {
		delivered += r.count.Load()
		responds += r.calls.Load()
	}
	b.ReportMetric(float64(delivered)/float64(max(responds, 1)), "msgs/respond")
}

func benchScopes(b *testing.B, h Harness, scopes int) {
	s := newStore(b, h)
	hub := benchHub(b, h, s)
	ls := make([]*moitessier.Listener, scopes)
	recs := make([]*recorder, scopes)
	names := make([]string, scopes)
	t0 := time.Now()
	for i := range ls {
		names[i] = "bench.scope." + strconv.Itoa(i)
		ls[i] = mustListener(b, hub, moitessier.Conditions{Person: "p", Type: moitessier.Shared, Scope: names[i]})
		want := b.N / scopes
		if i < b.N%scopes {
			want++
		}
		recs[i] = newRecorder(want)
		if want == 0 {
			close(recs[i].done)
		}
	}
	created := time.Since(t0)
	t1 := time.Now()
	stop := startListeners(b, hub, ls, recs)
	defer stop()
	listening := time.Since(t1)
	b.ResetTimer()
	start := time.Now()
	ctx := context.Background()
	delivered := func() int64 {
		var sum int64
		for _, r := range recs {
			sum += r.count.Load()
		}
		return sum
	}
	for n := range b.N {
		if n%256 == 0 {
			waitWindow(int64(n), delivered, 4*window)
		}
		if _, err := hub.Dispatch(ctx, "p", names[n%scopes], textAt(time.Now())); err != nil {
			b.Fatal(err)
		}
	}
	for _, r := range recs {
		<-r.done
	}
	b.StopTimer()
	report(b, start, recs, b.N)
	b.ReportMetric(created.Seconds(), "create-s")
	b.ReportMetric(listening.Seconds(), "listen-s")
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
		s, calls := countstore.Wrap(newStore(b, h))
		hub := benchHub(b, h, s)
		ls := make([]*moitessier.Listener, n)
		recs := make([]*recorder, n)
		for i := range ls {
			ls[i] = mustListener(b, hub, moitessier.Conditions{Person: "p", Type: moitessier.Shared, Scope: "idle." + strconv.Itoa(i)})
			recs[i] = newRecorder(1)
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		stop := startListeners(b, hub, ls, recs)
		time.Sleep(100 * time.Millisecond) // let every ListenUntil reach its wait
		runtime.GC()
		runtime.ReadMemStats(&after)
		calls0 := calls.Load()
		time.Sleep(idle)
		idleCalls := calls.Load() - calls0
		stop()
		b.ReportMetric(float64(idleCalls)/idle.Seconds(), "queries/s")
		b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(n), "heap-B/listener")
		b.ReportMetric(float64(int64(after.StackInuse)-int64(before.StackInuse))/float64(n), "stack-B/listener")
	}
}
