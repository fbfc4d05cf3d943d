// Package storecodec converts times and cursors to the int64 values the
// PostgreSQL and Cloud Datastore stores keep.
package storecodec

import (
	"math"
	"time"

	"github.com/likestripes/moitessier"
)

// Time returns t as Unix nanoseconds. The zero time.Time is math.MinInt64,
// so that it sorts before every other time; other times before
// 1677-09-21T00:12:43.145224193Z are math.MinInt64+1 and times after
// 2262-04-11T23:47:16.854775807Z math.MaxInt64, the ends of the range Unix
// nanoseconds can hold. The bounds are instants, not years in t's zone, so
// that Time(ParseTime(ns)) is ns for every ns.
func Time(t time.Time) int64 {
	switch {
	case t.IsZero():
		return math.MinInt64
	case t.Before(minTime):
		return math.MinInt64 + 1
	case t.After(maxTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// The first and last times Time keeps as they are.
var (
	minTime = time.Unix(0, math.MinInt64+1)
	maxTime = time.Unix(0, math.MaxInt64)
)

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
