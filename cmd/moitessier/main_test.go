package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/internal/gcpemu"
	"github.com/likestripes/moitessier/moitessierhttp"
)

// TestMain lets the test binary act as the moitessier command when
// MOITESSIER_TEST_MAIN=1, so that bench can start "moitessier serve" as a
// child process from a test.
func TestMain(m *testing.M) {
	if os.Getenv("MOITESSIER_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	code := m.Run()
	gcpemu.Stop() // the emulators TestServeDatastore started, if any
	os.Exit(code)
}

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	tb.Cleanup(cancel)
	return ctx
}

// runCmd runs a command line and returns its output.
func runCmd(ctx context.Context, tb testing.TB, stdin string, args ...string) (string, string, error) {
	tb.Helper()
	var out, errb bytes.Buffer
	err := run(ctx, args, strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), err
}

// hub is "moitessier serve" running in the test, on a loopback port.
type hub struct {
	url    string
	stop   context.CancelFunc
	done   chan error
	stdout *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startServe runs serve with args (plus --addr on a free port) until the
// test ends or stop is called.
func startServe(tb testing.TB, args ...string) *hub {
	tb.Helper()
	return startServeLogged(tb, io.Discard, args...)
}

// startServeLogged is startServe with serve's logs written to logs.
func startServeLogged(tb testing.TB, logs io.Writer, args ...string) *hub {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	h := &hub{url: "http://" + addr, stop: cancel, done: make(chan error, 1), stdout: &syncBuffer{}}
	go func() {
		h.done <- run(ctx, append([]string{"serve", "--addr", addr, "--log-level", "warn"}, args...), strings.NewReader(""), h.stdout, logs)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(h.stdout.String(), "serving on") {
		select {
		case err := <-h.done:
			tb.Fatalf("serve: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatal("serve did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	tb.Cleanup(func() {
		cancel()
		select {
		case <-h.done:
		case <-time.After(20 * time.Second):
			tb.Error("serve did not stop")
		}
	})
	return h
}

func (h *hub) shutdown(tb testing.TB) {
	tb.Helper()
	h.stop()
	select {
	case err := <-h.done:
		if err != nil {
			tb.Fatalf("serve returned %v", err)
		}
		h.done <- nil // for Cleanup
	case <-time.After(20 * time.Second):
		tb.Fatal("serve did not stop")
	}
}

func get(tb testing.TB, url string) (int, string) {
	tb.Helper()
	resp, err := http.Get(url)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHelp(t *testing.T) {
	for _, c := range commands {
		t.Run(c.name, func(t *testing.T) {
			out, _, err := runCmd(ctxT(t), t, "", c.name, "--help")
			if !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("err %v, want flag.ErrHelp", err)
			}
			if !strings.HasPrefix(out, "Usage: moitessier "+c.name) || !strings.Contains(out, "Flags:") {
				t.Fatalf("help:\n%s", out)
			}
		})
	}
	out, _, err := runCmd(ctxT(t), t, "", "--help")
	if err != nil || !strings.Contains(out, "Commands:") {
		t.Fatalf("top help: %v\n%s", err, out)
	}
	if _, _, err := runCmd(ctxT(t), t, "", "frobnicate"); !errors.Is(err, errUsage) {
		t.Fatalf("unknown command: %v", err)
	}
	if _, _, err := runCmd(ctxT(t), t, "", "serve", "--no-such-flag"); !errors.Is(err, errUsage) {
		t.Fatalf("unknown flag: %v", err)
	}
}

// TestServe runs the hub on SQLite and uses it the way the README does:
// dispatch and listen from the CLI, curl-like HTTP, health, metrics, the
// demo page, and a graceful shutdown with a clean close of the streams.
func TestServe(t *testing.T) {
	dir := t.TempDir()
	h := startServe(t, "--store", filepath.Join(dir, "hub.db"))
	ctx := ctxT(t)
	if !strings.Contains(h.stdout.String(), "development mode") {
		t.Fatalf("no development-mode notice:\n%s", h.stdout)
	}

	t.Run("DispatchAndListen", func(t *testing.T) {
		out, _, err := runCmd(ctx, t, "", "dispatch", "--hub", h.url, "--as", "alice", "room.1", "before", "anyone")
		if err != nil || !strings.Contains(out, "0 listeners reached") {
			t.Fatalf("dispatch: %v\n%s", err, out)
		}
		listened := make(chan string, 1)
		go func() {
			out, errOut, err := runCmd(ctx, t, "", "listen", "--hub", h.url, "--as", "bob", "--json", "-n", "3", "room.1")
			if err != nil {
				out = fmt.Sprintf("error %v: %s", err, errOut)
			}
			listened <- out
		}()
		waitMetric(t, h.url, `moitessier_open_connections{transport="sse"} 1`)
		if out, _, err := runCmd(ctx, t, "", "dispatch", "--hub", h.url, "--as", "alice", "room.1", "hello", "bob"); err != nil {
			t.Fatalf("dispatch: %v\n%s", err, out)
		}
		if out, _, err := runCmd(ctx, t, "line two\nline three\n", "dispatch", "--hub", h.url, "--as", "alice", "room.1"); err != nil {
			t.Fatalf("dispatch from stdin: %v\n%s", err, out)
		}
		out = <-listened
		var texts []string
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			var m moitessierhttp.Message
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("listen output %q: %v", out, err)
			}
			texts = append(texts, m.Text)
		}
		if got, want := strings.Join(texts, "|"), "hello bob|line two|line three"; got != want {
			t.Fatalf("listen got %q, want %q", got, want)
		}
	})

	t.Run("Health", func(t *testing.T) {
		code, body := get(t, h.url+"/healthz")
		if code != 200 || !strings.Contains(body, `"status":"ok"`) || !strings.Contains(body, `"store":"sqlite"`) {
			t.Fatalf("%d %s", code, body)
		}
	})

	t.Run("Metrics", func(t *testing.T) {
		wants := []string{
			`moitessier_dispatches_total{result="stored"} 4`,
			`moitessier_deliveries_total{transport="sse"} 3`,
			"moitessier_open_connections{transport=\"sse\"}",
			"# TYPE moitessier_delivery_latency_seconds histogram",
			`moitessier_delivery_latency_seconds_bucket{le="+Inf"} 3`,
			"moitessier_delivery_latency_seconds_count 3",
			"go_goroutines ",
		}
		// A stream counts a delivery once its write returns, which can be
		// just after the client has read the message: look again for a
		// while before calling a count missing.
		deadline := time.Now().Add(5 * time.Second)
		for {
			code, body := get(t, h.url+"/metrics")
			missing := ""
			for _, want := range wants {
				if code != 200 || !strings.Contains(body, want) {
					missing = want
					break
				}
			}
			if missing == "" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("metrics lack %q:\n%s", missing, body)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})

	t.Run("DemoPage", func(t *testing.T) {
		code, body := get(t, h.url+"/")
		if code != 200 || !strings.Contains(body, "<title>Moitessier") {
			t.Fatalf("%d %s", code, body)
		}
	})

	t.Run("Unauthenticated", func(t *testing.T) {
		code, body := get(t, h.url+"/v1/events?scope=room.1")
		if code != 401 || !strings.Contains(body, `"code":"unauthenticated"`) {
			t.Fatalf("%d %s", code, body)
		}
	})

	t.Run("ListenStart", func(t *testing.T) {
		// New to the room, carol asks for its history.
		out, errOut, err := runCmd(ctx, t, "", "listen", "--hub", h.url, "--as", "carol", "--start", "oldest", "-n", "3", "room.1")
		if err != nil {
			t.Fatalf("listen --start oldest: %v %s", err, errOut)
		}
		for _, want := range []string{"hello bob", "line two", "line three"} {
			if !strings.Contains(out, want) {
				t.Fatalf("listen --start oldest: %q, want the room's three messages", out)
			}
		}
	})

	t.Run("GCLocked", func(t *testing.T) {
		_, _, err := runCmd(ctx, t, "", "gc", "--store", filepath.Join(dir, "hub.db"))
		if err == nil || !strings.Contains(err.Error(), "running hub") {
			t.Fatalf("gc while serving: %v", err)
		}
	})

	t.Run("Shutdown", func(t *testing.T) {
		tok, err := fetchDevToken(ctx, h.url, "carol")
		if err != nil {
			t.Fatal(err)
		}
		c := &moitessierhttp.Client{BaseURL: h.url, Token: tok.Token}
		st, err := c.Events(ctx, moitessierhttp.Query{Scopes: []string{"room.2"}}, "")
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if ev, err := st.Next(); err != nil || ev.Type != "ready" {
			t.Fatalf("%v %v", ev, err)
		}
		h.shutdown(t)
		ev, err := st.Next()
		if err != nil || ev.Type != "close" || !strings.Contains(string(ev.Data), "shutting_down") {
			t.Fatalf("event %q %s, %v; want close shutting_down", ev.Type, ev.Data, err)
		}
	})
}

func waitMetric(tb testing.TB, url, line string) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, body := get(tb, url+"/metrics"); strings.Contains(body, line) {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("metrics never showed %q", line)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRestart checks the server-held cursor across a hub restart on the
// same SQLite file: a listener that comes back without a Last-Event-ID gets
// what was dispatched while it was away, and nothing it had seen.
func TestRestart(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "hub.db")
	secret := "restart-secret-restart-secret-12"
	ctx := ctxT(t)
	tok, err := moitessierhttp.Sign([]byte(secret), moitessierhttp.Claims{Subject: "bob", Listen: []string{">"}, Dispatch: []string{">"}, ExpiresAt: time.Now().Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	listen := func(h *hub, n string) string {
		out, errOut, err := runCmd(ctx, t, "", "listen", "--hub", h.url, "--token", tok, "--client", "phone", "-n", n, "room.r")
		if err != nil {
			t.Fatalf("listen: %v %s", err, errOut)
		}
		return out
	}
	dispatch := func(h *hub, text string) {
		if out, _, err := runCmd(ctx, t, "", "dispatch", "--hub", h.url, "--token", tok, "room.r", text); err != nil {
			t.Fatalf("dispatch: %v %s", err, out)
		}
	}
	h1 := startServe(t, "--store", db, "--secret", secret)
	// Subscribe (the hub keeps bob's phone's cursor from here), then dispatch.
	if _, err := (&moitessierhttp.Client{BaseURL: h1.url, Token: tok}).Join(ctx, moitessierhttp.Query{Scopes: []string{"room.r"}, Client: "phone"}); err != nil {
		t.Fatal(err)
	}
	dispatch(h1, "seen")
	if out := listen(h1, "1"); !strings.Contains(out, "seen") {
		t.Fatalf("first listen: %q", out)
	}
	// The hub counts a message written to a stream as acknowledged; wait
	// until it has seen the listener leave, or it may write the next one
	// to the closed connection (see the moitessierhttp package docs).
	if err := waitOpen(ctx, h1.url, 0); err != nil {
		t.Fatal(err)
	}
	dispatch(h1, "missed while away")
	h1.shutdown(t)

	h2 := startServe(t, "--store", db, "--secret", secret)
	out := listen(h2, "1")
	if !strings.Contains(out, "missed while away") || strings.Contains(out, "seen") {
		t.Fatalf("after restart: %q", out)
	}
}

func TestToken(t *testing.T) {
	ctx := ctxT(t)
	out, _, err := runCmd(ctx, t, "", "token", "--secret", tokenSecret, "--sub", "alice", "--listen", "room.>,user.alice.>", "--dispatch", "room.>", "--ttl", "1h")
	if err != nil {
		t.Fatal(err)
	}
	c, err := moitessierhttp.Verify([]byte(tokenSecret), strings.TrimSpace(out), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != "alice" || len(c.Listen) != 2 || c.Dispatch[0] != "room.>" || c.ExpiresAt > time.Now().Add(time.Hour+time.Minute).Unix() {
		t.Fatalf("%+v", c)
	}
	// Without a secret, from a development hub.
	h := startServe(t, "--store", "memory")
	out, _, err = runCmd(ctx, t, "", "token", "--secret", "", "--hub", h.url, "--sub", "dave", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var dt DevToken
	if err := json.Unmarshal([]byte(out), &dt); err != nil || dt.Sub != "dave" || dt.Token == "" {
		t.Fatalf("%v %q", err, out)
	}
}

func TestGC(t *testing.T) {
	out, _, err := runCmd(ctxT(t), t, "", "gc", "--store", filepath.Join(t.TempDir(), "gc.db"), "--json")
	if err != nil {
		t.Fatal(err)
	}
	var res map[string]any
	if err := json.Unmarshal([]byte(out), &res); err != nil || res["store"] != "sqlite" {
		t.Fatalf("%v %q", err, out)
	}
}

func TestBench(t *testing.T) {
	t.Setenv("MOITESSIER_TEST_MAIN", "1") // the sse-10k hub is this binary
	out, errOut, err := runCmd(ctxT(t), t, "", "bench", "--store", "sqlite", "--messages", "50", "--idle", "200ms", "--clients", "20", "--json",
		"fanout-1", "fanout-100", "dispatch-8", "sse-10k")
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 {
		t.Fatalf("want 4 results:\n%s", out)
	}
	for _, line := range lines {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"workload", "store", "listeners", "messages", "msgs_per_s", "p50_ms", "p99_ms"} {
			if _, ok := r[k]; !ok {
				t.Fatalf("result lacks %q: %s", k, line)
			}
		}
		if r["store"] != "sqlite" {
			t.Fatalf("%s", line)
		}
		if r["workload"] != "idle-10k" && (r["msgs_per_s"].(float64) <= 0 || r["deliveries"].(float64) != r["messages"].(float64)*r["listeners"].(float64)) {
			t.Fatalf("deliveries do not add up: %s", line)
		}
		// The library workloads report this process's CPU per delivery
		// where getrusage can tell it.
		if cpu, ok := r["cpu_us_per_delivery"].(float64); strings.HasPrefix(r["workload"].(string), "fanout-") && runtime.GOOS == "linux" && (!ok || cpu <= 0) {
			t.Fatalf("no CPU per delivery: %s", line)
		}
		// And how long their Dispatch calls took, in order of percentile.
		if w := r["workload"].(string); strings.HasPrefix(w, "fanout-") || w == "dispatch-8" {
			p50, _ := r["dispatch_p50_ms"].(float64)
			p90, _ := r["dispatch_p90_ms"].(float64)
			p99, _ := r["dispatch_p99_ms"].(float64)
			if p50 <= 0 || p90 < p50 || p99 < p90 {
				t.Fatalf("Dispatch call percentiles: %s", line)
			}
		}
	}
	out, _, err = runCmd(ctxT(t), t, "", "bench", "--store", "memory", "--messages", "20", "--idle", "200ms", "fanout-1", "idle-10k", "scopes-10k")
	if err != nil || !strings.Contains(out, "msgs/s") || !strings.Contains(out, "fanout-1") || !strings.Contains(out, "store queries/s idle") ||
		!strings.Contains(out, "creating the 10000 listeners: ") || !strings.Contains(out, " s from 64 goroutines") {
		t.Fatalf("table: %v\n%s", err, out)
	}
	out, _, err = runCmd(ctxT(t), t, "", "bench", "--store", "memory", "--messages", "20", "--json", "scopes-10k")
	var r BenchResult
	if err != nil || json.Unmarshal([]byte(out), &r) != nil || r.CreateS <= 0 || r.CreateConcurrentS <= 0 || r.DispatchP50ms <= 0 {
		t.Fatalf("scopes-10k: %v\n%s", err, out)
	}
}

// postgresDSN returns the PostgreSQL of MOITESSIER_POSTGRES_DSN (default
// the local test database) after opening it once; the test is skipped when
// it is unreachable, or fails when MOITESSIER_REQUIRE_POSTGRES=1.
func postgresDSN(t *testing.T) string {
	t.Helper()
	dsn := env("MOITESSIER_POSTGRES_DSN", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	probe, cancel := context.WithTimeout(ctxT(t), 3*time.Second)
	defer cancel()
	st, err := openStore(probe, dsn, "moitessier_cmd_probe", false)
	if err != nil {
		if os.Getenv("MOITESSIER_REQUIRE_POSTGRES") == "1" {
			t.Fatalf("PostgreSQL required but unreachable at MOITESSIER_POSTGRES_DSN: %v", err)
		}
		t.Skipf("PostgreSQL unreachable; set MOITESSIER_POSTGRES_DSN to run this test: %v", err)
	}
	st.Close()
	dropSchema(dsn, "moitessier_cmd_probe")
	return dsn
}

// TestServePostgres runs the hub on PostgreSQL when one is reachable
// (MOITESSIER_POSTGRES_DSN, default the local test database).
func TestServePostgres(t *testing.T) {
	dsn := postgresDSN(t)
	ctx := ctxT(t)
	schema := "moitessier_cmd_" + randomHex(4)
	t.Cleanup(func() { dropSchema(dsn, schema) })
	h := startServe(t, "--store", dsn, "--schema", schema)
	if !strings.Contains(h.stdout.String(), "store: postgres") {
		t.Fatalf("%s", h.stdout)
	}
	listened := make(chan string, 1)
	go func() {
		out, errOut, err := runCmd(ctx, t, "", "listen", "--hub", h.url, "--as", "bob", "-n", "1", "room.pg")
		if err != nil {
			out = fmt.Sprintf("error %v: %s", err, errOut)
		}
		listened <- out
	}()
	waitMetric(t, h.url, `moitessier_open_connections{transport="sse"} 1`)
	if out, _, err := runCmd(ctx, t, "", "dispatch", "--hub", h.url, "--as", "alice", "room.pg", "via postgres"); err != nil {
		t.Fatalf("dispatch: %v %s", err, out)
	}
	if out := <-listened; !strings.Contains(out, "alice: via postgres") {
		t.Fatalf("listen: %q", out)
	}
	if code, body := get(t, h.url+"/healthz"); code != 200 || !strings.Contains(body, `"store":"postgres"`) {
		t.Fatalf("%d %s", code, body)
	}
}

// TestBenchHTTP runs each end-to-end workload briefly, over both
// transports, and checks that every delivery was counted.
func TestBenchHTTP(t *testing.T) {
	t.Setenv("MOITESSIER_TEST_MAIN", "1") // the hub process is this binary
	for _, tr := range []string{"sse", "ws"} {
		out, errOut, err := runCmd(ctxT(t), t, "", "bench", "--store", "sqlite", "--transport", tr, "--publishers", "3", "--messages", "40",
			"--clients", "30", "--idle", "100ms", "--json", "http-fanout-1", "http-fanout-100", "http-idle")
		if err != nil {
			t.Fatalf("%s: %v\n%s", tr, err, errOut)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 3 {
			t.Fatalf("want 3 results:\n%s", out)
		}
		for _, line := range lines {
			var r BenchResult
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Fatal(err)
			}
			if r.Store != "sqlite" || r.Transport != tr {
				t.Fatalf("store or transport: %s", line)
			}
			switch r.Workload {
			case "http-idle":
				if r.Listeners != 30 || r.Deliveries != 0 {
					t.Fatalf("idle: %s", line)
				}
			case "http-fanout-1", "http-fanout-100":
				want := 1
				if r.Workload == "http-fanout-100" {
					want = 100
				}
				if r.Listeners != want || r.Messages != 40 || r.Deliveries != 40*want || r.Publishers != 3 || r.MsgsPerS <= 0 || r.DispatchesPerS <= 0 || r.P99ms <= 0 {
					t.Fatalf("deliveries do not add up: %s", line)
				}
			default:
				t.Fatalf("workload: %s", line)
			}
		}
	}
	if _, errOut, err := runCmd(ctxT(t), t, "", "bench", "--transport", "poll", "http-idle"); !errors.Is(err, errUsage) || !strings.Contains(errOut, "want sse or ws") {
		t.Fatalf("--transport poll: %v %s", err, errOut)
	}
}

// TestBenchWindow runs a library workload with no in-flight window.
func TestBenchWindow(t *testing.T) {
	out, errOut, err := runCmd(ctxT(t), t, "", "bench", "--store", "memory", "--window", "0", "--messages", "500", "--json", "fanout-100")
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	var r BenchResult
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Deliveries != 500*100 {
		t.Fatalf("%v %s", err, out)
	}
}

// TestBenchBaseline measures the Postgres baselines and floors and runs
// http-fanout-1 and the library's fanout-1 and fanout-1000 beside them,
// when a server is reachable: with pgbench when it is installed, and with
// pgx, with pgbench out of PATH. Its address carries pgxpool's and pgx's
// own parameters, which the store reads, and which neither pgbench nor a
// server takes: the baselines connect without them.
func TestBenchBaseline(t *testing.T) {
	u, err := url.Parse(postgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("pool_max_conns", "8")
	q.Set("statement_cache_capacity", "64")
	u.RawQuery = q.Encode()
	dsn := u.String()
	t.Setenv("MOITESSIER_TEST_MAIN", "1")
	ways := []string{"pgx"}
	if _, err := exec.LookPath("pgbench"); err == nil {
		ways = append(ways, "pgbench")
	}
	for _, way := range ways {
		t.Run(way, func(t *testing.T) {
			if way == "pgx" {
				t.Setenv("PATH", t.TempDir())
			}
			out, errOut, err := runCmd(ctxT(t), t, "", "bench", "--store", dsn, "--baseline-time", "1s", "--messages", "30", "--json", "http-fanout-1", "fanout-1", "fanout-1000")
			if err != nil {
				t.Fatalf("%v\n%s", err, errOut)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 7 {
				t.Fatalf("want the four baselines and three results:\n%s\n%s", out, errOut)
			}
			var base, floor, httpFloor, fanFloor BenchResult
			if err := json.Unmarshal([]byte(lines[0]), &base); err != nil || base.Workload != "pg-insert-notify" || base.MsgsPerS <= 0 || base.Baseline != way {
				t.Fatalf("baseline: %v %s", err, lines[0])
			}
			if err := json.Unmarshal([]byte(lines[1]), &floor); err != nil || floor.Workload != "pg-append-floor" || floor.MsgsPerS <= 0 || floor.Baseline != way ||
				floor.BaselineRatio != floor.MsgsPerS/base.MsgsPerS || floor.FloorRatio != 0 {
				t.Fatalf("floor: %v %s", err, lines[1])
			}
			// The bare HTTP service's rate, its ratios and its CPU.
			if err := json.Unmarshal([]byte(lines[2]), &httpFloor); err != nil || httpFloor.Workload != "pg-http-floor" || httpFloor.MsgsPerS <= 0 ||
				httpFloor.Messages < 1 || httpFloor.BaselineRatio != httpFloor.MsgsPerS/base.MsgsPerS || httpFloor.FloorRatio != httpFloor.MsgsPerS/floor.MsgsPerS ||
				runtime.GOOS == "linux" && httpFloor.HubCPUPerDelivery <= 0 || httpFloor.HTTPFloorRatio != 0 {
				t.Fatalf("HTTP floor: %v %s", err, lines[2])
			}
			// The fan-out floor delivers every message to its 1 000 goroutines.
			if err := json.Unmarshal([]byte(lines[3]), &fanFloor); err != nil || fanFloor.Workload != "pg-fanout-floor" || fanFloor.Messages != 30 ||
				fanFloor.Listeners != 1000 || fanFloor.Deliveries != 30*1000 || fanFloor.DispatchesPerS <= 0 || fanFloor.P99ms <= 0 ||
				runtime.GOOS == "linux" && fanFloor.CPUPerDelivery <= 0 || fanFloor.HTTPFloorRatio != 0 || fanFloor.FanoutFloorRatio != 0 ||
				fanFloor.BaselineRatio != fanFloor.DispatchesPerS/base.MsgsPerS || fanFloor.FloorRatio != fanFloor.DispatchesPerS/floor.MsgsPerS {
				t.Fatalf("fan-out floor: %v %s", err, lines[3])
			}
			for i, line := range lines[4:] {
				var r BenchResult
				if err := json.Unmarshal([]byte(line), &r); err != nil || r.Workload != []string{"http-fanout-1", "fanout-1", "fanout-1000"}[i] ||
					r.Deliveries != 30*r.Listeners || r.BaselinePerS != base.MsgsPerS || r.BaselineRatio <= 0 ||
					r.FloorPerS != floor.MsgsPerS || r.FloorRatio != r.DispatchesPerS/floor.MsgsPerS {
					t.Fatalf("result: %v %s", err, line)
				}
				// Only fanout-1000 is measured against the fan-out floor.
				if f := r.Workload == "fanout-1000"; f && (r.FanoutFloorPerS != fanFloor.DispatchesPerS || r.FanoutFloorRatio != r.DispatchesPerS/fanFloor.DispatchesPerS) ||
					!f && (r.FanoutFloorPerS != 0 || r.FanoutFloorRatio != 0) {
					t.Fatalf("result against the fan-out floor: %s", line)
				}
				// Only the hub's workloads are measured against the HTTP floor.
				if hub := r.Workload == "http-fanout-1"; hub && (r.HTTPFloorPerS != httpFloor.MsgsPerS || r.HTTPFloorRatio != r.DispatchesPerS/httpFloor.MsgsPerS) ||
					!hub && (r.HTTPFloorPerS != 0 || r.HTTPFloorRatio != 0) {
					t.Fatalf("result against the HTTP floor: %s", line)
				}
			}
		})
	}
}

// TestPlainDSN checks that the bench's own connections drop exactly the
// parameters pgxpool and pgx read themselves.
func TestPlainDSN(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://u@h:5432/db":                                            "postgres://u@h:5432/db",
		"postgres://u@h/db?sslmode=disable":                                 "postgres://u@h/db?sslmode=disable",
		"postgres://u@h/db?pool_max_conns=4&sslmode=require":                "postgres://u@h/db?sslmode=require",
		"postgresql://u:p@h/db?statement_cache_capacity=1&pool_min_conns=2": "postgresql://u:p@h/db",
		"postgres://u@h/db?application_name=x&default_query_exec_mode=exec": "postgres://u@h/db?application_name=x",
	} {
		if got := plainDSN(in); got != want {
			t.Errorf("plainDSN(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestBenchScopesFloor runs scopes-10k on Postgres, when a server is
// reachable, and checks that pg-scopes-floor runs before it, delivers each
// of its messages once, to the goroutine of the listener it wrote, and
// that scopes-10k, and only it, is measured against it.
func TestBenchScopesFloor(t *testing.T) {
	dsn := postgresDSN(t)
	t.Setenv("MOITESSIER_TEST_MAIN", "1")
	// Creating scopes-10k's 20 000 listeners alone can take a minute
	// under the race detector on two processors.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, errOut, err := runCmd(ctx, t, "", "bench", "--store", dsn, "--baseline-time", "1s", "--messages", "30", "--json", "fanout-1", "scopes-10k")
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 {
		t.Fatalf("want the three baselines and two results:\n%s\n%s", out, errOut)
	}
	var base, floor, scopesFloor BenchResult
	for i, r := range []*BenchResult{&base, &floor, &scopesFloor} {
		if err := json.Unmarshal([]byte(lines[i]), r); err != nil || r.Workload != []string{"pg-insert-notify", "pg-append-floor", "pg-scopes-floor"}[i] {
			t.Fatalf("baseline %d: %v %s", i, err, lines[i])
		}
	}
	if s := scopesFloor; s.Messages != 30 || s.Listeners != 10_000 || s.Deliveries != 30 || s.DispatchesPerS <= 0 || s.P99ms <= 0 ||
		runtime.GOOS == "linux" && s.CPUPerDelivery <= 0 || s.ScopesFloorRatio != 0 || s.FanoutFloorRatio != 0 ||
		s.BaselineRatio != s.DispatchesPerS/base.MsgsPerS || s.FloorRatio != s.DispatchesPerS/floor.MsgsPerS {
		t.Fatalf("scopes floor: %s", lines[2])
	}
	for i, line := range lines[3:] {
		var r BenchResult
		if err := json.Unmarshal([]byte(line), &r); err != nil || r.Workload != []string{"fanout-1", "scopes-10k"}[i] || r.Deliveries != 30 {
			t.Fatalf("result: %v %s", err, line)
		}
		if f := r.Workload == "scopes-10k"; f && (r.ScopesFloorPerS != scopesFloor.DispatchesPerS || r.ScopesFloorRatio != r.DispatchesPerS/scopesFloor.DispatchesPerS) ||
			!f && (r.ScopesFloorPerS != 0 || r.ScopesFloorRatio != 0) {
			t.Fatalf("result against the scopes floor: %s", line)
		}
	}
}

// TestScopesFloorDelivers runs pg-scopes-floor with 7 listeners and 30
// messages, when a server is reachable: each listener is written four or
// five times, in turn, so a message handed to another listener's
// goroutine, or out of order, fails it, as a commit that wrote nothing
// does.
func TestScopesFloorDelivers(t *testing.T) {
	dsn := postgresDSN(t)
	c := &benchConfig{store: dsn, storeName: "postgres"}
	res, err := c.pgScopesFloor(ctxT(t), 7, 30)
	if err != nil || res.Workload != "pg-scopes-floor" || res.Listeners != 7 || res.Messages != 30 || res.Deliveries != 30 ||
		res.DispatchesPerS <= 0 || res.P50ms <= 0 || res.P99ms < res.P50ms {
		t.Fatalf("%+v: %v", res, err)
	}
}

const tokenSecret = "a-secret-of-thirty-two-bytes-or-more"

// TestTokenGrantsOnlyWhatIsAsked checks that a token minted with only
// --listen cannot dispatch, and one with only --dispatch cannot listen.
func TestTokenGrantsOnlyWhatIsAsked(t *testing.T) {
	ctx := ctxT(t)
	mint := func(args ...string) *moitessierhttp.Claims {
		t.Helper()
		out, _, err := runCmd(ctx, t, "", append([]string{"token", "--secret", tokenSecret, "--sub", "alice"}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		c, err := moitessierhttp.Verify([]byte(tokenSecret), strings.TrimSpace(out), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if c := mint("--listen", "room.>"); len(c.Dispatch) != 0 || c.CanDispatch("room.1") || !c.CanListen("room.1") {
		t.Fatalf("--listen only: %+v", c)
	}
	if c := mint("--dispatch", "room.>"); len(c.Listen) != 0 || c.CanListen("room.1") || !c.CanDispatch("room.1") {
		t.Fatalf("--dispatch only: %+v", c)
	}
	_, stderr, err := runCmd(ctx, t, "", "token", "--secret", tokenSecret, "--sub", "alice")
	if err != nil || !strings.Contains(stderr, "grants nothing") {
		t.Fatalf("no grants: %v %q", err, stderr)
	}
	// A development hub, asked for a token, grants only what is asked too.
	dev := startServe(t, "--store", "memory")
	out, _, err := runCmd(ctx, t, "", "token", "--secret", "", "--hub", dev.url, "--sub", "alice", "--listen", "room.>", "--json")
	var dt DevToken
	if err != nil || json.Unmarshal([]byte(out), &dt) != nil || len(dt.Dispatch) != 0 || len(dt.Listen) != 1 || dt.Listen[0] != "room.>" {
		t.Fatalf("development token for --listen only: %v %s", err, out)
	}
	if _, _, err := runCmd(ctx, t, "", "dispatch", "--hub", dev.url, "--token", dt.Token, "room.1", "hi"); !errors.Is(err, moitessierhttp.ErrForbidden) {
		t.Fatalf("dispatch with a listen-only development token: %v, want ErrForbidden", err)
	}
	// And a hub holds the token to it: no dispatch grant, no dispatch.
	h := startServe(t, "--store", "memory", "--secret", tokenSecret)
	out, _, _ = runCmd(ctx, t, "", "token", "--secret", tokenSecret, "--sub", "alice", "--listen", "room.>")
	_, _, err = runCmd(ctx, t, "", "dispatch", "--hub", h.url, "--token", strings.TrimSpace(out), "room.1", "hi")
	if !errors.Is(err, moitessierhttp.ErrForbidden) {
		t.Fatalf("dispatch with a listen-only token: %v, want ErrForbidden", err)
	}
}

// TestShortSecret checks that serve and token refuse a secret shorter
// than 32 bytes, saying how to make one, and that "moitessier secret"
// makes one they take.
func TestShortSecret(t *testing.T) {
	ctx := ctxT(t)
	_, _, err := runCmd(ctx, t, "", "serve", "--addr", "127.0.0.1:0", "--store", "memory", "--secret", "k")
	if !errors.Is(err, moitessierhttp.ErrWeakSecret) || !strings.Contains(err.Error(), "moitessier secret") {
		t.Fatalf("serve --secret k: %v", err)
	}
	_, _, err = runCmd(ctx, t, "", "token", "--secret", "k", "--sub", "a", "--listen", ">")
	if !errors.Is(err, moitessierhttp.ErrWeakSecret) || !strings.Contains(err.Error(), "openssl rand -base64 32") {
		t.Fatalf("token --secret k: %v", err)
	}
	out, _, err := runCmd(ctx, t, "", "secret")
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimSpace(out)
	if len(s) < 32 {
		t.Fatalf("secret %q", s)
	}
	other, _, _ := runCmd(ctx, t, "", "secret")
	if strings.TrimSpace(other) == s {
		t.Fatal("two secrets alike")
	}
	if _, _, err := runCmd(ctx, t, "", "token", "--secret", s, "--sub", "a", "--listen", ">"); err != nil {
		t.Fatalf("token with a made secret: %v", err)
	}
	startServe(t, "--store", "memory", "--secret", s)
}

// TestServeHubHasStoreInterfaces: the hub serve starts on Postgres gets
// the store itself, with its optional interfaces: Watcher (dispatches of
// other processes wake its listeners) and MatchCacher (a dispatch to a
// scope it has matched is one round trip, not two).
func TestServeHubHasStoreInterfaces(t *testing.T) {
	dsn := postgresDSN(t)
	ctx := ctxT(t)
	schema := "moitessier_cmd_" + randomHex(4)
	t.Cleanup(func() { dropSchema(dsn, schema) })
	c, fs := serveFlags(io.Discard)
	if err := fs.Parse([]string{"--store", dsn, "--schema", schema, "--secret", "interfaces-secret-interfaces-123"}); err != nil {
		t.Fatal(err)
	}
	hs, err := startHub(ctx, c, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		hs.api.Close()
		_ = hs.hub.Close()
		_ = hs.store.Close()
	}()
	if _, ok := hs.hub.Store().(moitessier.Watcher); !ok {
		t.Errorf("the hub's store %T is no moitessier.Watcher", hs.hub.Store())
	}
	if _, ok := hs.hub.Store().(moitessier.MatchCacher); !ok {
		t.Errorf("the hub's store %T is no moitessier.MatchCacher", hs.hub.Store())
	}
}
