package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/likestripes/moitessier/internal/hubload"
)

// sse runs sse-10k: a hub in a child process ("moitessier serve" from this
// binary) on the chosen store, clients SSE connections to it on one scope,
// and a dispatch every 10 ms over HTTP.
func (c *benchConfig) sse(ctx context.Context, name string, clients, n int) (BenchResult, error) {
	res := BenchResult{Workload: name, Store: c.storeName, Transport: string(hubload.SSE), HubProcs: c.hubProcs, Listeners: clients, Messages: n}
	limit, err := raiseOpenFiles()
	if err != nil {
		return res, fmt.Errorf("raise the open-files limit: %w", err)
	}
	if limit > 0 && limit < uint64(clients)+256 {
		return res, fmt.Errorf("the open-files limit (RLIMIT_NOFILE) is %d, too low for %d clients", limit, clients)
	}
	hub, err := c.startHub(ctx, name)
	if err != nil {
		return res, err
	}
	defer hub.stop()
	rss0 := rssOfPid(hub.pid)
	conns, err := c.connect(ctx, name, hub, hubload.SSE, "bench.sse", clients, n)
	if err != nil {
		return res, err
	}
	defer closeAll(conns)
	rss1 := rssOfPid(hub.pid)
	if rss0 > 0 && rss1 > rss0 {
		res.RSSPerConn = float64(rss1-rss0) / float64(clients)
	}

	var delivered atomic.Int64
	for _, cl := range conns {
		cl.Delivered = &delivered
	}
	for _, cl := range conns {
		go cl.Run()
	}
	stopProgress := c.progressLine(name, delivered.Load, int64(clients*n))
	defer stopProgress()
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
	took := make([]time.Duration, n) // each dispatch's answer, from when it was due
	var dwg sync.WaitGroup
	var derrOnce sync.Once
	var derr error
	cpu0 := cpuOfPid(hub.pid)
	start := time.Now()
	for i := range n {
		// Each dispatch is due 10 ms after the previous one, whether or
		// not this loop kept up: a late one goes at once, and its latency
		// counts from when it was due.
		at := start.Add(time.Duration(i+1) * 10 * time.Millisecond)
		select {
		case <-time.After(time.Until(at)):
		case <-ctx.Done():
			return res, ctx.Err()
		}
		dwg.Add(1)
		go func() {
			defer dwg.Done()
			if err := postDispatch(ctx, hc, hub, "bench.sse", at); err != nil {
				derrOnce.Do(func() { derr = fmt.Errorf("dispatch %d: %w", i, err) })
			}
			took[i] = time.Since(at)
		}()
	}
	dwg.Wait()
	if derr != nil {
		return res, derr
	}
	if err := waitClients(ctx, conns, &delivered); err != nil {
		return res, err
	}
	cpu1 := cpuOfPid(hub.pid)
	stopProgress()
	end, lat, bad := gather(conns, clients*n)
	if os.Getenv("MOITESSIER_BENCH_TIMELINE") != "" {
		// Latency by message, in groups of 25 dispatches (a diagnostic).
		for i0 := 0; i0 < n; i0 += 25 {
			var g []time.Duration
			for _, cl := range conns {
				g = append(g, cl.Lat[i0:min(n, i0+25)]...)
			}
			slices.Sort(g)
			d := slices.Clone(took[i0:min(n, i0+25)])
			slices.Sort(d)
			fmt.Fprintf(c.stderr, "messages %4d-%4d: p50 %6.1f ms  p99 %6.1f ms  max %6.1f ms; dispatch answered in p50 %6.1f ms, max %6.1f ms\n", i0, min(n, i0+25)-1,
				float64(g[len(g)/2])/1e6, float64(g[len(g)*99/100])/1e6, float64(g[len(g)-1])/1e6, float64(d[len(d)/2])/1e6, float64(d[len(d)-1])/1e6)
		}
	}
	if err := summarize(&res, start, end, lat, bad); err != nil {
		return res, err
	}
	res.cpuPerDelivery(cpu0, cpu1)
	return res, nil
}
