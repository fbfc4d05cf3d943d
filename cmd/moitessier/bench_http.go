package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/internal/hubload"
	"github.com/likestripes/moitessier/internal/workload"
)

// postDispatch sends one dispatch to the hub over HTTP, its text carrying
// at, and waits for the answer.
func postDispatch(ctx context.Context, hc *http.Client, h *hubProc, scope string, at time.Time) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.base+"/v1/dispatch?scope="+scope, strings.NewReader(hubload.Text(at)))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+h.tok)
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s", resp.Status)
	}
	return nil
}

// cpuPerDelivery sets the hub's CPU per delivered message from two
// readings of its CPU time.
func (r *BenchResult) cpuPerDelivery(cpu0, cpu1 time.Duration) {
	if cpu0 < 0 || cpu1 < 0 || r.Deliveries == 0 {
		return
	}
	r.HubCPUSeconds = (cpu1 - cpu0).Seconds()
	r.HubCPUPerDelivery = float64(cpu1-cpu0) / 1e3 / float64(r.Deliveries)
}

// httpFanout runs http-fanout-1 and http-fanout-100: a hub process, clients
// subscribers over c.transport on one scope, and c.publishers publishers
// that each send one dispatch over HTTP at a time and wait for its answer
// (closed loop: no window; a hub that answers faster than it delivers
// shows as latency).
func (c *benchConfig) httpFanout(ctx context.Context, name string, clients, n int) (BenchResult, error) {
	res := BenchResult{Workload: name, Store: c.storeName, Transport: string(c.transport), Publishers: c.publishers, HubProcs: c.hubProcs, Listeners: clients, Messages: n}
	if _, err := raiseOpenFiles(); err != nil {
		return res, fmt.Errorf("raise the open-files limit: %w", err)
	}
	hub, err := c.startHub(ctx, name)
	if err != nil {
		return res, err
	}
	defer hub.stop()
	const scope = "bench.http"
	conns, err := c.connect(ctx, name, hub, c.transport, scope, clients, n)
	if err != nil {
		return res, err
	}
	defer closeAll(conns)
	var delivered atomic.Int64
	for _, cl := range conns {
		cl.Delivered = &delivered
		go cl.Run()
	}
	stopProgress := c.progressLine(name, delivered.Load, int64(clients*n))
	defer stopProgress()

	cpu0 := cpuOfPid(hub.pid)
	start := time.Now()
	if _, err := c.publish(ctx, hub, scope, func(p, k int) bool { return p+k*c.publishers < n }); err != nil {
		return res, err
	}
	if err := waitClients(ctx, conns, &delivered); err != nil {
		return res, err
	}
	cpu1 := cpuOfPid(hub.pid)
	stopProgress()
	end, lat, bad := gather(conns, clients*n)
	if err := summarize(&res, start, end, lat, bad); err != nil {
		return res, err
	}
	res.cpuPerDelivery(cpu0, cpu1)
	c.ratios(&res)
	return res, nil
}

// publish runs c.publishers publishers, each sending h one dispatch to scope
// at a time over a connection of its own, kept alive, and waiting for its
// answer, while more(p, k) says publisher p is to send its k-th; it returns
// how many were answered, or the first failure, which stops them all.
func (c *benchConfig) publish(ctx context.Context, h *hubProc, scope string, more func(p, k int) bool) (int, error) {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		sent int
		perr error
	)
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for p := range c.publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			defer hc.CloseIdleConnections()
			k := 0
			for ; more(p, k); k++ {
				if err := postDispatch(pctx, hc, h, scope, time.Now()); err != nil {
					mu.Lock()
					if perr == nil {
						perr = fmt.Errorf("publisher %d, dispatch %d: %w", p, k, err)
					}
					mu.Unlock()
					cancel()
					break
				}
			}
			mu.Lock()
			sent += k
			mu.Unlock()
		}()
	}
	wg.Wait()
	return sent, perr
}

// httpIdle runs http-idle: a hub process and conns idle subscribers over
// c.transport, each on its own scope; it reports the hub's resident memory
// per connection once every connection is listening, and the hub's CPU
// while they wait.
//
// The hub's RSS is read three times: before the first client, after a
// first share of them (warmShare) has connected on its own, and once all
// of them wait. RSSPerConn is the growth from the first reading to the
// last, per connection: it counts what the hub sets up once as the first
// connections come (the store's pool growing to its size, the runtime's
// first spans and stacks of each size). RSSPerAddedConn is the growth
// from the second reading to the last, per connection added after it:
// what one more idle connection costs. With fewer than two clients there
// is no first share, and the two are the same.
func (c *benchConfig) httpIdle(ctx context.Context, name string, conns int) (BenchResult, error) {
	res := BenchResult{Workload: name, Store: c.storeName, Transport: string(c.transport), HubProcs: c.hubProcs, Listeners: conns}
	limit, err := raiseOpenFiles()
	if err != nil {
		return res, fmt.Errorf("raise the open-files limit: %w", err)
	}
	if limit > 0 && limit < uint64(conns)+256 {
		return res, fmt.Errorf("the open-files limit (RLIMIT_NOFILE) is %d, too low for %d clients", limit, conns)
	}
	hub, err := c.startHub(ctx, name)
	if err != nil {
		return res, err
	}
	defer hub.stop()
	time.Sleep(200 * time.Millisecond) // let the hub settle before the first reading
	rss0 := rssOfPid(hub.pid)
	// One scope per connection, as idle-10k has one listener per scope.
	cls := make([]*hubload.Client, 0, conns)
	defer func() { closeAll(cls) }()
	// open connects clients from … to-1 in batches, on distinct scopes
	// (connect opens clients on one scope).
	open := func(from, to int) error {
		const batch = 256
		for i := from; i < to; i += batch {
			got, err := c.connectScopes(ctx, hub, i, min(batch, to-i))
			cls = append(cls, got...)
			if err != nil {
				return err
			}
		}
		return waitOpenOn(ctx, hub.base, c.transport, to)
	}
	warm := warmShare(conns)
	rssWarm := rss0
	if warm > 0 {
		if err := open(0, warm); err != nil {
			return res, err
		}
		time.Sleep(200 * time.Millisecond) // as before the first reading
		rssWarm = rssOfPid(hub.pid)
	}
	if err := open(warm, conns); err != nil {
		return res, err
	}
	cpu0 := cpuOfPid(hub.pid)
	select {
	case <-time.After(c.idle):
	case <-ctx.Done():
		return res, ctx.Err()
	}
	cpu1 := cpuOfPid(hub.pid)
	rss1 := rssOfPid(hub.pid)
	if rss0 > 0 && rss1 > rss0 {
		res.RSSPerConn = float64(rss1-rss0) / float64(conns)
	}
	if rssWarm > 0 && rss1 > rssWarm {
		res.RSSPerAddedConn = float64(rss1-rssWarm) / float64(conns-warm)
	}
	if cpu0 >= 0 && cpu1 >= 0 {
		res.HubCPUSeconds = (cpu1 - cpu0).Seconds()
	}
	res.Seconds = c.idle.Seconds()
	return res, nil
}

// warmShare is how many of http-idle's conns clients connect before its
// second reading: an eighth of them, but at least 512 (and at most half):
// in runs of 1 000 connections, an eighth left some of the hub's setup
// after that reading.
func warmShare(conns int) int {
	return max(conns/8, min(512, conns/2))
}

// connectScopes opens k idle clients on the scopes idle.first … idle.first+k-1.
func (c *benchConfig) connectScopes(ctx context.Context, h *hubProc, first, k int) ([]*hubload.Client, error) {
	out := make([]*hubload.Client, k)
	errs := make([]error, k)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for j := range k {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[j], errs[j] = hubload.Dial(ctx, c.transport, h.addr, h.tok, "idle."+strconv.Itoa(first+j), "c", 0)
		}()
	}
	wg.Wait()
	var kept []*hubload.Client
	var firstErr error
	for j := range out {
		if errs[j] != nil && firstErr == nil {
			firstErr = errs[j]
		}
		if out[j] != nil {
			kept = append(kept, out[j])
		}
	}
	if firstErr != nil {
		return kept, fmt.Errorf("client %d: %w", first, firstErr)
	}
	// Idle clients still answer the hub's pings (WebSocket) and read its
	// heartbeats (SSE): each reads until its connection closes.
	for _, cl := range kept {
		cl.Want = 1 << 62
		go cl.Run()
	}
	return kept, nil
}

// The baseline of the Postgres workloads: one client committing a raw
// single-row INSERT and a NOTIFY as one statement, one round trip, as fast
// as it can.
const baselineTable = "bench_raw"

var pgbenchTPS = regexp.MustCompile(`tps = ([0-9.]+)`)

// pgBaseline measures the baseline for d on a fresh schema: with pgbench if
// it is installed, else with the same statement in a loop on one pgx
// connection (simple protocol, as pgbench sends it).
func (c *benchConfig) pgBaseline(ctx context.Context, d time.Duration) (BenchResult, error) {
	res := BenchResult{Workload: "pg-insert-notify", Store: c.storeName, Listeners: 0}
	schema := "moitessier_bench_" + randomHex(6)
	defer dropSchema(c.store, schema)
	conn, err := pgx.Connect(ctx, plainDSN(c.store))
	if err != nil {
		return res, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	table := pgx.Identifier{schema, baselineTable}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()+"; CREATE TABLE "+table+
		" (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL, created TIMESTAMPTZ NOT NULL DEFAULT now())"); err != nil {
		return res, err
	}
	stmt := "INSERT INTO " + table + " (body) VALUES ('" + strings.Repeat(".", msgBytes) + "'); NOTIFY " + pgx.Identifier{schema}.Sanitize()
	return c.pgRate(ctx, res, conn, stmt, false, d)
}

// pgFloor measures pg-append-floor for d: the baseline's INSERT and NOTIFY
// made the write that every dispatch to one listener needs, whatever the
// client. One client commits, as one prepared statement, one round trip,
// what the store's append does at the least: raise the listener's head
// under its row lock, insert the message, numbered by it, into the
// store's own messages table (with its indexes), and notify, on a schema
// the store migrated, with one listener made through the hub. No
// Moitessier code runs while it is measured. (Prepared, as the store
// sends its statements: sent as text, the server would plan it anew at
// every call, which costs more than the raw INSERT's plan. The baseline's
// two statements in one query cannot be prepared.) One dispatcher that
// waits for each commit, as a library workload's does, can hardly pass
// this rate: floor_ratio (dispatches/s over it) tells how much of what
// the server allows the client side leaves unused, and pg-append-floor's
// own baseline_ratio how much of the raw INSERT's rate the store's write
// leaves.
func (c *benchConfig) pgFloor(ctx context.Context, d time.Duration) (BenchResult, error) {
	res := BenchResult{Workload: "pg-append-floor", Store: c.storeName, Listeners: 1}
	fs, conn, done, err := c.floorConn(ctx)
	if err != nil {
		return res, err
	}
	defer done()
	res, err = c.pgRate(ctx, res, conn, fs.statement("'"+strings.Repeat(".", msgBytes)+"'"), true, d)
	if err != nil {
		return res, err
	}
	if err := fs.check(ctx, conn); err != nil {
		return res, err
	}
	if c.baseline > 0 {
		res.BaselinePerS = c.baseline
		res.BaselineRatio = res.MsgsPerS / c.baseline
	}
	return res, nil
}

// floorSchema is a schema the store migrated, with one listener made
// through a hub, for the floors' statement.
type floorSchema struct {
	schema, id string
	drop       func()
}

// floorConn makes a floorSchema and a connection to its server; done
// closes the connection and drops the schema.
func (c *benchConfig) floorConn(ctx context.Context) (fs *floorSchema, conn *pgx.Conn, done func(), err error) {
	if fs, err = c.floorSchema(ctx); err != nil {
		return nil, nil, nil, err
	}
	if conn, err = pgx.Connect(ctx, plainDSN(c.store)); err != nil {
		fs.drop()
		return nil, nil, nil, err
	}
	return fs, conn, func() { conn.Close(context.WithoutCancel(ctx)); fs.drop() }, nil
}

// genericFloorConn is floorConn with the connection planning its
// prepared statements generically, as the store's connections do.
func (c *benchConfig) genericFloorConn(ctx context.Context) (fs *floorSchema, conn *pgx.Conn, done func(), err error) {
	if fs, conn, done, err = c.floorConn(ctx); err != nil {
		return nil, nil, nil, err
	}
	if _, err := conn.Exec(ctx, "SET plan_cache_mode = force_generic_plan"); err != nil {
		done()
		return nil, nil, nil, err
	}
	return fs, conn, done, nil
}

// floorSchema makes a floorSchema on the Postgres server of c.store.
func (c *benchConfig) floorSchema(ctx context.Context) (*floorSchema, error) {
	fs := &floorSchema{schema: "moitessier_bench_" + randomHex(6)}
	fs.drop = func() { dropSchema(c.store, fs.schema) }
	id, err := c.floorListener(ctx, fs.schema)
	if err != nil {
		fs.drop()
		return nil, err
	}
	fs.id = id
	return fs, nil
}

// floorListener migrates schema and makes its listener through a hub,
// whose store it closes before it returns.
func (c *benchConfig) floorListener(ctx context.Context, schema string) (string, error) {
	st, err := openStore(ctx, c.store, schema, false)
	if err != nil {
		return "", err
	}
	defer st.Close()
	hub, err := moitessier.New(st, moitessier.Options{GCInterval: -1})
	if err != nil {
		return "", err
	}
	l, err := hub.NewListener(ctx, moitessier.Conditions{Person: workload.Person, Type: moitessier.Shared, Scope: "bench.floor"})
	if err != nil {
		hub.Close()
		return "", err
	}
	// The listener and its subscriber stay: the hub's sweep is off, and
	// closing the hub leaves its subscribers' rows.
	return l.ID(), hub.Close()
}

// statement is the floors' write to the listener, its text body (an SQL
// expression: a literal, or a parameter such as $1).
func (fs *floorSchema) statement(body string) string {
	return fs.statementFor(sqlString(fs.id), "'bench.floor'", body)
}

// statementFor is statement to the listener id in scope, each an SQL
// expression as body is.
func (fs *floorSchema) statementFor(id, scope, body string) string {
	s := pgx.Identifier{fs.schema}.Sanitize()
	return "WITH up AS (UPDATE " + s + ".listeners SET head = head + 1 WHERE id = " + id +
		" RETURNING id, head), ins AS (INSERT INTO " + s + ".messages (listener, seq, dispatch, scope, sender, body, created_ns)" +
		" SELECT id, head, " + sqlString(randomHex(13)) + ", " + scope + ", " + sqlString(workload.Person) + ", " + body +
		", (extract(epoch FROM clock_timestamp()) * 1e9)::bigint FROM up) SELECT pg_notify(" + sqlString(fs.schema) + ", '') FROM up"
}

// copies makes n-1 more listeners from the schema's one, each of its own
// scope, and returns the n ids and scopes, its one first.
func (fs *floorSchema) copies(ctx context.Context, conn *pgx.Conn, n int) (ids, scopes []string, err error) {
	if _, err := conn.Exec(ctx, "INSERT INTO "+pgx.Identifier{fs.schema, "listeners"}.Sanitize()+
		" (id, type, person, client, scopes, created_ns) SELECT id || '-' || g, type, person, client, ARRAY['bench.floor.' || g], created_ns"+
		" FROM "+pgx.Identifier{fs.schema, "listeners"}.Sanitize()+", generate_series(1, $2::int - 1) g WHERE id = $1", fs.id, n); err != nil {
		return nil, nil, err
	}
	ids, scopes = []string{fs.id}, []string{"bench.floor"}
	for g := 1; g < n; g++ {
		ids, scopes = append(ids, fs.id+"-"+strconv.Itoa(g)), append(scopes, "bench.floor."+strconv.Itoa(g))
	}
	return ids, scopes, nil
}

// check fails unless the statement wrote a message.
func (fs *floorSchema) check(ctx context.Context, conn *pgx.Conn) error {
	var head int64
	if err := conn.QueryRow(ctx, "SELECT head FROM "+pgx.Identifier{fs.schema, "listeners"}.Sanitize()+" WHERE id = $1", fs.id).Scan(&head); err != nil {
		return err
	}
	if head == 0 {
		return fmt.Errorf("the statement wrote no message")
	}
	return nil
}

// sqlString quotes v as an SQL string literal.
func sqlString(v string) string {
	return "'" + strings.ReplaceAll(v, "'", "''") + "'"
}

// pgRate commits stmt, statements separated by "; " and sent as one query
// (one round trip, one transaction), from one client for d, and sets
// res's rate: with pgbench if it is installed, else in a loop on conn.
// A prepared stmt is one statement, parsed and planned once (pgbench -M
// prepared); otherwise it goes as text every time (the simple protocol).
func (c *benchConfig) pgRate(ctx context.Context, res BenchResult, conn *pgx.Conn, stmt string, prepared bool, d time.Duration) (BenchResult, error) {
	if path, err := exec.LookPath("pgbench"); err == nil {
		script := filepath.Join(c.tmp, res.Workload+".sql")
		// "\;" makes pgbench send them as one query, one transaction.
		if err := os.WriteFile(script, []byte(strings.ReplaceAll(stmt, "; ", " \\; ")+"\n"), 0o600); err != nil {
			return res, err
		}
		secs := max(1, int(d.Seconds()))
		args := []string{"-n", "-c", "1", "-T", strconv.Itoa(secs), "-f", script}
		if prepared {
			args = append(args, "-M", "prepared")
		}
		out, err := exec.CommandContext(ctx, path, append(args, plainDSN(c.store))...).CombinedOutput()
		if m := pgbenchTPS.FindSubmatch(out); err == nil && m != nil {
			res.MsgsPerS, _ = strconv.ParseFloat(string(m[1]), 64)
			res.Baseline = "pgbench"
			res.Seconds = float64(secs)
			return res, nil
		}
		fmt.Fprintf(c.stderr, "pgbench failed (%v), measuring %s with pgx instead: %s\n", err, res.Workload, strings.TrimSpace(string(out)))
	}
	if prepared {
		// Exec runs a statement prepared under the name it is given.
		if _, err := conn.Prepare(ctx, res.Workload, stmt); err != nil {
			return res, err
		}
		stmt = res.Workload
	}
	n := 0
	start := time.Now()
	for time.Since(start) < d {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return res, err
		}
		n++
	}
	res.Seconds = time.Since(start).Seconds()
	res.MsgsPerS = float64(n) / res.Seconds
	res.Messages = n
	res.Baseline = "pgx"
	return res, nil
}
