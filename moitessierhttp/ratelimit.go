package moitessierhttp

import (
	"sync"
	"time"
)

// limiter is a token bucket per person: rate tokens a second, up to burst.
// Dispatches take one token each (allow); handler time is charged after
// the fact (charge) and may take a bucket below zero, a debt that allows
// nothing until it is repaid (positive).
type limiter struct {
	rate, burst float64

	mu      sync.Mutex
	buckets map[string]*bucket
	calls   int
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(rate float64, burst int) *limiter {
	return &limiter{rate: rate, burst: float64(burst), buckets: map[string]*bucket{}}
}

// allow takes a token from person's bucket, or says how long until one is there.
func (l *limiter) allow(person string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	if l.calls%4096 == 0 {
		l.sweep(now)
	}
	b := l.refill(person, now)
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, l.wait(b, 1)
}

// refill returns person's bucket, refilled up to now. Call with mu held.
func (l *limiter) refill(person string, now time.Time) *bucket {
	b := l.buckets[person]
	if b == nil {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[person] = b
	}
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(l.burst, b.tokens+el.Seconds()*l.rate)
		b.last = now
	}
	return b
}

// wait is how long until b holds more than need tokens, at least 1 ms.
func (l *limiter) wait(b *bucket, need float64) time.Duration {
	wait := time.Duration((need - b.tokens) / l.rate * float64(time.Second))
	return max(wait, time.Millisecond)
}

// positive reports whether person's bucket holds anything (is not in
// debt), or says how long until it will; it takes nothing.
func (l *limiter) positive(person string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.refill(person, now)
	if b.tokens > 0 {
		return true, 0
	}
	return false, l.wait(b, 0)
}

// charge takes cost tokens from person's bucket, into debt if need be.
func (l *limiter) charge(person string, cost float64, now time.Time) {
	if cost <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	if l.calls%4096 == 0 {
		l.sweep(now)
	}
	l.refill(person, now).tokens -= cost
}

// sweep forgets the buckets that have refilled: they are as good as new.
// One in debt is kept until it would have refilled.
func (l *limiter) sweep(now time.Time) {
	for p, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, p)
		}
	}
}
