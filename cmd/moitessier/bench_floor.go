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
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
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
// planned once per connection as the store's statements are, and answering 200; it has no subscribers,
// tokens, scopes or limits to check. The publishers send the requests the
// http-fanout-* publishers send, one at a time each, for d. Its
// hub_cpu_us_per_delivery is that process's CPU per request, its
// baseline_ratio its rate over pg-insert-notify's and its floor_ratio over
// pg-append-floor's.
func (c *benchConfig) pgHTTPFloor(ctx context.Context, d time.Duration) (BenchResult, error) {
	res := BenchResult{Workload: "pg-http-floor", Store: c.storeName, Listeners: 1, Publishers: c.publishers}
	fs, err := c.floorSchema(ctx)
	if err != nil {
		return res, err
	}
	env := append(os.Environ(), "MOITESSIER_STORE="+c.store, httpFloorStatement+"="+fs.statement("$1"))
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
	conn, err := pgx.Connect(ctx, c.store)
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
