package moitessierhttp

import (
	"sync"
	"time"
)

// limiter is a token bucket per person: rate tokens a second, up to burst.
// Dispatches take one token each (allow). Handler time is reserved before
// a dispatch (reserve) and what it did not use given back after (give); a
// handler that overran its reservation takes the bucket below zero, a
// debt that allows nothing until it is repaid.
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

// reserve takes from person's bucket half of what it holds, at most most,
// and returns it; if that would be less than least, it takes nothing and
// says how long until it would not be. Halving lets a person's concurrent
// dispatches all run, on ever smaller shares, while what they hold
// together never passes what the bucket held.
func (l *limiter) reserve(person string, now time.Time, most, least float64) (float64, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	if l.calls%4096 == 0 {
		l.sweep(now)
	}
	b := l.refill(person, now)
	got := min(most, b.tokens/2)
	if got < least {
		return 0, l.wait(b, 2*least)
	}
	b.tokens -= got
	return got, 0
}

// give puts v back into person's bucket, up to burst; a negative v takes
// more, into debt if need be.
func (l *limiter) give(person string, v float64, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.refill(person, now)
	b.tokens = min(l.burst, b.tokens+v)
}

// waitFor says how long until person's bucket holds need.
func (l *limiter) waitFor(person string, need float64, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.wait(l.refill(person, now), need)
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
