package memstore

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestOrder checks the skip list against a sorted slice through random
// inserts (some repeated) and removes (some of missing keys), reading
// from random starting points.
func TestOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	o := newOrder()
	var want []subID
	cmpKeys := func(a, b subID) int {
		switch {
		case a.less(b):
			return -1
		case b.less(a):
			return 1
		}
		return 0
	}
	key := func() subID { return subID{fmt.Sprint("p", r.IntN(300)), fmt.Sprint(r.IntN(3))} }
	for step := range 5000 {
		k := key()
		i, found := slices.BinarySearchFunc(want, k, cmpKeys)
		if r.IntN(3) == 0 {
			o.remove(k)
			if found {
				want = slices.Delete(want, i, i+1)
			}
		} else {
			o.insert(k)
			if !found {
				want = slices.Insert(want, i, k)
			}
		}
		from := key()
		if step%7 == 0 {
			from = subID{}
		}
		j, _ := slices.BinarySearchFunc(want, from, cmpKeys)
		var got []subID
		o.ascend(from, func(k subID) bool { got = append(got, k); return len(got) < 20 })
		if w := want[j:min(len(want), j+20)]; !slices.Equal(got, w) && !(len(got) == 0 && len(w) == 0) {
			t.Fatalf("step %d: from %v got %v, want %v", step, from, got, w)
		}
	}
	for _, k := range slices.Clone(want) {
		o.remove(k)
	}
	if o.level != 0 || o.head[0] != nil {
		t.Fatalf("an emptied list has level %d", o.level)
	}
}
