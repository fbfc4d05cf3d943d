//go:build unix

package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
)

// BenchmarkCatchUp measures a hub's catch-up read of 10 000 listeners
// with no news, as a hub with that many listened listeners makes every
// Options.CatchUpInterval: "Heads" reads every head and compares them in
// this process (moitessier.CompareHeads on a store without a
// HeadComparer, as the hub did before ChangedHeads), "ChangedHeads" sends
// the heads known and gets back what differs (nothing). cpu-µs/op is this
// process's processor time (user and system) per read; the server's is
// not in it, but is in ns/op. Compare the two of one run:
//
//	go test -run '^$' -bench CatchUp -benchtime 50x -count 3 ./postgres
func BenchmarkCatchUp(b *testing.B) {
	const n = 10_000
	s := benchStore(b)
	ctx := context.Background()
	now := time.Now()
	known := make([]moitessier.Head, n)
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 32 {
				id := fmt.Sprint("catchup-", i)
				l, _, _, err := s.Join(ctx, moitessier.ListenerInfo{ID: id, Type: moitessier.Shared, Person: "p", Scopes: []string{id}, Created: now},
					moitessier.Subscriber{Person: "p", Joined: now, LeaseExpires: now.Add(time.Hour)}, moitessier.Quota{})
				if err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
				known[i] = moitessier.Head{Listener: id, Seq: l.Head, Created: l.Created}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	for _, way := range []struct {
		name string
		w    moitessier.Watcher
	}{{"Heads", headsOnly{s}}, {"ChangedHeads", s}} {
		b.Run(way.name, func(b *testing.B) {
			cpu0 := benchCPU()
			for b.Loop() {
				changed, gone, err := moitessier.CompareHeads(ctx, way.w, known)
				if err != nil || len(changed)+len(gone) != 0 {
					b.Fatalf("%d changed, %d gone, %v", len(changed), len(gone), err)
				}
			}
			reportCPU(b, cpu0)
		})
	}
}

// reportCPU reports the processor time this process used since cpu0 (a
// benchCPU), per iteration of b, as cpu-µs/op.
func reportCPU(b *testing.B, cpu0 time.Duration) {
	b.ReportMetric(float64(benchCPU()-cpu0)/1e3/float64(b.N), "cpu-µs/op")
}

// benchCPU is the processor time this process has used, user and system.
func benchCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
