package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/likestripes/moitessier/internal/hubload"
	"github.com/likestripes/moitessier/moitessierhttp"
)

// hubProc is a hub in a child process ("moitessier serve" from this binary)
// on a fresh store, for the end-to-end workloads.
type hubProc struct {
	base, addr string // http://host:port and host:port
	tok        string // a token that may listen and dispatch everywhere
	pid        int
	stop       func()
}

// startHub starts a hub process for workload name and waits for its address.
func (c *benchConfig) startHub(ctx context.Context, name string) (*hubProc, error) {
	secret := randomHex(16)
	args, env, drop := c.hubCommand(name, secret)
	h, err := c.startChild(ctx, args, env, drop)
	if err != nil {
		return nil, err
	}
	h.tok, err = moitessierhttp.Sign([]byte(secret), moitessierhttp.Claims{Subject: "bench", Listen: []string{">"}, Dispatch: []string{">"}, ExpiresAt: time.Now().Add(24 * time.Hour).Unix()})
	if err != nil {
		h.stop()
		return nil, err
	}
	return h, nil
}

// startChild runs this binary with args and env, waits for the address it
// prints ("serving on http://…"), and returns it as a hubProc without a
// token. drop, if not nil, runs once the process has ended.
func (c *benchConfig) startChild(ctx context.Context, args, env []string, drop func()) (*hubProc, error) {
	exe, err := os.Executable()
	if err != nil {
		if drop != nil {
			drop()
		}
		return nil, err
	}
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	cmd := exec.CommandContext(cctx, exe, args...)
	cmd.Stderr = c.stderr
	cmd.Env = env
	out, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		if drop != nil {
			drop()
		}
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		cancel()
		if drop != nil {
			drop()
		}
		return nil, err
	}
	var once sync.Once
	h := &hubProc{pid: cmd.Process.Pid}
	h.stop = func() {
		once.Do(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				cancel()
				<-done
			}
			cancel()
			if drop != nil {
				drop()
			}
		})
	}
	if h.base, err = hubAddress(out); err != nil {
		h.stop()
		return nil, fmt.Errorf("the %s process: %w", args[0], err)
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	h.addr = strings.TrimPrefix(h.base, "http://")
	if c.childStarted != nil {
		c.childStarted(h.pid)
	}
	return h, nil
}

// hubCommand returns the arguments and the environment of the hub process
// for workload name, and a function that drops its store when it is done
// (nil if there is nothing to drop). The secret and the store's address (a
// database URL may hold a password) go in the environment, which serve
// reads (MOITESSIER_SECRET, MOITESSIER_STORE): the arguments of a process
// are shown to every user of the machine (ps, /proc/PID/cmdline), its
// environment only to its owner.
func (c *benchConfig) hubCommand(name, secret string) (args, env []string, drop func()) {
	// Every connection subscribes as one person, "bench": no quotas.
	args = []string{"serve", "--addr", "127.0.0.1:0", "--rate", "0", "--quota-subscriptions", "-1", "--quota-listeners", "-1", "--quota-shared", "-1", "--max-streams", "0", "--join-rate", "0", "--log-level", "warn", "--write-timeout", "30s"}
	if v := os.Getenv("MOITESSIER_BENCH_SERVE_ARGS"); v != "" {
		args = append(args, strings.Fields(v)...) // e.g. --pprof, --ack-interval 1s
	}
	store := c.store
	switch {
	case c.store == "memory":
	case c.store == "sqlite":
		store = filepath.Join(c.tmp, name+"-"+randomHex(4)+".db")
	default:
		schema := "moitessier_bench_" + randomHex(6)
		drop = func() { dropSchema(c.store, schema) }
		args = append(args, "--schema", schema)
	}
	env = c.childEnv("MOITESSIER_SECRET="+secret, "MOITESSIER_STORE="+store)
	return args, env, drop
}

// childEnv returns the environment of a serving process this bench starts
// (the hub, or pg-http-floor's service): this process's, then kv, then
// GOMAXPROCS if --hub-procs is set. Later entries win over the inherited
// ones (os/exec keeps the last value of a key).
func (c *benchConfig) childEnv(kv ...string) []string {
	env := append(os.Environ(), kv...)
	if c.hubProcs > 0 {
		env = append(env, "GOMAXPROCS="+strconv.Itoa(c.hubProcs))
	}
	return env
}

// hubAddress reads the child hub's first line for its address.
func hubAddress(out io.Reader) (string, error) {
	br := bufio.NewReader(out)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return "", fmt.Errorf("no address printed: %w", err)
		}
		if _, rest, ok := strings.Cut(line, "serving on "); ok {
			return strings.Fields(rest)[0], nil
		}
	}
}

// metricName is the transport label of moitessier_open_connections.
func metricName(tr hubload.Transport) string {
	if tr == hubload.WebSocket {
		return "websocket"
	}
	return string(tr)
}

// waitOpen waits until the hub reports the given number of open SSE streams.
func waitOpen(ctx context.Context, base string, want int) error {
	return waitOpenOn(ctx, base, hubload.SSE, want)
}

// waitOpenOn waits until the hub reports the given number of open streams
// of the transport.
func waitOpenOn(ctx context.Context, base string, tr hubload.Transport, want int) error {
	deadline := time.Now().Add(2 * time.Minute)
	prefix := fmt.Sprintf("moitessier_open_connections{transport=%q} ", metricName(tr))
	for {
		got := -1
		if resp, err := http.Get(base + "/metrics"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, prefix); ok {
					got, _ = strconv.Atoi(v)
				}
			}
		}
		if got == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the hub has %d of %d %s streams open", got, want, tr)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// connect opens n clients of the hub on scope, 64 at a time, each to read
// want messages.
func (c *benchConfig) connect(ctx context.Context, name string, h *hubProc, tr hubload.Transport, scope string, n, want int) ([]*hubload.Client, error) {
	conns := make([]*hubload.Client, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	var connected atomic.Int64
	var firstErr error
	var errOnce sync.Once
	stopProgress := c.progressLine(name+" (connecting)", connected.Load, int64(n))
	for i := range conns {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			cl, err := hubload.Dial(ctx, tr, h.addr, h.tok, scope, "c"+strconv.Itoa(i), want)
			if err != nil {
				errOnce.Do(func() { firstErr = err })
				return
			}
			conns[i] = cl
			connected.Add(1)
		}()
	}
	wg.Wait()
	stopProgress()
	if firstErr != nil {
		closeAll(conns)
		return nil, fmt.Errorf("%d of %d clients connected: %w", connected.Load(), n, firstErr)
	}
	if err := waitOpenOn(ctx, h.base, tr, n); err != nil {
		closeAll(conns)
		return nil, err
	}
	return conns, nil
}

func closeAll(conns []*hubload.Client) {
	for _, cl := range conns {
		if cl != nil {
			cl.Close()
		}
	}
}

// gather joins what the clients measured: the time of the last receipt
// (Unix nanoseconds), every message's latency (room is made for size of
// them) and the count of messages out of order or repeated.
func gather(conns []*hubload.Client, size int) (end int64, lat []time.Duration, bad int64) {
	lat = make([]time.Duration, 0, size)
	for _, cl := range conns {
		end = max(end, cl.Last)
		lat = append(lat, cl.Lat...)
		bad += cl.Bad
	}
	return end, lat, bad
}

// waitClients waits for every client to have its messages, failing after
// 30 s without progress.
func waitClients(ctx context.Context, conns []*hubload.Client, delivered *atomic.Int64) error {
	total := 0
	for _, cl := range conns {
		total += cl.Want
	}
	last, lastT := delivered.Load(), time.Now()
	for _, cl := range conns {
		for waiting := true; waiting; {
			select {
			case <-cl.Done:
				waiting = false
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
				if d := delivered.Load(); d != last {
					last, lastT = d, time.Now()
				} else if time.Since(lastT) > 30*time.Second {
					return fmt.Errorf("no delivery for 30 s: %d of %d delivered", d, total)
				}
			}
		}
		if cl.Err != nil {
			return cl.Err
		}
	}
	return nil
}

// cpuOfPid returns the CPU time (user and system) a process has used, from
// /proc/PID/stat (Linux), or -1. The kernel counts it in ticks of 1/100 s
// (USER_HZ, 100 on every Linux architecture Go supports).
func cpuOfPid(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return -1
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(string(b[i+1:]))
	// Fields after the name start at field 3: utime is field 14, stime 15.
	if len(f) < 13 {
		return -1
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return time.Duration(ut+st) * 10 * time.Millisecond
}
