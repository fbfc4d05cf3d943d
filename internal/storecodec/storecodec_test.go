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

// TestTimeRoundTrip: a time read back (ParseTime, in UTC) is stored again
// as the same number, near the ends of the range too, whatever the zone
// of the time first stored: a store compares a handle's time with the one
// it keeps by their numbers (LeaveOf, say).
func TestTimeRoundTrip(t *testing.T) {
	for _, tc := range []time.Time{
		time.Date(1678, 1, 1, 0, 30, 0, 0, time.FixedZone("+1", 3600)),
		time.Date(2261, 12, 31, 23, 30, 0, 0, time.FixedZone("-1", -3600)),
		time.Date(1677, 9, 21, 0, 12, 43, 145224194, time.UTC),
		time.Date(2262, 4, 11, 23, 47, 16, 854775806, time.UTC),
		time.Date(2026, 12, 1, 20, 0, 0, 1, time.FixedZone("x", -7*3600)),
	} {
		ns := Time(tc)
		if ns == math.MinInt64+1 || ns == math.MaxInt64 {
			t.Errorf("Time(%v) clamped to %d; it is within the range", tc, ns)
		}
		if back := Time(ParseTime(ns)); back != ns {
			t.Errorf("Time(ParseTime(Time(%v))) = %d; want %d", tc, back, ns)
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
