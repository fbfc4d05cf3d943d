// Package workload holds Moitessier's standard library workloads — fan-out,
// many scopes, concurrent dispatchers, idle listeners — run through a hub on
// any store. One copy serves both the benchmarks of package storetest (make
// bench) and the library workloads of "moitessier bench", so that both
// measure the same code with the same message encoding (hubload.Text).
package workload

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/internal/countstore"
	"github.com/likestripes/moitessier/internal/hubload"
)

// Person is the one person every workload listens and dispatches as; the
// hub has no quota, since the workloads make thousands of listeners.
const Person = "bench"

// DefaultWindow is how many messages a dispatcher may be ahead of the
// slowest subscriber by default: as many as the channel baseline's
// channels hold (storetest's baseline-channel-fanout-100).
const DefaultWindow = 256

// Arrivals is how many goroutines create listeners at once in the
// concurrent creation Scopes measures (Result.CreateConcurrent).
const Arrivals = 64

// Hooks are optional calls a workload makes around its measured part.
type Hooks struct {
	// Start is called when setup is done, just before the first dispatch
	// (storetest resets the benchmark timer there).
	Start func()
	// Stop is called when the last message is delivered.
	Stop func()
	// Progress, if set, is called when dispatching starts with a function
	// that counts what has been delivered so far and the total expected;
	// the function it returns is called when the workload ends.
	Progress func(delivered func() int64, total int64) (stop func())
}

func (h *Hooks) start() {
	if h.Start != nil {
		h.Start()
	}
}

func (h *Hooks) stop() {
	if h.Stop != nil {
		h.Stop()
	}
}

func (h *Hooks) progress(delivered func() int64, total int64) func() {
	if h.Progress == nil {
		return func() {}
	}
	return h.Progress(delivered, total)
}

// Result is what a delivery workload measured.
type Result struct {
	// Deliveries counts the checked deliveries: right listener, in order,
	// no duplicate.
	Deliveries int
	// Wall is the time from the first dispatch to the last delivery.
	Wall time.Duration
	// Latencies are the dispatch-to-respond times of every delivery,
	// sorted.
	Latencies []time.Duration
	// StoreCalls counts the store calls made while dispatching (Match,
	// Append, Read, Checkpoint…, but not MatchCached, which a store
	// answers from memory but on a miss).
	StoreCalls int64
	// Responds counts respond calls (wake-ups with messages).
	Responds int64
	// Dispatches are how long each Hub.Dispatch call took, from the call
	// to its return, sorted (Fanout and Scopes): a dispatcher's view,
	// where Latencies are the subscribers'.
	Dispatches []time.Duration
	// Create is how long creating the listeners took, one NewListener
	// call after the other (a user's loop); Listen how long ListenUntil
	// took to start on all of them.
	Create, Listen time.Duration
	// CreateConcurrent is how long as many other listeners took to be
	// created by Arrivals goroutines at once, as clients arriving together
	// (after a restart, say) create theirs (Scopes only).
	CreateConcurrent time.Duration
}

// MsgsPerSecond is deliveries per second of Wall.
func (r *Result) MsgsPerSecond() float64 { return float64(r.Deliveries) / r.wall() }

// PerSecond is n per second of Wall.
func (r *Result) PerSecond(n int) float64 { return float64(n) / r.wall() }

func (r *Result) wall() float64 { return max(r.Wall.Seconds(), 1e-9) }

// Percentile returns the p-th latency (0 ≤ p ≤ 1) in milliseconds.
func (r *Result) Percentile(p float64) float64 { return Percentile(r.Latencies, p) }

// DispatchPercentile returns the p-th Dispatch call duration (0 ≤ p ≤ 1)
// in milliseconds.
func (r *Result) DispatchPercentile(p float64) float64 { return Percentile(r.Dispatches, p) }

// Percentile returns the p-th of the sorted latencies in milliseconds, or 0.
func Percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return float64(sorted[int(p*float64(len(sorted)-1))]) / 1e6
}

// recorder checks one subscriber's deliveries and records their latencies.
type recorder struct {
	next  moitessier.Cursor
	lat   []time.Duration
	bad   atomic.Int64
	last  atomic.Int64 // unix nanos of the last delivery
	count atomic.Int64
	calls atomic.Int64 // respond calls
	want  int64
	done  chan struct{}
	once  sync.Once
}

func newRecorder(want int) *recorder {
	r := &recorder{next: 1, lat: make([]time.Duration, 0, want), want: int64(want), done: make(chan struct{})}
	if want == 0 {
		close(r.done)
	}
	return r
}

func (r *recorder) respond(ctx context.Context, msgs []moitessier.Message) error {
	now := time.Now()
	for i := range msgs {
		m := &msgs[i]
		if m.Seq != r.next {
			r.bad.Add(1)
			continue
		}
		r.next++
		r.lat = append(r.lat, now.Sub(hubload.SentAt(m.Text)))
	}
	r.last.Store(now.UnixNano())
	r.calls.Add(1)
	if r.count.Add(int64(len(msgs))) >= r.want {
		r.once.Do(func() { close(r.done) })
	}
	return nil
}

type recorders []*recorder

func (rs recorders) delivered() int64 {
	var s int64
	for _, r := range rs {
		s += r.count.Load()
	}
	return s
}

func (rs recorders) lowest(limit int64) int64 {
	for _, r := range rs {
		limit = min(limit, r.count.Load())
	}
	return limit
}

// wait waits for every recorder, or fails after 30 s without progress.
func (rs recorders) wait(ctx context.Context) error {
	last, lastT := rs.delivered(), time.Now()
	for _, r := range rs {
		for waiting := true; waiting; {
			select {
			case <-r.done:
				waiting = false
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
				if n := rs.delivered(); n != last {
					last, lastT = n, time.Now()
				} else if time.Since(lastT) > 30*time.Second {
					return fmt.Errorf("no delivery for 30 s: %d delivered", n)
				}
			}
		}
	}
	return nil
}

// result gathers the recorders' figures.
func (rs recorders) result(start time.Time) (Result, error) {
	var (
		res  Result
		end  int64
		bad  int64
		lats []time.Duration
		n    int
	)
	for _, r := range rs {
		n += len(r.lat)
	}
	lats = make([]time.Duration, 0, n)
	for _, r := range rs {
		end = max(end, r.last.Load())
		lats = append(lats, r.lat...)
		bad += r.bad.Load()
		res.Responds += r.calls.Load()
	}
	if bad > 0 {
		return res, fmt.Errorf("%d deliveries out of order or repeated", bad)
	}
	slices.Sort(lats)
	res.Latencies, res.Deliveries = lats, len(lats)
	res.Wall = time.Unix(0, end).Sub(start)
	return res, nil
}

// newHub makes the workloads' hub on s, counting its store calls.
func newHub(s moitessier.Store) (*moitessier.Hub, *atomic.Int64, error) {
	cs, calls := countstore.Wrap(s)
	hub, err := moitessier.New(cs, moitessier.Options{GCInterval: -1, Quota: moitessier.Quota{Listeners: -1, Handlers: -1, Shared: -1, Subscriptions: -1}})
	return hub, calls, err
}

// listenAll runs one ListenUntil per listener, waits until every one has
// joined, and returns a stop func.
func listenAll(ctx context.Context, hub *moitessier.Hub, ls []*moitessier.Listener, rs recorders) (stop func(), err error) {
	lctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = l.ListenUntil(lctx, nil, rs[i].respond, 0, 0, 0)
		}()
	}
	stop = func() { cancel(); wg.Wait() }
	deadline := time.Now().Add(5 * time.Minute)
	for hub.Stats().Listening < int64(len(ls)) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			stop()
			return nil, fmt.Errorf("only %d of %d listeners started", hub.Stats().Listening, len(ls))
		}
		time.Sleep(time.Millisecond)
	}
	return stop, nil
}

// waitWindow waits while sent is more than w ahead of done(); w 0 waits
// for nothing.
func waitWindow(ctx context.Context, sent int64, done func() int64, w int64) {
	for w > 0 && sent-done() > w && ctx.Err() == nil {
		time.Sleep(20 * time.Microsecond)
	}
}

// Fanout is fanout-N and dispatch-8: one Shared listener with subs
// subscribers, each in ListenUntil, and dispatchers goroutines that dispatch
// n messages of hubload.TextBytes bytes in all to its scope, each at most
// window messages ahead of the slowest subscriber (0: no limit).
func Fanout(ctx context.Context, s moitessier.Store, subs, dispatchers, n, window int, hooks Hooks) (Result, error) {
	hub, calls, err := newHub(s)
	if err != nil {
		return Result{}, err
	}
	defer hub.Close()
	ls := make([]*moitessier.Listener, subs)
	rs := make(recorders, subs)
	for i := range ls {
		if ls[i], err = hub.NewListener(ctx, moitessier.Conditions{Person: Person, Client: strconv.Itoa(i), Type: moitessier.Shared, Scope: "bench.fanout"}); err != nil {
			return Result{}, err
		}
		rs[i] = newRecorder(n)
	}
	stop, err := listenAll(ctx, hub, ls, rs)
	if err != nil {
		return Result{}, err
	}
	defer stop()
	defer hooks.progress(rs.delivered, int64(n*subs))()
	hooks.start()
	start := time.Now()
	calls0 := calls.Load()
	var wg sync.WaitGroup
	var sent atomic.Int64
	errc := make(chan error, dispatchers)
	took := make([][]time.Duration, dispatchers)
	for d := range dispatchers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, n/dispatchers+1)
			defer func() { took[d] = mine }()
			for i := d; i < n; i += dispatchers {
				if k := sent.Add(1); k%16 == 0 {
					waitWindow(ctx, k, func() int64 { return rs.lowest(int64(n)) }, int64(window))
				}
				t := time.Now()
				if _, err := hub.Dispatch(ctx, Person, "bench.fanout", hubload.Text(t)); err != nil {
					errc <- err
					return
				}
				mine = append(mine, time.Since(t))
			}
		}()
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return Result{}, err
	}
	if err := rs.wait(ctx); err != nil {
		return Result{}, err
	}
	hooks.stop()
	res, err := rs.result(start)
	res.StoreCalls = calls.Load() - calls0
	res.Dispatches = slices.Concat(took...)
	slices.Sort(res.Dispatches)
	return res, err
}

// Scopes is scopes-10k: scopes scopes with one listener each, in
// ListenUntil, and one dispatcher that dispatches n messages to them in
// turn, at most 4×window messages ahead of what was delivered (0: no
// limit). It also measures the time to create the listeners, one after
// the other (Create), and to start ListenUntil on all of them (Listen); and
// the time Arrivals goroutines at once take to create scopes more
// listeners, each on a scope of its own (CreateConcurrent), which then
// leave again, untimed, before the dispatching starts.
func Scopes(ctx context.Context, s moitessier.Store, scopes, n, window int, hooks Hooks) (Result, error) {
	hub, calls, err := newHub(s)
	if err != nil {
		return Result{}, err
	}
	defer hub.Close()
	ls := make([]*moitessier.Listener, scopes)
	rs := make(recorders, scopes)
	names := make([]string, scopes)
	t0 := time.Now()
	for i := range ls {
		names[i] = "bench.scope." + strconv.Itoa(i)
		if ls[i], err = hub.NewListener(ctx, moitessier.Conditions{Person: Person, Type: moitessier.Shared, Scope: names[i]}); err != nil {
			return Result{}, err
		}
		want := n / scopes
		if i < n%scopes {
			want++
		}
		rs[i] = newRecorder(want)
	}
	created := time.Since(t0)
	concurrent, err := createConcurrently(ctx, hub, scopes)
	if err != nil {
		return Result{}, err
	}
	t1 := time.Now()
	stop, err := listenAll(ctx, hub, ls, rs)
	if err != nil {
		return Result{}, err
	}
	defer stop()
	listening := time.Since(t1)
	defer hooks.progress(rs.delivered, int64(n))()
	hooks.start()
	start := time.Now()
	calls0 := calls.Load()
	took := make([]time.Duration, 0, n)
	for i := range n {
		if i%256 == 0 {
			waitWindow(ctx, int64(i), rs.delivered, 4*int64(window))
		}
		t := time.Now()
		if _, err := hub.Dispatch(ctx, Person, names[i%scopes], hubload.Text(t)); err != nil {
			return Result{}, err
		}
		took = append(took, time.Since(t))
	}
	if err := rs.wait(ctx); err != nil {
		return Result{}, err
	}
	hooks.stop()
	res, err := rs.result(start)
	res.Create, res.Listen, res.CreateConcurrent = created, listening, concurrent
	slices.Sort(took)
	res.Dispatches = took
	res.StoreCalls = calls.Load() - calls0
	return res, err
}

// createConcurrently creates n listeners, each on a scope of its own, from
// Arrivals goroutines at once, and returns how long that took; then it
// closes them, untimed.
func createConcurrently(ctx context.Context, hub *moitessier.Hub, n int) (time.Duration, error) {
	ls := make([]*moitessier.Listener, n)
	// each runs fn(i) for every i < n from Arrivals goroutines, and
	// returns the first error.
	each := func(fn func(i int) error) error {
		var (
			next atomic.Int64
			wg   sync.WaitGroup
			once sync.Once
			ferr error
		)
		for range min(Arrivals, n) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
					if err := fn(i); err != nil {
						once.Do(func() { ferr = err })
						return
					}
				}
			}()
		}
		wg.Wait()
		return ferr
	}
	t0 := time.Now()
	err := each(func(i int) error {
		var err error
		ls[i], err = hub.NewListener(ctx, moitessier.Conditions{Person: Person, Type: moitessier.Shared, Scope: "bench.arrival." + strconv.Itoa(i)})
		return err
	})
	took := time.Since(t0)
	if err != nil {
		return took, fmt.Errorf("concurrent creation: %w", err)
	}
	if err := each(func(i int) error { return ls[i].Close(ctx) }); err != nil {
		return took, fmt.Errorf("close the concurrently created listeners: %w", err)
	}
	return took, nil
}

// IdleResult is what Idle measured.
type IdleResult struct {
	// QueriesPerSecond is store calls per second while idle.
	QueriesPerSecond float64
	// HeapPerListener and StackPerListener are the heap and stack bytes
	// each waiting listener holds.
	HeapPerListener, StackPerListener float64
}

// Idle is idle-10k: n listeners, each on its own scope, waiting in
// ListenUntil with no traffic for idle, after settle to let every one reach
// its wait.
func Idle(ctx context.Context, s moitessier.Store, n int, settle, idle time.Duration, hooks Hooks) (IdleResult, error) {
	hub, calls, err := newHub(s)
	if err != nil {
		return IdleResult{}, err
	}
	defer hub.Close()
	ls := make([]*moitessier.Listener, n)
	rs := make(recorders, n)
	for i := range ls {
		if ls[i], err = hub.NewListener(ctx, moitessier.Conditions{Person: Person, Type: moitessier.Shared, Scope: "idle." + strconv.Itoa(i)}); err != nil {
			return IdleResult{}, err
		}
		rs[i] = newRecorder(1)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	stop, err := listenAll(ctx, hub, ls, rs)
	if err != nil {
		return IdleResult{}, err
	}
	defer stop()
	time.Sleep(settle)
	runtime.GC()
	runtime.ReadMemStats(&after)
	calls0 := calls.Load()
	stopProgress := hooks.progress(func() int64 { return calls.Load() - calls0 }, 0)
	defer stopProgress()
	select {
	case <-time.After(idle):
	case <-ctx.Done():
		return IdleResult{}, ctx.Err()
	}
	idleCalls := calls.Load() - calls0
	return IdleResult{
		QueriesPerSecond: float64(idleCalls) / idle.Seconds(),
		HeapPerListener:  float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(n),
		StackPerListener: float64(int64(after.StackInuse)-int64(before.StackInuse)) / float64(n),
	}, nil
}
