package storecodec

import (
	"math"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
)

func TestTime(t *testing.T) {
	now := time.Date(2026, 11, 30, 1, 2, 3, 4, time.FixedZone("x", 3600))
	for _, tc := range []struct {
		in   time.Time
		ns   int64
		back time.Time
	}{
		{time.Time{}, math.MinInt64, time.Time{}},
		{now, now.UnixNano(), now.UTC()},
		{time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC), math.MinInt64 + 1, time.Unix(0, math.MinInt64+1).UTC()},
		{time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC), math.MaxInt64, time.Unix(0, math.MaxInt64).UTC()},
	} {
		ns := Time(tc.in)
		if ns != tc.ns {
			t.Errorf("Time(%v) = %d; want %d", tc.in, ns, tc.ns)
		}
		if got := ParseTime(ns); !got.Equal(tc.back) || got.Location() != tc.back.Location() {
			t.Errorf("ParseTime(%d) = %v; want %v", ns, got, tc.back)
		}
	}
}

func TestSeq(t *testing.T) {
	for _, tc := range []struct {
		in   moitessier.Cursor
		want int64
	}{
		{0, 0},
		{42, 42},
		{math.MaxInt64, math.MaxInt64},
		{moitessier.Resume, math.MaxInt64},
	} {
		if got := Seq(tc.in); got != tc.want {
			t.Errorf("Seq(%d) = %d; want %d", tc.in, got, tc.want)
		}
	}
}
