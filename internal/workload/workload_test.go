package workload_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/likestripes/moitessier/internal/workload"
	"github.com/likestripes/moitessier/memstore"
)

func TestFanout(t *testing.T) {
	ctx := context.Background()
	var started, stopped bool
	var total int64
	hooks := workload.Hooks{
		Start: func() { started = true },
		Stop:  func() { stopped = true },
		Progress: func(_ func() int64, n int64) func() {
			total = n
			return func() {}
		},
	}
	res, err := workload.Fanout(ctx, memstore.New(), 3, 2, 50, 8, hooks)
	if err != nil {
		t.Fatal(err)
	}
	if res.Deliveries != 150 || len(res.Latencies) != 150 {
		t.Errorf("%d deliveries, %d latencies; want 150", res.Deliveries, len(res.Latencies))
	}
	if !slices.IsSorted(res.Latencies) || res.Latencies[0] < 0 || res.Latencies[149] > time.Minute {
		t.Errorf("latencies not sorted, or not dispatch-to-delivery times: %v … %v", res.Latencies[0], res.Latencies[149])
	}
	if len(res.Dispatches) != 50 || !slices.IsSorted(res.Dispatches) || res.Dispatches[0] <= 0 {
		t.Errorf("%d Dispatch call durations (want 50, sorted, positive)", len(res.Dispatches))
	}
	if !started || !stopped || total != 150 {
		t.Errorf("hooks: started %v, stopped %v, progress total %d (want 150)", started, stopped, total)
	}
	if res.StoreCalls < 50 || res.Responds < 3 || res.Wall <= 0 {
		t.Errorf("store calls %d (want ≥ one per dispatch), responds %d, wall %v", res.StoreCalls, res.Responds, res.Wall)
	}
	if got := res.MsgsPerSecond(); got <= 0 {
		t.Errorf("MsgsPerSecond = %v", got)
	}
}

func TestScopes(t *testing.T) {
	s := memstore.New()
	res, err := workload.Scopes(context.Background(), s, 10, 25, 0, workload.Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	// The listeners created concurrently left before the dispatching:
	// what the store holds is the workload's.
	for _, scope := range []string{"bench.arrival.0", "bench.arrival.9"} {
		if ls, err := s.Match(context.Background(), scope); err != nil || len(ls) != 0 {
			t.Errorf("Match(%s) = %d listeners, %v; want none left", scope, len(ls), err)
		}
	}
	if ls, err := s.Match(context.Background(), "bench.scope.9"); err != nil || len(ls) != 1 {
		t.Errorf("Match(bench.scope.9) = %d listeners, %v; want the workload's one", len(ls), err)
	}
	if len(res.Dispatches) != 25 || !slices.IsSorted(res.Dispatches) {
		t.Errorf("%d Dispatch call durations (want 25, sorted)", len(res.Dispatches))
	}
	if res.Deliveries != 25 || res.Create <= 0 || res.Listen <= 0 || res.CreateConcurrent <= 0 {
		t.Errorf("%d deliveries (want 25), create %v, create concurrently %v, listen %v", res.Deliveries, res.Create, res.CreateConcurrent, res.Listen)
	}
}

func TestIdle(t *testing.T) {
	res, err := workload.Idle(context.Background(), memstore.New(), 20, 10*time.Millisecond, 50*time.Millisecond, workload.Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	// The memory store is not polled: an idle hub makes no store call.
	if res.QueriesPerSecond != 0 || res.HeapPerListener <= 0 {
		t.Errorf("%+v: want no store call and some heap per listener", res)
	}
}

func TestPercentile(t *testing.T) {
	lat := []time.Duration{1e6, 2e6, 3e6, 4e6, 5e6}
	if got := workload.Percentile(lat, 0.5); got != 3 {
		t.Errorf("p50 = %v ms, want 3", got)
	}
	if got := workload.Percentile(nil, 0.99); got != 0 {
		t.Errorf("p99 of nothing = %v, want 0", got)
	}
}
