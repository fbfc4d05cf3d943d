//go:build unix

package moitessierhttp_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/internal/hubload"
	"github.com/likestripes/moitessier/memstore"
	"github.com/likestripes/moitessier/moitessierhttp"
)

// TestLoadSSE10k holds 10 000 concurrent SSE connections on loopback, all on
// one Shared listener, and dispatches a message every 10 ms to them. It runs
// only with MOITESSIER_LOAD=1. The hub runs in a child process (this test
// binary again, as TestLoadServerProcess), so that each side holds 10 000
// descriptors and the hub's memory per connection can be read alone; both
// raise their open-files limit (RLIMIT_NOFILE) with syscall.Setrlimit, to
// 65 536 where allowed, else to the hard limit.
func TestLoadSSE10k(t *testing.T) {
	if os.Getenv("MOITESSIER_LOAD") != "1" {
		t.Skip("set MOITESSIER_LOAD=1 to run the 10 000-connection SSE load test")
	}
	const conns, msgs = 10_000, 100
	raiseNoFile(t, 65536)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestLoadServerProcess$", "-test.v")
	cmd.Env = append(os.Environ(), "MOITESSIER_LOAD_SERVER=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		_ = cmd.Wait()
	}()
	var addr string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "ADDR "); ok {
			addr = a
			break
		}
	}
	if addr == "" {
		t.Fatalf("the hub process did not start: %v", sc.Err())
	}
	go func() { // keep draining the child's output
		for sc.Scan() {
		}
	}()
	rss0 := rssOf(t, cmd.Process.Pid)
	alice := &moitessierhttp.Client{BaseURL: "http://" + addr, Token: all(t, "alice")}
	openSSE := func() int {
		code, _, body := do(t, "GET", "http://"+addr+"/metrics", "", "")
		if code != 200 {
			t.Fatalf("metrics: %d", code)
		}
		for _, line := range strings.Split(string(body), "\n") {
			if v, ok := strings.CutPrefix(line, `moitessier_open_connections{transport="sse"} `); ok {
				n, _ := strconv.Atoi(v)
				return n
			}
		}
		return -1
	}
	tok := all(t, "load")

	clients := make([]*hubload.Client, conns)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	start := time.Now()
	var failed atomic.Int64
	for i := range clients {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := hubload.Dial(ctx, hubload.SSE, addr, tok, "load.room", fmt.Sprint("c", i), msgs)
			if err != nil {
				if failed.Add(1) == 1 {
					t.Errorf("client %d: %v", i, err)
				}
				return
			}
			clients[i] = c
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d of %d clients failed to connect", failed.Load(), conns)
	}
	t.Logf("%d SSE connections open in %v", conns, time.Since(start).Round(time.Millisecond))
	waitFor(t, "every stream to listen", func() bool { return openSSE() == conns })
	rss1 := rssOf(t, cmd.Process.Pid)
	t.Logf("hub RSS %d MiB idle, %d MiB with %d connections: %.1f KiB per connection", rss0>>20, rss1>>20, conns, float64(rss1-rss0)/conns/1024)

	for _, c := range clients {
		go c.Run()
	}
	start = time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	for i := range msgs {
		<-tick.C
		if _, err := alice.Dispatch(ctx, moitessierhttp.DispatchRequest{Scope: "load.room", Text: strconv.FormatInt(time.Now().UnixNano(), 10) + " " + strings.Repeat(".", 80)}); err != nil {
			t.Fatalf("dispatch %d: %v", i, err)
		}
	}
	tick.Stop()
	var lat []time.Duration
	for i, c := range clients {
		select {
		case <-c.Done:
		case <-ctx.Done():
			t.Fatalf("client %d got %d of %d messages before the deadline", i, c.Got, msgs)
		}
		if c.Err != nil {
			t.Fatalf("client %d: %v", i, c.Err)
		}
		lat = append(lat, c.Lat...)
		c.Close()
	}
	wall := time.Since(start)
	slices.Sort(lat)
	p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))] }
	t.Logf("%d deliveries in %v (%.0f/s); dispatch-to-client p50 %v, p99 %v, max %v",
		len(lat), wall.Round(time.Millisecond), float64(len(lat))/wall.Seconds(), p(0.5), p(0.99), lat[len(lat)-1])
	if got, want := len(lat), conns*msgs; got != want {
		t.Fatalf("%d deliveries, want %d", got, want)
	}
}

// TestLoadServerProcess is the hub of TestLoadSSE10k, run in a child process.
func TestLoadServerProcess(t *testing.T) {
	if os.Getenv("MOITESSIER_LOAD_SERVER") != "1" {
		t.Skip("the hub process of TestLoadSSE10k")
	}
	raiseNoFile(t, 65536)
	// One person holds all 10 000 subscriptions, past the default quota.
	hub, err := moitessier.New(memstore.New(), moitessier.Options{GCInterval: -1, Quota: moitessier.Quota{Subscriptions: -1}})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	// One person holds all the streams, and joins them all at once, past
	// the default limits.
	srv, err := moitessierhttp.New(hub, moitessierhttp.Config{Secret: secret, DispatchRate: -1, MaxStreamsPerPerson: -1, JoinRate: -1})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", srv)
	mux.Handle("GET /metrics", srv.Metrics())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: mux}
	go func() { _ = hs.Serve(ln) }()
	if f := os.Getenv("MOITESSIER_LOAD_CPUPROFILE"); f != "" {
		out, err := os.Create(f)
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		if err := pprof.StartCPUProfile(out); err != nil {
			t.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	fmt.Printf("ADDR %s\n", ln.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent closes stdin
	srv.Close()
	_ = hs.Close()
}

// rssOf returns the resident memory of a process, from /proc.
func rssOf(tb testing.TB, pid int) int64 {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Logf("no RSS: %v", err)
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func raiseNoFile(tb testing.TB, n uint64) {
	tb.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	want := lim
	want.Cur = n
	if want.Max < n {
		want.Max = n // needs privilege; fall back to the hard limit
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		want.Cur, want.Max = lim.Max, lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
			tb.Fatalf("raise RLIMIT_NOFILE: %v", err)
		}
		tb.Logf("RLIMIT_NOFILE raised to the hard limit %d only", lim.Max)
	}
}
