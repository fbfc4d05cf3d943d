package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/likestripes/moitessier/internal/hubload"
	"github.com/likestripes/moitessier/internal/workload"
)

const benchDescription = `
Run the standard workloads of Moitessier's benchmarks against a store and
print, for each, delivered messages per second and the p50/p99 latency from
the start of a dispatch to its delivery (every delivery, not a sample):

  fanout-1      1 Shared listener, 1 subscriber in ListenUntil
  fanout-100    1 Shared listener, 100 subscribers
  fanout-1000   1 Shared listener, 1 000 subscribers
  scopes-10k    10 000 scopes, one listener each, dispatched to in turn (twice
                each by default);
                also reports how long creating its listeners took, one
                NewListener after the other (create_s), and creating 10 000
                more from 64 goroutines at once (create_concurrent_s)
  dispatch-8    8 concurrent dispatchers, 1 Shared listener with 100 subscribers
  idle-10k      10 000 listeners waiting, no traffic (reports store queries/s
                and heap bytes per listener)
  sse-10k       a hub process (moitessier serve) with 10 000 SSE clients on one
                scope, a dispatch every 10 ms whether or not the ones before
                were answered; latency from when each dispatch was due to the
                client reading it, the hub's RSS per connection and its CPU
                per delivery
  http-fanout-1    a hub process, 1 subscriber over --transport (sse or ws)
                   and --publishers publishers (default 1), each sending one
                   HTTP dispatch at a time and waiting for its answer
  http-fanout-100  as http-fanout-1 with 100 subscribers
  http-idle        a hub process with --clients idle subscribers (default
                   2 000) over --transport, one scope each: the hub's RSS
                   per connection from before the first
                   (rss_bytes_per_conn, with what the hub sets up once as
                   they come, such as its store's pool), per connection
                   past the first eighth of them, or 512
                   (rss_bytes_per_added_conn: what one more costs), and
                   its CPU while they wait --idle

The http-* workloads and sse-10k run the hub as a separate process (this
binary's serve, on a new SQLite file in a temporary directory, a new
PostgreSQL schema, or memory) and their clients in this one, on real
sockets; latency runs from the publisher's send to the subscriber's read,
on this process's clock, for every delivery. They report publishes/s
(dispatches_per_s), deliveries/s (msgs_per_s), and the hub's CPU time per
delivery (hub_cpu_us_per_delivery), read from /proc/PID/stat (Linux)
before the first dispatch and after the last delivery. On Postgres they
are preceded by a baseline measured in the same run, pg-insert-notify: one
client committing a raw single-row INSERT and a NOTIFY, sent as one query,
for --baseline-time (5 s) (with pgbench when it is installed, else the same
statement in a loop on one pgx connection); http-fanout-* then report
baseline_ratio, publishes/s over that rate. So do the library workloads
that dispatch (fanout-*, scopes-10k, dispatch-8) on Postgres: their
baseline_ratio is dispatches/s over that rate. A second baseline follows
the first, pg-append-floor: the same client committing, as one prepared
statement, the least write a dispatch to one listener needs (the
listener's head raised under its row lock and the message inserted into
the store's own table, on a schema the store migrated) and a
notification, with no Moitessier code running. Its baseline_ratio is its
rate over pg-insert-notify's: how much the store's write leaves of the
raw INSERT's rate. The workloads' floor_ratio is dispatches/s over
its rate, which one dispatcher waiting for each commit can hardly pass
(dispatch-8's eight share commits). Before http-fanout-* a third follows,
pg-http-floor: a process of this binary that is not the hub but a bare Go
HTTP service (net/http and a pgx pool), answering each POST by committing
pg-append-floor's statement with the request's body as its text, sent
--publishers publishers' requests, as http-fanout-* sends them, for
--baseline-time; it reports its requests/s, with baseline_ratio and
floor_ratio, and its CPU per request (hub_cpu_us_per_delivery), and
http-fanout-* then report http_floor_ratio, publishes/s over its rate:
what the hub makes of what an HTTP round trip and the server leave. (Its
requests all write one listener, one commit each, where the hub combines
concurrent dispatches: with --publishers above 1, http_floor_ratio can
pass 1.) Before fanout-1000 one more follows, pg-fanout-floor: in this
process, with no Moitessier code on the path, one pgx connection commits
pg-append-floor's statement in a loop, as many times as fanout-1000
dispatches (--messages, default 300), and after each commit 1 000
goroutines, woken together by closing one channel at most every 8 ms
(about as the hub's caches wake so many subscribers), read the new
message from memory and record its latency as the workloads' subscribers
do; it reports what fanout-1000 does, and fanout-1000 then reports
fanout_floor_ratio, its dispatches/s over that rate. Before scopes-10k,
likewise, pg-scopes-floor: the same loop, as many times as scopes-10k
dispatches (--messages, default 20 000), to each of 10 000 listeners in
turn (one made through a hub, the others copied from its row, each of its
own scope), the listener's id, scope and text its parameters, with no
scope to match; after each commit the message goes, by a channel, to the
one goroutine waiting for that listener; scopes-10k then reports
scopes_floor_ratio. The library workloads report this process's CPU time
(user and system) per delivery, cpu_us_per_delivery, from the first
dispatch to the last delivery: their dispatchers, subscribers and store
clients are all in this process, a database server's own time is not.
The library workloads that dispatch (fanout-*, scopes-10k, dispatch-8)
also report how long each Hub.Dispatch call took, from the call to its
return, at the 50th, 90th and 99th percentiles (dispatch_p50_ms,
dispatch_p90_ms, dispatch_p99_ms): the dispatcher's side, where p50_ms and
p99_ms are the subscribers'.

Messages are 100 bytes. Deliveries are checked (right listener, in order, no
duplicate); the wall time runs from the first dispatch to the last delivery.
Before that first dispatch fanout-*, dispatch-8, scopes-10k,
pg-fanout-floor and pg-scopes-floor collect their setup's garbage and
return the memory it held to the system (debug.FreeOSMemory), so that
neither is done during the timed phase.
As in the Go benchmarks, a dispatcher stays at most --window (256) messages
ahead of the slowest subscriber (4 × --window in all for scopes-10k), so
that latency measures delivery, not a backlog; --window 0 lets the
dispatchers run free, so that a backlog shows in latency and memory. A live
rate line goes to stderr.

--json prints one JSON object per workload: workload, store, listeners
(subscribers or clients listening), messages (dispatched), msgs_per_s,
p50_ms, p99_ms, and more fields where they apply.

--rounds N runs the whole list N times in turn, the Postgres baselines
first in each round, so that every ratio is to baselines measured minutes,
not a quarter of an hour, before it, and the rounds of a workload and of
its baselines alternate. Each round's results are printed as they come
(with "round" in JSON), and after the last round one more line per workload and
baseline: each figure's median over the rounds and its range (in JSON, an
object with "rounds" and "summary", which maps each figure's JSON name to
its median, min, max and n, the rounds that reported it). A ratio's
median is the median of the rounds' own ratios, not a ratio of medians.

--hub-procs N starts the processes that serve the http-* workloads and
sse-10k (the hub) and pg-http-floor (the bare service) with GOMAXPROCS=N
in their environment, so that a hub running Go code on at most N
processors at once is measured against a bare service limited alike
(a SQLite hub also sizes its pool of readers by it, at least 4); their
results, and the --rounds summaries of them, carry "hub_procs". The
bench process and its clients are left as they are.

Each workload gets a fresh store: a new SQLite file in a temporary
directory, a new PostgreSQL schema (dropped afterwards), or memory.
sse-10k raises the open-files limit (RLIMIT_NOFILE) to its hard limit. For
diagnosis it passes MOITESSIER_BENCH_SERVE_ARGS to the hub (e.g. "--pprof
--addr 127.0.0.1:6060"), writes a CPU profile of its clients to the file
MOITESSIER_BENCH_CPUPROFILE names, and with MOITESSIER_BENCH_TIMELINE=1
prints the latency of every 25 dispatches in turn. The fan-out workloads
write a CPU profile of this process, where their hub runs, to the same file.

  moitessier bench --store sqlite fanout-100 scopes-10k
  moitessier bench --store sqlite --transport ws --publishers 8 http-fanout-100
  moitessier bench --store postgres://postgres@127.0.0.1:5432/test --json
  moitessier bench --store postgres://postgres@127.0.0.1:5432/test --rounds 5 scopes-10k`

var workloadNames = []string{"fanout-1", "fanout-100", "fanout-1000", "scopes-10k", "dispatch-8", "idle-10k", "sse-10k", "http-fanout-1", "http-fanout-100", "http-idle"}

// BenchResult is one workload's figures, as --json prints them.
type BenchResult struct {
	Workload  string  `json:"workload"`
	Store     string  `json:"store"`
	Transport string  `json:"transport,omitempty"`
	Listeners int     `json:"listeners"`
	Messages  int     `json:"messages"`
	MsgsPerS  float64 `json:"msgs_per_s"`
	P50ms     float64 `json:"p50_ms"`
	P99ms     float64 `json:"p99_ms"`

	Deliveries     int      `json:"deliveries"`
	DispatchesPerS float64  `json:"dispatches_per_s"`
	Seconds        float64  `json:"seconds"`
	QueriesPerS    *float64 `json:"queries_per_s,omitempty"`
	HeapPerLisnr   float64  `json:"heap_bytes_per_listener,omitempty"`
	// http-idle and sse-10k: the hub's RSS growth, from before the first
	// connection to when all of them wait, per connection.
	RSSPerConn float64 `json:"rss_bytes_per_conn,omitempty"`
	// http-idle: the hub's RSS growth per connection past a first share
	// of them, which leaves out what the hub sets up once as the first
	// come: what one more costs (see httpIdle).
	RSSPerAddedConn float64 `json:"rss_bytes_per_added_conn,omitempty"`

	// scopes-10k: the seconds its listeners took to be created, one
	// NewListener call after the other (CreateS), and the seconds as many
	// more took, created by workload.Arrivals goroutines at once
	// (CreateConcurrentS).
	CreateS           float64 `json:"create_s,omitempty"`
	CreateConcurrentS float64 `json:"create_concurrent_s,omitempty"`

	// The library workloads: this process's processor time (user and
	// system, from getrusage) per delivery, from the first dispatch to the
	// last delivery. Dispatchers, subscribers and the store's client are
	// all in it; a database server's own time is not.
	CPUPerDelivery float64 `json:"cpu_us_per_delivery,omitempty"`
	// fanout-*, dispatch-8 and scopes-10k: how long a Hub.Dispatch call
	// took, from the call to its return, at the 50th, 90th and 99th
	// percentiles (milliseconds): the dispatcher's side, where p50_ms and
	// p99_ms are the subscribers'.
	DispatchP50ms float64 `json:"dispatch_p50_ms,omitempty"`
	DispatchP90ms float64 `json:"dispatch_p90_ms,omitempty"`
	DispatchP99ms float64 `json:"dispatch_p99_ms,omitempty"`

	// The end-to-end workloads.
	Publishers int `json:"publishers,omitempty"`
	// HubProcs is --hub-procs, the serving process's GOMAXPROCS, when it
	// was set.
	HubProcs          int     `json:"hub_procs,omitempty"`
	HubCPUSeconds     float64 `json:"hub_cpu_s,omitempty"`
	HubCPUPerDelivery float64 `json:"hub_cpu_us_per_delivery,omitempty"`
	// Baseline is how pg-insert-notify or pg-append-floor was measured:
	// pgbench or pgx.
	Baseline      string  `json:"baseline,omitempty"`
	BaselinePerS  float64 `json:"baseline_per_s,omitempty"`
	BaselineRatio float64 `json:"baseline_ratio,omitempty"`
	// FloorPerS is pg-append-floor's rate in the same run, and FloorRatio
	// dispatches/s over it. (pg-append-floor's own BaselineRatio is its
	// rate over pg-insert-notify's.)
	FloorPerS  float64 `json:"floor_per_s,omitempty"`
	FloorRatio float64 `json:"floor_ratio,omitempty"`
	// HTTPFloorPerS is pg-http-floor's rate in the same run, and
	// HTTPFloorRatio an http-fanout-* workload's publishes/s over it.
	HTTPFloorPerS  float64 `json:"http_floor_per_s,omitempty"`
	HTTPFloorRatio float64 `json:"http_floor_ratio,omitempty"`
	// FanoutFloorPerS is pg-fanout-floor's rate in the same run, and
	// FanoutFloorRatio fanout-1000's dispatches/s over it.
	FanoutFloorPerS  float64 `json:"fanout_floor_per_s,omitempty"`
	FanoutFloorRatio float64 `json:"fanout_floor_ratio,omitempty"`
	// ScopesFloorPerS is pg-scopes-floor's rate in the same run, and
	// ScopesFloorRatio scopes-10k's dispatches/s over it.
	ScopesFloorPerS  float64 `json:"scopes_floor_per_s,omitempty"`
	ScopesFloorRatio float64 `json:"scopes_floor_ratio,omitempty"`

	// Round is the round the result is of, with --rounds above 1.
	Round int `json:"round,omitempty"`
}

// ratios sets res's baseline and floor ratios from its dispatches/s and the
// rates measured before it in this run, where there are.
func (c *benchConfig) ratios(res *BenchResult) {
	if c.baseline > 0 {
		res.BaselinePerS = c.baseline
		res.BaselineRatio = res.DispatchesPerS / c.baseline
	}
	if c.floor > 0 {
		res.FloorPerS = c.floor
		res.FloorRatio = res.DispatchesPerS / c.floor
	}
	if c.httpFloor > 0 && strings.HasPrefix(res.Workload, "http-fanout") {
		res.HTTPFloorPerS = c.httpFloor
		res.HTTPFloorRatio = res.DispatchesPerS / c.httpFloor
	}
	if c.fanoutFloor > 0 && res.Workload == "fanout-1000" {
		res.FanoutFloorPerS = c.fanoutFloor
		res.FanoutFloorRatio = res.DispatchesPerS / c.fanoutFloor
	}
	if c.scopesFloor > 0 && res.Workload == "scopes-10k" {
		res.ScopesFloorPerS = c.scopesFloor
		res.ScopesFloorRatio = res.DispatchesPerS / c.scopesFloor
	}
}

type benchConfig struct {
	store      string
	messages   int
	idle       time.Duration
	clients    int
	window     int
	transport  hubload.Transport
	publishers int
	// hubProcs is --hub-procs: GOMAXPROCS of the processes that serve
	// the http-* workloads, sse-10k and pg-http-floor, or 0.
	hubProcs  int
	baseTime  time.Duration
	baseline  float64 // pg-insert-notify's rate in this run, or 0
	floor     float64 // pg-append-floor's rate in this run, or 0
	httpFloor float64 // pg-http-floor's rate in this run, or 0
	// fanoutFloor is pg-fanout-floor's rate in this run, or 0.
	fanoutFloor float64
	// scopesFloor is pg-scopes-floor's rate in this run, or 0.
	scopesFloor float64
	rounds      int
	// runner runs one workload or baseline; nil: run. (Tests set it.)
	runner func(ctx context.Context, name string) (BenchResult, error)
	// childStarted, if not nil, is called with the pid of each serving
	// process startChild starts, once it has printed its address. (Tests
	// set it.)
	childStarted func(pid int)
	asJSON       bool
	quiet        bool
	progress     bool
	stderr       io.Writer
	tmp          string
	storeName    string
}

func runBench(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	c := &benchConfig{stderr: stderr}
	fs := newFlags("bench", "[flags] [WORKLOAD...]", benchDescription, stderr)
	fs.StringVar(&c.store, "store", env("MOITESSIER_BENCH_STORE", "sqlite"), `store to measure: sqlite, memory, a postgres:// URL or datastore://PROJECT[/DATABASE] (a fresh namespace per workload) (env MOITESSIER_BENCH_STORE)`)
	fs.IntVar(&c.messages, "messages", 0, "messages to dispatch in each workload (0: each workload's default)")
	fs.DurationVar(&c.idle, "idle", 10*time.Second, "how long idle-10k waits")
	fs.IntVar(&c.clients, "clients", 0, "clients of sse-10k (default 10 000) and http-idle (default 2 000)")
	fs.IntVar(&c.window, "window", 256, "most messages a dispatcher of the library workloads may be ahead of the slowest subscriber; 0: no limit")
	transport := fs.String("transport", "sse", "transport of the http-* workloads' subscribers: sse or ws")
	fs.IntVar(&c.publishers, "publishers", 1, "publishers of the http-fanout-* workloads (and of pg-http-floor)")
	fs.IntVar(&c.hubProcs, "hub-procs", 0, "GOMAXPROCS of the hub process of the http-* workloads and sse-10k, and of pg-http-floor's service (0: as this process's environment has it)")
	fs.DurationVar(&c.baseTime, "baseline-time", 5*time.Second, "how long each Postgres baseline (pg-insert-notify, pg-append-floor, pg-http-floor) runs")
	fs.IntVar(&c.rounds, "rounds", 1, "run the workloads, each round with its own Postgres baselines first, this many times in turn, and print each figure's median and range after the last")
	fs.BoolVar(&c.asJSON, "json", false, "print one JSON object per workload")
	fs.BoolVar(&c.quiet, "quiet", false, "no progress line on stderr")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	c.transport = hubload.Transport(*transport)
	if c.transport != hubload.SSE && c.transport != hubload.WebSocket {
		fmt.Fprintf(stderr, "--transport %q: want sse or ws\n", *transport)
		return errUsage
	}
	if c.publishers < 1 || c.rounds < 1 || c.window < 0 || c.clients < 0 || c.hubProcs < 0 {
		fmt.Fprintf(stderr, "--publishers and --rounds must be at least 1, --window, --clients and --hub-procs not negative\n")
		return errUsage
	}
	names := fs.Args()
	if len(names) == 0 || (len(names) == 1 && names[0] == "all") {
		names = workloadNames
	}
	for _, n := range names {
		if !slices.Contains(workloadNames, n) {
			fmt.Fprintf(stderr, "unknown workload %q; want one of %s\n", n, strings.Join(workloadNames, ", "))
			return errUsage
		}
	}
	switch {
	case c.store == "sqlite", c.store == "memory", isPostgres(c.store), isDatastore(c.store):
	default:
		fmt.Fprintf(stderr, "--store %q: want sqlite, memory, a postgres:// URL or datastore://PROJECT[/DATABASE]\n", redactDSN(c.store))
		return errUsage
	}
	c.storeName = c.store
	switch {
	case isPostgres(c.store):
		c.storeName = "postgres"
	case isDatastore(c.store):
		c.storeName = "datastore"
	}
	if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 && stderr == os.Stderr {
		c.progress = !c.quiet
	}
	tmp, err := os.MkdirTemp("", "moitessier-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	c.tmp = tmp
	if !c.asJSON {
		fmt.Fprintf(stdout, "%-16s %-9s %9s %9s %14s %10s %10s\n", "workload", "store", "listeners", "messages", "msgs/s", "p50 ms", "p99 ms")
	}
	if isPostgres(c.store) && slices.ContainsFunc(names, measuresDispatches) {
		first := []string{"pg-insert-notify", "pg-append-floor"}
		if slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, "http-fanout") }) {
			first = append(first, "pg-http-floor")
		}
		if slices.Contains(names, "fanout-1000") {
			first = append(first, "pg-fanout-floor")
		}
		if slices.Contains(names, "scopes-10k") {
			first = append(first, "pg-scopes-floor")
		}
		names = append(first, names...)
	}
	var all []BenchResult
	for round := 1; round <= c.rounds; round++ {
		results, err := c.runRound(ctx, names, round, stdout)
		if err != nil {
			return err
		}
		all = append(all, results...)
	}
	if c.rounds > 1 {
		sums, err := spreads(all)
		if err != nil {
			return err
		}
		return c.printSpreads(stdout, sums)
	}
	return nil
}

// runRound runs the workloads of names in order, with the baselines
// measured in this round and none of an earlier one's, and prints each
// result as it comes. round is 1 without --rounds, and then not printed.
func (c *benchConfig) runRound(ctx context.Context, names []string, round int, stdout io.Writer) ([]BenchResult, error) {
	c.baseline, c.floor, c.httpFloor, c.fanoutFloor, c.scopesFloor = 0, 0, 0, 0, 0
	if c.rounds > 1 && !c.asJSON {
		fmt.Fprintf(stdout, "round %d of %d\n", round, c.rounds)
	}
	run := c.run
	if c.runner != nil {
		run = c.runner
	}
	var results []BenchResult
	for _, name := range names {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		res, err := run(ctx, name)
		switch {
		case err != nil && strings.HasSuffix(name, "-floor") && ctx.Err() == nil:
			// A second opinion, not a workload: the workloads run
			// without it (and without its ratio).
			fmt.Fprintf(c.stderr, "%s: %v; going on without it\n", name, err)
			continue
		case err != nil:
			return nil, fmt.Errorf("%s: %w", name, err)
		case name == "pg-insert-notify":
			c.baseline = res.MsgsPerS
		case name == "pg-append-floor":
			c.floor = res.MsgsPerS
		case name == "pg-http-floor":
			c.httpFloor = res.MsgsPerS
		case name == "pg-fanout-floor":
			c.fanoutFloor = res.DispatchesPerS
		case name == "pg-scopes-floor":
			c.scopesFloor = res.DispatchesPerS
		}
		if c.rounds > 1 {
			res.Round = round
		}
		results = append(results, res)
		if c.asJSON {
			if err := json.NewEncoder(stdout).Encode(res); err != nil {
				return nil, err
			}
			continue
		}
		printResult(stdout, res)
	}
	return results, nil
}

// printResult prints res as a line of the table.
func printResult(stdout io.Writer, res BenchResult) {
	var extra []string
	switch {
	case res.QueriesPerS != nil:
		extra = append(extra, fmt.Sprintf("%.1f store queries/s idle, %.0f heap bytes/listener", *res.QueriesPerS, res.HeapPerLisnr))
	case res.Workload == "pg-insert-notify":
		extra = append(extra, "baseline: one client, INSERT+NOTIFY, by "+res.Baseline)
	case res.Workload == "pg-append-floor":
		extra = append(extra, "floor: one client, the store's least append, by "+res.Baseline)
	case res.Workload == "pg-http-floor":
		extra = append(extra, "floor: a bare Go HTTP service making the store's least append")
	case res.Workload == "pg-fanout-floor":
		extra = append(extra, fmt.Sprintf("floor: the store's least append in a pgx loop, %d goroutines woken together, %.0f dispatches/s", res.Listeners, res.DispatchesPerS))
	case res.Workload == "pg-scopes-floor":
		extra = append(extra, fmt.Sprintf("floor: the store's least append in a pgx loop to %d listeners in turn, each with a goroutine, %.0f dispatches/s", res.Listeners, res.DispatchesPerS))
	case res.Workload == "dispatch-8", strings.HasPrefix(res.Workload, "http-fanout"), res.BaselineRatio > 0:
		extra = append(extra, fmt.Sprintf("%.0f dispatches/s", res.DispatchesPerS))
	}
	if res.CreateS > 0 {
		extra = append(extra, fmt.Sprintf("creating the %d listeners: %.2f s one after the other, %.2f s from %d goroutines", res.Listeners, res.CreateS, res.CreateConcurrentS, workload.Arrivals))
	}
	if res.Transport != "" {
		extra = append(extra, "over "+res.Transport)
	}
	if res.Publishers > 1 {
		extra = append(extra, fmt.Sprintf("%d publishers", res.Publishers))
	}
	if res.HubProcs > 0 {
		extra = append(extra, fmt.Sprintf("serving process on GOMAXPROCS=%d", res.HubProcs))
	}
	for _, r := range []struct {
		ratio float64
		of    string
	}{
		{res.BaselineRatio, "baseline"}, {res.FloorRatio, "floor"}, {res.HTTPFloorRatio, "HTTP floor"},
		{res.FanoutFloorRatio, "fan-out floor"}, {res.ScopesFloorRatio, "scopes floor"},
	} {
		if r.ratio > 0 {
			extra = append(extra, fmt.Sprintf("%.2f× %s", r.ratio, r.of))
		}
	}
	if res.CPUPerDelivery > 0 {
		extra = append(extra, fmt.Sprintf("CPU %.2f µs/delivery", res.CPUPerDelivery))
	}
	if res.DispatchP50ms > 0 {
		extra = append(extra, fmt.Sprintf("Dispatch call p50/p90/p99 %.3f/%.3f/%.3f ms", res.DispatchP50ms, res.DispatchP90ms, res.DispatchP99ms))
	}
	switch {
	case res.HubCPUPerDelivery > 0 && res.Workload == "pg-http-floor":
		extra = append(extra, fmt.Sprintf("its CPU %.1f µs/request", res.HubCPUPerDelivery))
	case res.HubCPUPerDelivery > 0:
		extra = append(extra, fmt.Sprintf("hub CPU %.1f µs/delivery", res.HubCPUPerDelivery))
	}
	if res.RSSPerConn > 0 {
		extra = append(extra, fmt.Sprintf("hub RSS %.1f KiB/connection", res.RSSPerConn/1024))
	}
	if res.RSSPerAddedConn > 0 {
		extra = append(extra, fmt.Sprintf("%.1f KiB/connection past the first", res.RSSPerAddedConn/1024))
	}
	if res.Workload == "http-idle" {
		extra = append(extra, fmt.Sprintf("hub CPU %.2f s in %.0f s idle", res.HubCPUSeconds, res.Seconds))
	}
	fmt.Fprintf(stdout, "%-16s %-9s %9d %9d %14.0f %10.2f %10.2f  %s\n", res.Workload, res.Store, res.Listeners, res.Messages, res.MsgsPerS, res.P50ms, res.P99ms, strings.Join(extra, ", "))
}

// fanout1000Messages is how many messages fanout-1000, and pg-fanout-floor
// before it, send by default; scopes10kMessages how many scopes-10k and
// pg-scopes-floor do.
const (
	fanout1000Messages = 300
	scopes10kMessages  = 20_000
)

// scopes10kListeners is how many listeners scopes-10k, and pg-scopes-floor
// before it, write to.
const scopes10kListeners = 10_000

func (c *benchConfig) clientsOr(def int) int {
	if c.clients > 0 {
		return c.clients
	}
	return def
}

func (c *benchConfig) count(def int) int {
	if c.messages > 0 {
		return c.messages
	}
	return def
}

func (c *benchConfig) run(ctx context.Context, name string) (BenchResult, error) {
	switch name {
	case "fanout-1":
		return c.fanout(ctx, name, 1, 1, c.count(20_000))
	case "fanout-100":
		return c.fanout(ctx, name, 100, 1, c.count(2_000))
	case "fanout-1000":
		return c.fanout(ctx, name, 1000, 1, c.count(fanout1000Messages))
	case "dispatch-8":
		return c.fanout(ctx, name, 100, 8, c.count(2_000))
	case "scopes-10k":
		return c.scopes(ctx, name, scopes10kListeners, c.count(scopes10kMessages))
	case "idle-10k":
		return c.idleWorkload(ctx, name, 10_000)
	case "sse-10k":
		return c.sse(ctx, name, c.clientsOr(10_000), c.count(300))
	case "http-fanout-1":
		return c.httpFanout(ctx, name, 1, c.count(5_000))
	case "http-fanout-100":
		return c.httpFanout(ctx, name, 100, c.count(1_000))
	case "http-idle":
		return c.httpIdle(ctx, name, c.clientsOr(2_000))
	case "pg-insert-notify":
		return c.pgBaseline(ctx, c.baseTime)
	case "pg-append-floor":
		return c.pgFloor(ctx, c.baseTime)
	case "pg-http-floor":
		return c.pgHTTPFloor(ctx, c.baseTime)
	case "pg-fanout-floor":
		return c.pgFanoutFloor(ctx, fanoutFloorSubscribers, c.count(fanout1000Messages))
	case "pg-scopes-floor":
		return c.pgScopesFloor(ctx, scopes10kListeners, c.count(scopes10kMessages))
	}
	return BenchResult{}, fmt.Errorf("unknown workload")
}

// newStore opens a fresh store for one workload; cleanup releases it.
func (c *benchConfig) newStore(ctx context.Context, workload string) (st *openedStore, cleanup func(), err error) {
	switch {
	case c.store == "memory":
		st, err = openStore(ctx, "memory", "", false)
		return st, func() {}, err
	case c.store == "sqlite":
		dir, err := os.MkdirTemp(c.tmp, workload+"-")
		if err != nil {
			return nil, nil, err
		}
		st, err = openStore(ctx, filepath.Join(dir, "bench.db"), "", false)
		if err != nil {
			return nil, nil, err
		}
		return st, func() { st.Close(); os.RemoveAll(dir) }, nil
	}
	schema := "moitessier_bench_" + randomHex(6)
	st, err = openStore(ctx, c.store, schema, false)
	if err != nil {
		return nil, nil, err
	}
	if isDatastore(c.store) {
		// A fresh namespace (unless the spec names one); left in place.
		return st, func() { st.Close() }, nil
	}
	return st, func() {
		st.Close()
		dropSchema(c.store, schema)
	}, nil
}

func dropSchema(dsn, schema string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, plainDSN(dsn))
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	_, _ = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
}

// plainDSN is the postgres:// URL dsn without the parameters that only
// pgxpool and pgx read (pool_max_conns, statement_cache_capacity and the
// like). pgbench refuses them all, and a single pgx connection sends the
// pool's on to the server as settings, which the server refuses. The
// bench's own connections and pgbench connect with plainDSN, its stores
// with dsn.
func plainDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.RawQuery == "" {
		return dsn
	}
	q := u.Query()
	for k := range q {
		if strings.HasPrefix(k, "pool_") || slices.Contains(pgxOnlyParams, k) {
			q.Del(k)
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// pgxOnlyParams are the connection parameters pgx reads itself, besides
// pgxpool's pool_ ones.
var pgxOnlyParams = []string{"statement_cache_capacity", "description_cache_capacity", "default_query_exec_mode"}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

const msgBytes = hubload.TextBytes

// summarize computes a result from the recorders' latencies.
func summarize(res *BenchResult, start time.Time, end int64, lat []time.Duration, bad int64) error {
	if bad > 0 {
		return fmt.Errorf("%d deliveries out of order or repeated", bad)
	}
	slices.Sort(lat)
	wall := time.Unix(0, end).Sub(start).Seconds()
	if wall <= 0 {
		wall = 1e-9
	}
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[int(p*float64(len(lat)-1))]) / 1e6
	}
	res.Deliveries = len(lat)
	res.MsgsPerS = float64(len(lat)) / wall
	res.DispatchesPerS = float64(res.Messages) / wall
	res.P50ms, res.P99ms = pct(0.50), pct(0.99)
	res.Seconds = wall
	return nil
}

// settleHeap collects the garbage of a workload's setup and returns the
// memory it freed to the system, before the timed phase: as go test
// -bench collects before each benchmark, and further, so that the
// runtime's scavenger does not return those pages during the phase
// (scopes-10k's, after creating 20 000 listeners, say).
func settleHeap() { debug.FreeOSMemory() }

// profileCPU writes a CPU profile of this process to the file
// MOITESSIER_BENCH_CPUPROFILE names, if set, until stop is called.
func profileCPU() (stop func()) {
	f := os.Getenv("MOITESSIER_BENCH_CPUPROFILE")
	if f == "" {
		return func() {}
	}
	pf, err := os.Create(f)
	if err != nil {
		return func() {}
	}
	if pprof.StartCPUProfile(pf) != nil {
		pf.Close()
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); pf.Close() }
}

// progressLine prints a live rate line on stderr until stop is called;
// stop may be called more than once.
func (c *benchConfig) progressLine(name string, delivered func() int64, total int64) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		every := 5 * time.Second
		if c.progress {
			every = 200 * time.Millisecond
		}
		if c.quiet {
			<-done
			return
		}
		t := time.NewTicker(every)
		defer t.Stop()
		start := time.Now()
		var prev int64
		prevT := start
		for {
			select {
			case <-done:
				if c.progress {
					fmt.Fprintf(c.stderr, "\r\033[K")
				}
				return
			case now := <-t.C:
				n := delivered()
				rate := float64(n-prev) / now.Sub(prevT).Seconds()
				prev, prevT = n, now
				line := fmt.Sprintf("%s: %d/%d delivered, %.0f/s, %v", name, n, total, rate, now.Sub(start).Round(100*time.Millisecond))
				if c.progress {
					fmt.Fprintf(c.stderr, "\r\033[K%s", line)
				} else {
					fmt.Fprintln(c.stderr, line)
				}
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

// cpuSpan is the processor time this process used between a library
// workload's first dispatch and its last delivery.
type cpuSpan struct{ start, stop time.Duration }

// perDelivery returns the span's microseconds per delivery, or 0 if it was
// not measured.
func (s *cpuSpan) perDelivery(deliveries int) float64 {
	if s.start < 0 || s.stop <= s.start || deliveries == 0 {
		return 0
	}
	return float64(s.stop-s.start) / 1e3 / float64(deliveries)
}

// hooks are the library workloads' progress line, CPU profile and the
// processor time they used. The profile covers what the processor time
// does, from Start to Stop, not the workload's setup or its reckoning of
// the latencies after; the func returned stops it if Stop was not called.
func (c *benchConfig) hooks(name string) (workload.Hooks, *cpuSpan, func()) {
	stopProfile := func() {}
	span := &cpuSpan{start: -1}
	stop := func() {
		stopProfile()
		stopProfile = func() {}
	}
	h := workload.Hooks{
		Start: func() {
			settleHeap()
			stopProfile = profileCPU()
			span.start = processCPU()
		},
		Stop: func() {
			span.stop = processCPU()
			stop()
		},
		Progress: func(delivered func() int64, total int64) func() {
			return c.progressLine(name, delivered, total)
		},
	}
	return h, span, stop
}

// measuresDispatches reports whether workload name is compared, on
// Postgres, with the pg-insert-notify baseline measured before it: the
// workloads whose dispatchers send one dispatch at a time.
func measuresDispatches(name string) bool {
	return strings.HasPrefix(name, "http-fanout") || strings.HasPrefix(name, "fanout-") || name == "scopes-10k" || name == "dispatch-8"
}

// libraryResult fills res from a library workload's result, with its ratio
// to the baseline if one was measured in this run.
func (c *benchConfig) libraryResult(res *BenchResult, r workload.Result, cpu *cpuSpan) {
	res.Deliveries = r.Deliveries
	res.CPUPerDelivery = cpu.perDelivery(r.Deliveries)
	res.MsgsPerS = r.MsgsPerSecond()
	res.DispatchesPerS = r.PerSecond(res.Messages)
	res.P50ms, res.P99ms = r.Percentile(0.50), r.Percentile(0.99)
	res.DispatchP50ms, res.DispatchP90ms, res.DispatchP99ms = r.DispatchPercentile(0.50), r.DispatchPercentile(0.90), r.DispatchPercentile(0.99)
	res.Seconds = max(r.Wall.Seconds(), 1e-9)
	c.ratios(res)
}

// fanout runs fanout-N and dispatch-8 (see workload.Fanout).
func (c *benchConfig) fanout(ctx context.Context, name string, subs, dispatchers, n int) (BenchResult, error) {
	res := BenchResult{Workload: name, Store: c.storeName, Listeners: subs, Messages: n}
	st, cleanup, err := c.newStore(ctx, name)
	if err != nil {
		return res, err
	}
	defer cleanup()
	hooks, cpu, stop := c.hooks(name)
	defer stop()
	r, err := workload.Fanout(ctx, st.Store, subs, dispatchers, n, c.window, hooks)
	if err != nil {
		return res, err
	}
	c.libraryResult(&res, r, cpu)
	return res, nil
}

// scopes runs scopes-10k (see workload.Scopes).
func (c *benchConfig) scopes(ctx context.Context, name string, scopes, n int) (BenchResult, error) {
	res := BenchResult{Workload: name, Store: c.storeName, Listeners: scopes, Messages: n}
	st, cleanup, err := c.newStore(ctx, name)
	if err != nil {
		return res, err
	}
	defer cleanup()
	hooks, cpu, stop := c.hooks(name)
	defer stop()
	r, err := workload.Scopes(ctx, st.Store, scopes, n, c.window, hooks)
	if err != nil {
		return res, err
	}
	c.libraryResult(&res, r, cpu)
	res.CreateS, res.CreateConcurrentS = r.Create.Seconds(), r.CreateConcurrent.Seconds()
	return res, nil
}

// idleWorkload runs idle-10k (see workload.Idle).
func (c *benchConfig) idleWorkload(ctx context.Context, name string, n int) (BenchResult, error) {
	res := BenchResult{Workload: name, Store: c.storeName, Listeners: n}
	st, cleanup, err := c.newStore(ctx, name)
	if err != nil {
		return res, err
	}
	defer cleanup()
	hooks := workload.Hooks{Progress: func(calls func() int64, _ int64) func() {
		return c.progressLine(name+" (idle)", calls, 0)
	}}
	r, err := workload.Idle(ctx, st.Store, n, time.Second, c.idle, hooks)
	if err != nil {
		return res, err
	}
	res.QueriesPerS = &r.QueriesPerSecond
	res.HeapPerLisnr = r.HeapPerListener + r.StackPerListener
	res.Seconds = c.idle.Seconds()
	return res, nil
}
