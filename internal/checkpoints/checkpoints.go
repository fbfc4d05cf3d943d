// Package checkpoints prepares a Store.Checkpoint argument for the stores
// that save it with one statement or in chunks of transactions.
package checkpoints

import (
	"cmp"
	"slices"

	"github.com/likestripes/moitessier"
)

// Merge returns cps with one checkpoint per subscriber of one incarnation
// (Listener, Person, Client, Created): the largest cursor given for it, and
// the last non-zero lease. The result is sorted by Listener, then Person,
// then Client, then Created, so that concurrent saves write the same rows
// in the same order, and a statement sees each row once (of two
// checkpoints of one subscriber with different non-zero Created, at most
// one names the incarnation that exists). cps is not modified.
func Merge(cps []moitessier.Checkpoint) []moitessier.Checkpoint {
	type key struct {
		l, p, c string
		created int64
	}
	merged := make(map[key]moitessier.Checkpoint, len(cps))
	for _, c := range cps {
		k := key{c.Listener, c.Person, c.Client, 0}
		if !c.Created.IsZero() {
			k.created = c.Created.UnixNano()
		}
		if m, ok := merged[k]; ok {
			c.Cursor = max(c.Cursor, m.Cursor)
			if c.LeaseExpires.IsZero() {
				c.LeaseExpires = m.LeaseExpires
			}
		}
		merged[k] = c
	}
	all := make([]moitessier.Checkpoint, 0, len(merged))
	for _, c := range merged {
		all = append(all, c)
	}
	slices.SortFunc(all, func(a, b moitessier.Checkpoint) int {
		return cmp.Or(
			cmp.Compare(a.Listener, b.Listener),
			cmp.Compare(a.Person, b.Person),
			cmp.Compare(a.Client, b.Client),
			a.Created.Compare(b.Created),
		)
	})
	return all
}
