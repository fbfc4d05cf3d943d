package moitessierhttp

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/likestripes/moitessier"
)

const (
	transportSSE = iota
	transportWS
	transportPoll
	nTransports
)

var transportNames = [nTransports]string{"sse", "websocket", "poll"}

// latencyBuckets are the upper bounds, in seconds, of the
// dispatch-to-delivery latency histogram.
var latencyBuckets = [...]float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Metrics counts what a Server does, for Prometheus. It is safe for
// concurrent use; ServeHTTP writes it in the Prometheus text exposition
// format (version 0.0.4).
type Metrics struct {
	dispatches    atomic.Uint64
	replayed      atomic.Uint64
	dispatchErrs  atomic.Uint64
	stored        atomic.Uint64
	deliveries    [nTransports]atomic.Uint64
	open          [nTransports]atomic.Int64
	slowDrops     atomic.Uint64
	authFailures  atomic.Uint64
	rateLimited   atomic.Uint64
	latencyCounts [len(latencyBuckets) + 1]atomic.Uint64
	latencySumNs  atomic.Uint64

	// Extra, if set, is called by WriteTo to append more metrics (the
	// process's own, say) in the same exposition format.
	Extra func(w io.Writer)
}

// NewMetrics returns zeroed metrics.
func NewMetrics() *Metrics { return &Metrics{} }

// delivered counts messages written to a client and their latency from
// dispatch (Message.Created) to now. A call adds to each shared counter at
// most once: ten thousand streams call it for every message.
func (m *Metrics) delivered(t int, msgs []moitessier.Message, now time.Time) {
	m.deliveries[t].Add(uint64(len(msgs)))
	var sum time.Duration
	var counts [len(latencyBuckets) + 1]uint32
	for i := range msgs {
		d := now.Sub(msgs[i].Created)
		if d < 0 {
			d = 0
		}
		sum += d
		sec := d.Seconds()
		b := len(latencyBuckets)
		for j, le := range latencyBuckets {
			if sec <= le {
				b = j
				break
			}
		}
		counts[b]++
	}
	for b, n := range counts {
		if n > 0 {
			m.latencyCounts[b].Add(uint64(n))
		}
	}
	m.latencySumNs.Add(uint64(sum))
}

// Snapshot is a copy of the counters, for tests and reports.
type Snapshot struct {
	Dispatches, Replayed, DispatchErrors, Stored uint64
	Deliveries                                   map[string]uint64
	Open                                         map[string]int64
	SlowDrops, AuthFailures, RateLimited         uint64
}

// Snapshot returns the current counters.
func (m *Metrics) Snapshot() Snapshot {
	s := Snapshot{
		Dispatches: m.dispatches.Load(), Replayed: m.replayed.Load(), DispatchErrors: m.dispatchErrs.Load(), Stored: m.stored.Load(),
		Deliveries: map[string]uint64{}, Open: map[string]int64{},
		SlowDrops: m.slowDrops.Load(), AuthFailures: m.authFailures.Load(), RateLimited: m.rateLimited.Load(),
	}
	for i, n := range transportNames {
		s.Deliveries[n] = m.deliveries[i].Load()
		s.Open[n] = m.open[i].Load()
	}
	return s
}

// WriteTo writes the metrics in the Prometheus text exposition format.
func (m *Metrics) WriteTo(w io.Writer) (int64, error) {
	cw := &countWriter{w: bufio.NewWriter(w)}
	p := func(format string, a ...any) { fmt.Fprintf(cw, format, a...) }
	p("# HELP moitessier_dispatches_total Dispatches made through the HTTP API, by result.\n")
	p("# TYPE moitessier_dispatches_total counter\n")
	p("moitessier_dispatches_total{result=\"stored\"} %d\n", m.dispatches.Load())
	p("moitessier_dispatches_total{result=\"replayed\"} %d\n", m.replayed.Load())
	p("moitessier_dispatches_total{result=\"error\"} %d\n", m.dispatchErrs.Load())
	p("# HELP moitessier_messages_stored_total Messages stored by dispatches (one per listener reached).\n")
	p("# TYPE moitessier_messages_stored_total counter\n")
	p("moitessier_messages_stored_total %d\n", m.stored.Load())
	p("# HELP moitessier_deliveries_total Messages written to clients, by transport.\n")
	p("# TYPE moitessier_deliveries_total counter\n")
	for i, n := range transportNames {
		p("moitessier_deliveries_total{transport=%q} %d\n", n, m.deliveries[i].Load())
	}
	p("# HELP moitessier_open_connections Streaming connections open now, by transport.\n")
	p("# TYPE moitessier_open_connections gauge\n")
	for i, n := range transportNames {
		p("moitessier_open_connections{transport=%q} %d\n", n, m.open[i].Load())
	}
	p("# HELP moitessier_slow_consumer_drops_total Connections dropped because the client did not take its messages in time.\n")
	p("# TYPE moitessier_slow_consumer_drops_total counter\n")
	p("moitessier_slow_consumer_drops_total %d\n", m.slowDrops.Load())
	p("# HELP moitessier_auth_failures_total Requests refused for a missing or invalid token.\n")
	p("# TYPE moitessier_auth_failures_total counter\n")
	p("moitessier_auth_failures_total %d\n", m.authFailures.Load())
	p("# HELP moitessier_rate_limited_total Dispatches refused by a per-person limit: the dispatch rate or the handler time.\n")
	p("# TYPE moitessier_rate_limited_total counter\n")
	p("moitessier_rate_limited_total %d\n", m.rateLimited.Load())
	p("# HELP moitessier_delivery_latency_seconds Time from the start of a dispatch to the write of its message to a client.\n")
	p("# TYPE moitessier_delivery_latency_seconds histogram\n")
	var cum uint64
	for i, le := range latencyBuckets {
		cum += m.latencyCounts[i].Load()
		p("moitessier_delivery_latency_seconds_bucket{le=\"%s\"} %d\n", formatFloat(le), cum)
	}
	cum += m.latencyCounts[len(latencyBuckets)].Load()
	p("moitessier_delivery_latency_seconds_bucket{le=\"+Inf\"} %d\n", cum)
	p("moitessier_delivery_latency_seconds_sum %s\n", formatFloat(float64(m.latencySumNs.Load())/1e9))
	p("moitessier_delivery_latency_seconds_count %d\n", cum)
	if m.Extra != nil {
		m.Extra(cw)
	}
	err := cw.w.(*bufio.Writer).Flush()
	if err == nil {
		err = cw.err
	}
	return cw.n, err
}

func formatFloat(f float64) string {
	if f == math.Trunc(f) && math.Abs(f) < 1e15 {
		return fmt.Sprintf("%.0f", f)
	}
	return fmt.Sprintf("%g", f)
}

type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if err != nil && c.err == nil {
		c.err = err
	}
	return n, err
}

// ServeHTTP writes the metrics for a Prometheus scrape.
func (m *Metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = m.WriteTo(w)
}
