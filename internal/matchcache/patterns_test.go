package matchcache

import (
	"slices"
	"testing"

	"github.com/likestripes/moitessier/internal/scopeindex"
)

func index(byID map[string][]string) *scopeindex.Index {
	idx := scopeindex.New()
	for id, ps := range byID {
		idx.Add(id, ps)
	}
	return idx
}

func TestPatterns(t *testing.T) {
	var p Patterns
	if ids, v := p.Match("a.b"); ids != nil || v != -1 {
		t.Fatalf("zero Patterns: Match = %v, %d; want nil, -1", ids, v)
	}
	if v := p.Version(); v != -1 {
		t.Fatalf("zero Patterns: Version = %d; want -1", v)
	}
	p.Set(index(map[string][]string{"l1": {"a.*"}, "l2": {"b.>"}}), 5, true)
	ids, v := p.Match("a.b")
	if !slices.Equal(ids, []string{"l1"}) || v != 5 {
		t.Fatalf("Match(a.b) = %v, %d; want [l1], 5", ids, v)
	}
	// An older load does not replace a newer one when onlyNewer.
	p.Set(index(map[string][]string{"l3": {"a.*"}}), 4, true)
	p.Set(index(map[string][]string{"l3": {"a.*"}}), 5, true)
	if ids, v := p.Match("a.b"); !slices.Equal(ids, []string{"l1"}) || v != 5 {
		t.Fatalf("after older Sets: Match(a.b) = %v, %d; want [l1], 5", ids, v)
	}
	// Without onlyNewer any version replaces: versions that are not
	// ordered (random ones) are only compared for equality.
	p.Set(index(map[string][]string{"l3": {"a.*"}}), 2, false)
	if ids, v := p.Match("a.b"); !slices.Equal(ids, []string{"l3"}) || v != 2 {
		t.Fatalf("after Set(2, false): Match(a.b) = %v, %d; want [l3], 2", ids, v)
	}
	// A first load at version 0 replaces the unloaded -1.
	var q Patterns
	q.Set(index(nil), 0, true)
	if v := q.Version(); v != 0 {
		t.Fatalf("Set(0, true) on zero Patterns: Version = %d; want 0", v)
	}
}
