package scopeindex

import (
	"slices"
	"strings"
	"testing"

	"github.com/likestripes/moitessier"
)

// FuzzIndex checks that the index matches exactly what MatchScope says, for
// any patterns and scope, and forgets removed listeners.
func FuzzIndex(f *testing.F) {
	f.Add("a.*|a.>|a.b|>|*.b", "a.b")
	f.Add("x|x.y.z|x.*.z", "x.q.z")
	f.Add("a..b|a.*.b", "a..b")
	f.Fuzz(func(t *testing.T, patterns, scope string) {
		if moitessier.ValidateScope(scope) != nil {
			return
		}
		var ps []string
		for _, p := range strings.Split(patterns, "|") {
			if moitessier.ValidatePattern(p) == nil {
				ps = append(ps, p)
			}
		}
		x := New()
		for i, p := range ps {
			x.Add(string(rune('A'+i%26))+p, []string{p})
		}
		x.Add("multi", ps)
		var got []string
		x.Match(scope, func(id string) { got = append(got, id) })
		var want []string
		any := false
		for i, p := range ps {
			if moitessier.MatchScope(p, scope) {
				want = append(want, string(rune('A'+i%26))+p)
				any = true
			}
		}
		if any {
			want = append(want, "multi")
		}
		slices.Sort(got)
		slices.Sort(want)
		want = slices.Compact(want)
		if !slices.Equal(got, want) {
			t.Fatalf("Match(%q) over %q = %q, want %q", scope, ps, got, want)
		}
		for i, p := range ps {
			x.Remove(string(rune('A'+i%26))+p, []string{p})
		}
		x.Remove("multi", ps)
		x.Match(scope, func(id string) { t.Fatalf("removed listener %s still matches", id) })
		if len(x.exact) != 0 || len(x.root.children) != 0 || x.root.star != nil {
			t.Fatalf("index not empty after removing everything: %d exact", len(x.exact))
		}
	})
}
