package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/likestripes/moitessier/moitessierhttp"
)

// sse runs sse-10k: a hub in a child process ("moitessier serve" from this
// binary) on the chosen store, clients SSE connections to it on one scope,
// and a dispatch every 10 ms over HTTP.
func (c *benchConfig) sse(ctx context.Context, name string, clients, n int) (BenchResult, error) {
	res := BenchResult{Workload: name, Store: c.storeName, Listeners: clients, Messages: n}
	limit, err := raiseOpenFiles()
	if err != nil {
		return res, fmt.Errorf("raise the open-files limit: %w", err)
	}
	if limit > 0 && limit < uint64(clients)+256 {
		return res, fmt.Errorf("the open-files limit (RLIMIT_NOFILE) is %d, too low for %d clients", limit, clients)
	}
	exe, err := os.Executable()
	if err != nil {
		return res, err
	}
	secret := randomHex(16)
	args := []string{"serve", "--addr", "127.0.0.1:0", "--secret", secret, "--rate", "0", "--log-level", "warn", "--write-timeout", "30s"}
	if v := os.Getenv("MOITESSIER_BENCH_SERVE_ARGS"); v != "" {
		args = append(args, strings.Fields(v)...) // e.g. --pprof, --ack-interval 1s
	}
	switch {
	case c.store == "memory":
		args = append(args, "--store", "memory")
	case c.store == "sqlite":
		args = append(args, "--store", filepath.Join(c.tmp, name+".db"))
	default:
		schema := "moitessier_bench_" + randomHex(6)
		defer dropSchema(c.store, schema)
		args = append(args, "--store", c.store, "--schema", schema)
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(cctx, exe, args...)
	cmd.Stderr = c.stderr
	cmd.Env = append(os.Environ(), "MOITESSIER_SECRET=", "MOITESSIER_STORE=")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return res, err
	}
	if err := cmd.Start(); err != nil {
		return res, err
	}
	stopped := false
	stopHub := func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cancel()
			<-done
		}
	}
	defer stopHub()
	base, err := hubAddress(out)
	if err != nil {
		return res, fmt.Errorf("the hub process: %w", err)
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	tok, err := moitessierhttp.Sign([]byte(secret), moitessierhttp.Claims{Subject: "bench", Listen: []string{">"}, Dispatch: []string{">"}, ExpiresAt: time.Now().Add(time.Hour).Unix()})
	if err != nil {
		return res, err
	}
	pid := cmd.Process.Pid
	rss0 := rssOfPid(pid)

	// Connect the clients, 64 at a time.
	addr := strings.TrimPrefix(base, "http://")
	conns := make([]*sseClient, clients)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	var connected atomic.Int64
	var firstErr error
	var errOnce sync.Once
	stopProgress := c.progressLine(name+" (connecting)", connected.Load, int64(clients))
	for i := range conns {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			cl, err := dialSSE(ctx, addr, tok, "bench.sse", "c"+strconv.Itoa(i), n)
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
	defer func() {
		for _, cl := range conns {
			if cl != nil {
				cl.conn.Close()
			}
		}
	}()
	if firstErr != nil {
		return res, fmt.Errorf("%d of %d clients connected: %w", connected.Load(), clients, firstErr)
	}
	if err := waitOpen(ctx, base, clients); err != nil {
		return res, err
	}
	rss1 := rssOfPid(pid)
	if rss0 > 0 && rss1 > rss0 {
		res.RSSPerConn = float64(rss1-rss0) / float64(clients)
	}

	var delivered atomic.Int64
	for _, cl := range conns {
		cl.delivered = &delivered
	}
	for _, cl := range conns {
		go cl.run()
	}
	stopProgress = c.progressLine(name, delivered.Load, int64(clients*n))
	if f := os.Getenv("MOITESSIER_BENCH_CPUPROFILE"); f != "" {
		// A CPU profile of this process (the clients) while messages flow.
		if pf, err := os.Create(f); err == nil {
			if pprof.StartCPUProfile(pf) == nil {
				defer func() { pprof.StopCPUProfile(); pf.Close() }()
			}
		}
	}
	// A dispatch is sent every 10 ms whether or not the ones before have
	// been answered (open loop): a slow hub then shows as latency, not as
	// dispatches silently skipped.
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer hc.CloseIdleConnections()
	dispatch := func(i int, at time.Time) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/dispatch?scope=bench.sse", strings.NewReader(textAt(at)))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := hc.Do(req)
		if err != nil {
			return fmt.Errorf("dispatch %d: %w", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("dispatch %d: %s", i, resp.Status)
		}
		return nil
	}
	took := make([]time.Duration, n) // each dispatch's answer, from when it was due
	var dwg sync.WaitGroup
	var derrOnce sync.Once
	var derr error
	start := time.Now()
	for i := range n {
		// Each dispatch is due 10 ms after the previous one, whether or
		// not this loop kept up: a late one goes at once, and its latency
		// counts from when it was due.
		at := start.Add(time.Duration(i+1) * 10 * time.Millisecond)
		select {
		case <-time.After(time.Until(at)):
		case <-ctx.Done():
			stopProgress()
			return res, ctx.Err()
		}
		dwg.Add(1)
		go func() {
			defer dwg.Done()
			if err := dispatch(i, at); err != nil {
				derrOnce.Do(func() { derr = err })
			}
			took[i] = time.Since(at)
		}()
	}
	dwg.Wait()
	if derr != nil {
		stopProgress()
		return res, derr
	}
	// Wait for every client, failing after 30 s without progress.
	last, lastT := delivered.Load(), time.Now()
	for _, cl := range conns {
		for waiting := true; waiting; {
			select {
			case <-cl.done:
				waiting = false
			case <-ctx.Done():
				stopProgress()
				return res, ctx.Err()
			case <-time.After(time.Second):
				if d := delivered.Load(); d != last {
					last, lastT = d, time.Now()
				} else if time.Since(lastT) > 30*time.Second {
					stopProgress()
					return res, fmt.Errorf("no delivery for 30 s: %d of %d delivered", d, clients*n)
				}
			}
		}
		if cl.err != nil {
			stopProgress()
			return res, cl.err
		}
	}
	stopProgress()
	var end int64
	lat := make([]time.Duration, 0, clients*n)
	var bad int64
	for _, cl := range conns {
		end = max(end, cl.last)
		lat = append(lat, cl.lat...)
		bad += cl.bad
	}
	if os.Getenv("MOITESSIER_BENCH_TIMELINE") != "" {
		// Latency by message, in groups of 25 dispatches (a diagnostic).
		for i0 := 0; i0 < n; i0 += 25 {
			var g []time.Duration
			for _, cl := range conns {
				g = append(g, cl.lat[i0:min(n, i0+25)]...)
			}
			slices.Sort(g)
			d := slices.Clone(took[i0:min(n, i0+25)])
			slices.Sort(d)
			fmt.Fprintf(c.stderr, "messages %4d-%4d: p50 %6.1f ms  p99 %6.1f ms  max %6.1f ms; dispatch answered in p50 %6.1f ms, max %6.1f ms\n", i0, min(n, i0+25)-1,
				float64(g[len(g)/2])/1e6, float64(g[len(g)*99/100])/1e6, float64(g[len(g)-1])/1e6, float64(d[len(d)/2])/1e6, float64(d[len(d)-1])/1e6)
		}
	}
	return res, summarize(&res, start, end, lat, bad)
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

// waitOpen waits until the hub reports the given number of open SSE streams.
func waitOpen(ctx context.Context, base string, want int) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		got := -1
		if resp, err := http.Get(base + "/metrics"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, `moitessier_open_connections{transport="sse"} `); ok {
					got, _ = strconv.Atoi(v)
				}
			}
		}
		if got == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the hub has %d of %d streams open", got, want)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// sseClient is a minimal SSE client on a raw socket: one goroutine and a
// small buffer each, so that ten thousand run beside the hub.
type sseClient struct {
	conn      net.Conn
	br        *bufio.Reader
	r         io.Reader // the stream after the ready event
	buf       []byte    // made before the clock starts
	held      int       // bytes of an incomplete line at the start of buf
	want      int
	got       int
	next      uint64
	lat       []time.Duration
	last      int64
	bad       int64
	err       error
	done      chan struct{}
	delivered *atomic.Int64
}

func dialSSE(ctx context.Context, addr, tok, scope, client string, want int) (*sseClient, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(conn, "GET /v1/events?scope=%s&client=%s&since=head HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer %s\r\nAccept: text/event-stream\r\n\r\n", scope, client, tok)
	c := &sseClient{conn: conn, br: bufio.NewReaderSize(conn, 1024), want: want, next: 0, lat: make([]time.Duration, 0, want), done: make(chan struct{})}
	_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
	status, err := c.br.ReadString('\n')
	if err != nil || !strings.Contains(status, " 200 ") {
		conn.Close()
		return nil, fmt.Errorf("status %q: %v", strings.TrimSpace(status), err)
	}
	chunked := false
	for { // the header
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			conn.Close()
			return nil, err
		}
		if len(bytes.TrimSpace(line)) == 0 {
			break
		}
		chunked = chunked || bytes.EqualFold(bytes.TrimSpace(line), []byte("Transfer-Encoding: chunked"))
	}
	if chunked {
		c.br = bufio.NewReaderSize(httputil.NewChunkedReader(c.br), 1024)
	}
	for { // up to the ready event
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			conn.Close()
			return nil, err
		}
		if bytes.HasPrefix(line, []byte("event: ready")) {
			break
		}
	}
	_ = conn.SetReadDeadline(time.Time{})
	c.buf = make([]byte, 16<<10)
	c.r = c.br // what it holds first, then (bufio reads large buffers directly) the socket
	return c, nil
}

// run reads events until it has every message, checking their ids. Each
// event's latency is taken at the read that brought its last byte: every
// event of one read arrived at once, and timing them there keeps the
// parsing of a long batch out of the figures.
func (c *sseClient) run() {
	defer close(c.done)
	for c.got < c.want {
		if c.held == len(c.buf) {
			c.buf = append(c.buf, make([]byte, len(c.buf))...)
		}
		n, err := c.r.Read(c.buf[c.held:])
		if n == 0 && err != nil {
			c.err = err
			return
		}
		if err := c.consume(n, time.Now()); err != nil {
			c.err = err
			return
		}
	}
}

// consume takes the n bytes read at now into c.buf after those held.
func (c *sseClient) consume(n int, now time.Time) error {
	got := c.got
	data := c.buf[:c.held+n]
	for {
		nl := bytes.IndexByte(data, '\n')
		if nl < 0 {
			break
		}
		if err := c.line(data[:nl+1], now); err != nil {
			return err
		}
		data = data[nl+1:]
	}
	c.held = copy(c.buf, data)
	c.delivered.Add(int64(c.got - got))
	return nil
}

var sseMarker = []byte(`"text":"`)

// line takes one line of the stream, read at now.
func (c *sseClient) line(line []byte, now time.Time) error {
	if id, ok := bytes.CutPrefix(line, []byte("id: ")); ok {
		seq, _ := strconv.ParseUint(string(bytes.TrimSpace(id)), 10, 64)
		if c.next != 0 && seq != c.next {
			c.bad++
		}
		c.next = seq + 1
		return nil
	}
	if !bytes.HasPrefix(line, []byte("data: ")) {
		return nil
	}
	i := bytes.Index(line, sseMarker)
	if i < 0 {
		return nil
	}
	rest := line[i+len(sseMarker):]
	j := bytes.IndexByte(rest, ' ')
	if j < 0 {
		return fmt.Errorf("message %q", line)
	}
	sent, err := strconv.ParseInt(string(rest[:j]), 10, 64)
	if err != nil {
		return fmt.Errorf("message %q: %v", line, err)
	}
	c.lat = append(c.lat, now.Sub(time.Unix(0, sent)))
	c.last = now.UnixNano()
	c.got++
	return nil
}
