package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/likestripes/moitessier/internal/hubload"
)

// httpFloorCommand is the command pg-http-floor runs this binary with: a
// bare HTTP service, not the hub (see runHTTPFloor). It is for the bench's
// own use and is not listed in the usage.
const httpFloorCommand = "bench-http-floor"

// httpFloorStatement is the environment variable that hands the floor's
// statement to its process (the store's address goes in MOITESSIER_STORE).
const httpFloorStatement = "MOITESSIER_BENCH_FLOOR_STATEMENT"

// pgHTTPFloor measures pg-http-floor for d: what a Go HTTP service that
// does nothing but the store's least write can answer one publisher (or
// c.publishers), the hub's http-fanout-* measured against what the HTTP
// leg and the server leave. A process of this binary (httpFloorCommand)
// serves, with net/http and a pgx pool, a POST by committing
// pg-append-floor's statement, the request's body its text, prepared and
// planned once per connection as the store's statements are, and
// answering 200; it has no subscribers, tokens, scopes or limits to check.
// The publishers send the requests the http-fanout-* publishers send, one
// at a time each, for d. Its
// hub_cpu_us_per_delivery is that process's CPU per request, its
// baseline_ratio its rate over pg-insert-notify's and its floor_ratio over
// pg-append-floor's.
func (c *benchConfig) pgHTTPFloor(ctx context.Context, d time.Duration) (BenchResult, error) {
	res := BenchResult{Workload: "pg-http-floor", Store: c.storeName, Listeners: 1, Publishers: c.publishers, HubProcs: c.hubProcs}
	fs, err := c.floorSchema(ctx)
	if err != nil {
		return res, err
	}
	env := c.childEnv("MOITESSIER_STORE="+c.store, httpFloorStatement+"="+fs.statement("$1"))
	h, err := c.startChild(ctx, []string{httpFloorCommand}, env, fs.drop)
	if err != nil {
		return res, err
	}
	defer h.stop()
	deadline := time.Now().Add(d)
	cpu0 := cpuOfPid(h.pid)
	start := time.Now()
	n, err := c.publish(ctx, h, "bench.floor", func(int, int) bool { return time.Now().Before(deadline) })
	secs := time.Since(start).Seconds()
	cpu1 := cpuOfPid(h.pid)
	if err != nil {
		return res, err
	}
	conn, err := pgx.Connect(ctx, plainDSN(c.store))
	if err != nil {
		return res, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := fs.check(ctx, conn); err != nil {
		return res, err
	}
	res.Messages = n
	res.Seconds = secs
	res.MsgsPerS = float64(n) / secs
	res.DispatchesPerS = res.MsgsPerS
	if cpu0 >= 0 && cpu1 >= 0 && n > 0 {
		res.HubCPUSeconds = (cpu1 - cpu0).Seconds()
		res.HubCPUPerDelivery = float64(cpu1-cpu0) / 1e3 / float64(n)
	}
	c.ratios(&res)
	return res, nil
}

// runHTTPFloor is httpFloorCommand: it serves, on a port of 127.0.0.1 that
// it prints, every request by committing the statement in
// httpFloorStatement (one parameter, the request's body) on a pgx pool of
// MOITESSIER_STORE, until ctx ends. Its pool has the store's plan setting
// (generic plans), and is connected before the address is printed.
func runHTTPFloor(ctx context.Context, _ []string, _ io.Reader, stdout, stderr io.Writer) error {
	stmt := os.Getenv(httpFloorStatement)
	if stmt == "" {
		return fmt.Errorf("%s is for moitessier bench's own use: %s is not set", httpFloorCommand, httpFloorStatement)
	}
	pc, err := pgxpool.ParseConfig(os.Getenv("MOITESSIER_STORE"))
	if err != nil {
		return errors.New("cannot parse the store's address")
	}
	pc.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := pool.Ping(ctx); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	var once sync.Once
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<16))
		if err == nil {
			_, err = pool.Exec(r.Context(), stmt, body)
		}
		if err != nil {
			once.Do(func() { fmt.Fprintf(stderr, "%s: %v\n", httpFloorCommand, err) })
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	})}
	fmt.Fprintf(stdout, "serving on http://%s\n", ln.Addr())
	stop := context.AfterFunc(ctx, func() { _ = srv.Close() })
	defer stop()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// fanoutFloorSubscribers is pg-fanout-floor's number of subscribers, as
// fanout-1000's.
const fanoutFloorSubscribers = 1000

// pgFanoutFloor measures pg-fanout-floor: what fanout-1000 could be at the
// least in Go on this machine and server, with no Moitessier code on the
// path. One pgx connection commits pg-append-floor's statement (prepared,
// planned generically as the store's are) n times in a loop, each
// message's text made as the workloads' are; after each commit the text
// goes into a slice in memory, and subs goroutines, woken together by
// closing one channel at most every 8 ms (about as the hub's caches wake
// so many waiting subscribers, without their early wake-ups), each read
// what is new and record its latency from the text, as the workloads'
// subscribers do. It sends as many messages as fanout-1000 (n), so that
// both start and end alike, and reports what fanout-1000 does
// (dispatches/s, deliveries/s, p50/p99, CPU per delivery, from the first
// commit to the last delivery), with baseline_ratio and floor_ratio;
// fanout-1000 then reports fanout_floor_ratio, its dispatches/s over this
// rate.
func (c *benchConfig) pgFanoutFloor(ctx context.Context, subs, n int) (BenchResult, error) {
	res := BenchResult{Workload: "pg-fanout-floor", Store: c.storeName, Listeners: subs, Messages: n}
	fs, conn, closeFloor, err := c.genericFloorConn(ctx)
	if err != nil {
		return res, err
	}
	defer closeFloor()
	f := &fanFloor{wake: make(chan struct{}), texts: make([]string, 0, n), every: min(time.Duration(subs)*8*time.Microsecond, 8*time.Millisecond)}
	lats := make([]time.Duration, subs*n) // subscriber i's are lats[i*n:(i+1)*n]
	d := newFloorDeliveries()
	defer d.end()
	for i := range subs {
		d.start(func() {
			mine := lats[i*n : (i+1)*n]
			cur := 0
			for {
				f.mu.Lock()
				texts, w := f.texts[cur:len(f.texts):len(f.texts)], f.wake
				f.mu.Unlock()
				if len(texts) == 0 {
					select {
					case <-w:
						continue
					case <-d.done:
						return
					}
				}
				now := time.Now()
				for k, t := range texts {
					mine[cur+k] = now.Sub(hubload.SentAt(t))
				}
				cur += len(texts)
				d.deliver(len(texts), now)
			}
		})
	}
	stmt := fs.statement("$1")
	err = c.measureFloor(ctx, &res, d, int64(n*subs), lats, func(int) error {
		text := hubload.Text(time.Now())
		if _, err := conn.Exec(ctx, stmt, []byte(text)); err != nil {
			return err
		}
		f.add(text)
		return nil
	}, func() error { return fs.check(ctx, conn) })
	return res, err
}

// fanFloor is pg-fanout-floor's messages and the channel its subscribers
// wait on, closed at most every every.
type fanFloor struct {
	mu       sync.Mutex
	texts    []string
	wake     chan struct{}
	every    time.Duration
	lastWake time.Time
	pending  bool
}

// add appends text and wakes the subscribers, at once if the last wake-up
// is every ago, else when it will be.
func (f *fanFloor) add(text string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.texts = append(f.texts, text)
	if f.pending {
		return
	}
	wait := f.every - time.Since(f.lastWake)
	if wait <= 0 {
		f.wakeLocked()
		return
	}
	f.pending = true
	time.AfterFunc(wait, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.wakeLocked()
	})
}

func (f *fanFloor) wakeLocked() {
	close(f.wake)
	f.wake = make(chan struct{})
	f.lastWake, f.pending = time.Now(), false
}

// floorDeliveries is what the subscribers of pg-fanout-floor or
// pg-scopes-floor share: how many deliveries they made, how many they
// were handed wrongly (another listener's, or out of order), when the
// latest was, and the channel that ends them.
type floorDeliveries struct {
	delivered atomic.Int64
	bad       atomic.Int64
	last      atomic.Int64 // unix nanos of the latest delivery
	done      chan struct{}
	wg        sync.WaitGroup
	ready     sync.WaitGroup // until every subscriber started runs
}

// newFloorDeliveries returns a floorDeliveries with no subscribers, its
// done channel open.
func newFloorDeliveries() *floorDeliveries {
	return &floorDeliveries{done: make(chan struct{})}
}

// start runs sub, a subscriber, on a goroutine of its own, which end
// waits for.
func (d *floorDeliveries) start(sub func()) {
	d.wg.Add(1)
	d.ready.Add(1)
	go func() {
		defer d.wg.Done()
		d.ready.Done()
		sub()
	}()
}

// deliver counts k deliveries made at now.
func (d *floorDeliveries) deliver(k int, now time.Time) {
	d.delivered.Add(int64(k))
	at := now.UnixNano()
	for {
		l := d.last.Load()
		if l >= at || d.last.CompareAndSwap(l, at) {
			return
		}
	}
}

// end ends the subscribers and waits for them.
func (d *floorDeliveries) end() {
	close(d.done)
	d.wg.Wait()
}

// measureFloor waits until every subscriber of d runs, then runs
// commit(m) for every message m < res.Messages, in order, waits until the
// subscribers made want deliveries (failing if none comes for 30 s, or if
// one was handed wrongly), checks what was written with check, and sets
// res from lats (the deliveries' latencies), the wall time from the first
// commit to the last delivery, this process's CPU per delivery, and the
// ratios.
func (c *benchConfig) measureFloor(ctx context.Context, res *BenchResult, d *floorDeliveries, want int64, lats []time.Duration, commit func(m int) error, check func() error) error {
	d.ready.Wait()
	settleHeap()
	cpu0 := processCPU()
	start := time.Now()
	for m := range res.Messages {
		if err := commit(m); err != nil {
			return err
		}
	}
	for seen, at := d.delivered.Load(), time.Now(); seen < want && d.bad.Load() == 0; {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
		if n := d.delivered.Load(); n > seen {
			seen, at = n, time.Now()
		} else if time.Since(at) > 30*time.Second {
			return fmt.Errorf("%d of %d deliveries, none for 30 s", n, want)
		}
	}
	cpu1 := processCPU()
	if err := check(); err != nil {
		return err
	}
	if err := summarize(res, start, d.last.Load(), lats, d.bad.Load()); err != nil {
		return err
	}
	if cpu0 >= 0 && cpu1 >= 0 && res.Deliveries > 0 {
		res.CPUPerDelivery = float64(cpu1-cpu0) / 1e3 / float64(res.Deliveries)
	}
	c.ratios(res)
	return nil
}

// pgScopesFloor measures pg-scopes-floor: what scopes-10k could be at the
// least in Go on this machine and server, with no Moitessier code on the
// path. On a schema the store migrated, with one listener made through a
// hub and scopes-1 more copied from its row (each its own scope), one pgx
// connection commits pg-append-floor's statement n times in a loop, to
// each listener in turn, its id, scope and text as parameters (prepared,
// planned generically as the store's are); it matches no scope (the
// listener is known), and it takes no lock but the UPDATE's. After each
// commit the text goes, by a buffered channel, to the one goroutine of
// that listener (scopes in all, each waiting on its own channel, as a
// listener's subscriber waits on its cache), which records its latency
// from the text, as the workloads' subscribers do. It sends as many
// messages as scopes-10k (n) and reports what it does (dispatches/s,
// deliveries/s, p50/p99, CPU per delivery, from the first commit to the
// last delivery), with baseline_ratio and floor_ratio; scopes-10k then
// reports scopes_floor_ratio, its dispatches/s over this rate.
func (c *benchConfig) pgScopesFloor(ctx context.Context, scopes, n int) (BenchResult, error) {
	res := BenchResult{Workload: "pg-scopes-floor", Store: c.storeName, Listeners: scopes, Messages: n}
	fs, conn, closeFloor, err := c.genericFloorConn(ctx)
	if err != nil {
		return res, err
	}
	defer closeFloor()
	ids, names, err := fs.copies(ctx, conn, scopes)
	if err != nil {
		return res, fmt.Errorf("make the listeners: %w", err)
	}
	// Message m goes to listener m%scopes; lats[m] is its latency.
	type message struct {
		m    int
		text string
	}
	lats := make([]time.Duration, n)
	chs := make([]chan message, scopes)
	d := newFloorDeliveries()
	defer d.end()
	for i := range chs {
		want := n / scopes
		if i < n%scopes {
			want++
		}
		chs[i] = make(chan message, want)
		d.start(func() {
			for k := range want {
				select {
				case msg := <-chs[i]:
					now := time.Now()
					if msg.m != i+k*scopes {
						d.bad.Add(1) // not this listener's next
						continue
					}
					lats[msg.m] = now.Sub(hubload.SentAt(msg.text))
					d.deliver(1, now)
				case <-d.done:
					return
				}
			}
		})
	}
	stmt := fs.statementFor("$1::text", "$2::text", "$3::bytea")
	err = c.measureFloor(ctx, &res, d, int64(n), lats, func(m int) error {
		text := hubload.Text(time.Now())
		if _, err := conn.Exec(ctx, stmt, ids[m%scopes], names[m%scopes], []byte(text)); err != nil {
			return fmt.Errorf("commit message %d: %w", m, err)
		}
		chs[m%scopes] <- message{m, text}
		return nil
	}, func() error {
		var written, sum int
		if err := conn.QueryRow(ctx, "SELECT count(*) FILTER (WHERE head > 0), coalesce(sum(head), 0) FROM "+pgx.Identifier{fs.schema, "listeners"}.Sanitize()).Scan(&written, &sum); err != nil {
			return err
		}
		if written != min(n, scopes) || sum != n {
			return fmt.Errorf("the statement wrote %d messages to %d listeners, not %d to %d", sum, written, n, min(n, scopes))
		}
		return nil
	})
	return res, err
}
