//go:build unix

package moitessier_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/memstore"
)

// BenchmarkWakeRound measures what waking many waiting subscribers costs:
// 1 000 subscribers of one Shared listener wait in ListenUntil, and each
// round dispatches one message and waits until every one has it. It
// reports the process's CPU time per subscriber woken (cpu-ns/wake), with
// one context for all subscribers (shared-ctx) or one each (own-ctx), and
// with a check and a timeout as the hub's streams have (own-ctx-timer).
func BenchmarkWakeRound(b *testing.B) {
	b.Run("shared-ctx", func(b *testing.B) { benchWakeRound(b, 1000, true, false) })
	b.Run("own-ctx", func(b *testing.B) { benchWakeRound(b, 1000, false, false) })
	b.Run("own-ctx-timer", func(b *testing.B) { benchWakeRound(b, 1000, false, true) })
}

func benchWakeRound(b *testing.B, subs int, sharedCtx, timer bool) {
	ctx := context.Background()
	hub, err := moitessier.New(memstore.New(), moitessier.Options{GCInterval: -1, Quota: moitessier.Quota{Listeners: -1, Handlers: -1, Shared: -1, Subscriptions: -1}})
	if err != nil {
		b.Fatal(err)
	}
	defer hub.Close()
	var got atomic.Int64
	round := make(chan struct{}, 1)
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{}, subs)
	for i := range subs {
		l, err := hub.NewListener(ctx, moitessier.Conditions{Person: fmt.Sprint("p", i), Type: moitessier.Shared, Scope: "room"})
		if err != nil {
			b.Fatal(err)
		}
		c := lctx
		if !sharedCtx {
			var end context.CancelFunc
			c, end = context.WithCancel(lctx)
			defer end()
		}
		var (
			check             moitessier.CheckFunc
			interval, timeout time.Duration
		)
		if timer {
			check = func(context.Context) error { return nil }
			interval, timeout = time.Minute, time.Hour
		}
		go func() {
			defer func() { done <- struct{}{} }()
			_, _ = l.ListenUntil(c, check, func(context.Context, []moitessier.Message) error {
				if got.Add(1)%int64(subs) == 0 {
					round <- struct{}{}
				}
				return nil
			}, 0, interval, timeout)
		}()
	}
	for hub.Stats().Listening < int64(subs) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	cpu0 := processCPU()
	b.ResetTimer()
	for range b.N {
		if _, err := hub.Dispatch(ctx, "s", "room", "m"); err != nil {
			b.Fatal(err)
		}
		<-round
	}
	b.StopTimer()
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N*subs), "cpu-ns/wake")
	cancel()
	for range subs {
		<-done
	}
}

// processCPU is the processor time this process has used, user and
// system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
