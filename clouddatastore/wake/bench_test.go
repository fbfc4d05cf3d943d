package wake_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/clouddatastore/wake"
)

// BenchmarkPublishReceive measures the time from Publish on one Wake to
// the call of a watcher on another Wake of the same topic (two processes'
// worth of Pub/Sub clients), one head at a time, and reports its median and
// 99th percentile.
func BenchmarkPublishReceive(b *testing.B) {
	topic := freshTopic(b)
	a := open(b, wake.Config{Topic: topic})
	c := open(b, wake.Config{Topic: topic})
	seen := make(chan moitessier.Cursor, 1024)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- c.Watch(ctx, func(hs []moitessier.Head) {
			for _, h := range hs {
				if h.Listener == "bench" {
					select {
					case seen <- h.Seq:
					default:
					}
				}
			}
		})
	}()
	b.Cleanup(func() { cancel(); <-errc })

	var seq moitessier.Cursor
	round := func(timeout time.Duration) (time.Duration, bool) {
		seq++
		start := time.Now()
		a.Publish([]moitessier.Head{{Listener: "bench", Seq: seq}})
		deadline := time.After(timeout)
		for {
			select {
			case got := <-seen:
				if got >= seq {
					return time.Since(start), true
				}
			case <-deadline:
				return 0, false
			}
		}
	}
	// Warm up: until the watcher is registered and the stream delivers.
	for warm := time.Now(); ; {
		if _, ok := round(time.Second); ok {
			break
		}
		if time.Since(warm) > 15*time.Second {
			b.Fatal("no wake-up received in 15 s")
		}
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		d, ok := round(10 * time.Second)
		if !ok {
			b.Fatalf("wake-up %d not received in 10 s", seq)
		}
		lat = append(lat, d)
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
