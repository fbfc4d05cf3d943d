// Package storecodec converts times and cursors to the int64 values the
// PostgreSQL and Cloud Datastore stores keep.
package storecodec

import (
	"math"
	"time"

	"github.com/likestripes/moitessier"
)

// Time returns t as Unix nanoseconds. The zero time.Time is math.MinInt64,
// so that it sorts before every other time; other times before 1678 are
// math.MinInt64+1 and times after 2261 math.MaxInt64, the ends of the range
// Unix nanoseconds can hold.
func Time(t time.Time) int64 {
	switch {
	case t.IsZero():
		return math.MinInt64
	case t.Year() < 1678:
		return math.MinInt64 + 1
	case t.Year() > 2261:
		return math.MaxInt64
	}
	return t.UnixNano()
}

// ParseTime returns the UTC time of Unix nanoseconds ns, and the zero
// time.Time for math.MinInt64: the inverse of Time within its range.
func ParseTime(ns int64) time.Time {
	if ns == math.MinInt64 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}

// Seq returns c as an int64; cursors past math.MaxInt64 (such as
// moitessier.Resume) clamp to it.
func Seq(c moitessier.Cursor) int64 {
	if c > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(c)
}
