package storetest

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
)

// CrossHubLatency measures dispatch-to-respond latency between two hubs on
// one store's data, as two processes would be: it dispatches b.N messages of
// 100 bytes, one at a time, on from (person "b", scope "chat"), and waits
// for each on got, the deliveries of a Shared listener on scope "chat" in the
// other hub, before the next. The listener's hub must be fresh, so that the
// n-th message has seq n; a wrong seq, or a message not received in 10 s,
// fails the benchmark. It reports p50-ms and p99-ms over every delivery.
// The caller sets up both hubs and lets the listener's hub subscribe to
// the other's dispatches before calling it; the timer starts here.
func CrossHubLatency(ctx context.Context, b *testing.B, from *moitessier.Hub, got <-chan moitessier.Message) {
	b.Helper()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		if _, err := from.Dispatch(ctx, "b", "chat", strings.Repeat("x", 100)); err != nil {
			b.Fatal(err)
		}
		select {
		case m := <-got:
			lat = append(lat, time.Since(start))
			if m.Seq != moitessier.Cursor(i+1) {
				b.Fatalf("received seq %d, want %d", m.Seq, i+1)
			}
		case <-time.After(10 * time.Second):
			b.Fatalf("message %d not received in 10s", i)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2])/1e6, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100])/1e6, "p99-ms")
}
