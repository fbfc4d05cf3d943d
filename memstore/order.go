package memstore

import "math/rand/v2"

// order is a skip list of subscriber keys in (person, client) byte order:
// insert, remove and finding where a page starts take O(log n) expected
// steps, and a page one step per key. (The memory store depends on the
// standard library only, which has no ordered map.)
type order struct {
	head  []*orderNode // the first node at each level
	level int          // levels in use
}

type orderNode struct {
	key  subID
	next []*orderNode
}

// orderMaxLevel bounds the levels: with p = 1/4, enough for 4^16 keys.
const orderMaxLevel = 16

func newOrder() *order { return &order{head: make([]*orderNode, orderMaxLevel)} }

// preds fills prev with the last node before k at each level (nil: the
// head) and returns the first node at or after k at level 0.
func (o *order) preds(k subID, prev []*orderNode) *orderNode {
	var x *orderNode // nil stands for the head
	next := func(x *orderNode, lv int) *orderNode {
		if x == nil {
			return o.head[lv]
		}
		return x.next[lv]
	}
	for lv := o.level - 1; lv >= 0; lv-- {
		for n := next(x, lv); n != nil && n.key.less(k); n = next(x, lv) {
			x = n
		}
		if prev != nil {
			prev[lv] = x
		}
	}
	return next(x, 0)
}

// insert adds k if it is not there.
func (o *order) insert(k subID) {
	var prev [orderMaxLevel]*orderNode
	if n := o.preds(k, prev[:]); n != nil && n.key == k {
		return
	}
	lv := 1
	for lv < orderMaxLevel && rand.Uint32()&3 == 0 {
		lv++
	}
	// New levels start at the head (prev is nil there already).
	o.level = max(o.level, lv)
	n := &orderNode{key: k, next: make([]*orderNode, lv)}
	for i := range lv {
		if p := prev[i]; p == nil {
			n.next[i], o.head[i] = o.head[i], n
		} else {
			n.next[i], p.next[i] = p.next[i], n
		}
	}
}

// remove deletes k if it is there.
func (o *order) remove(k subID) {
	var prev [orderMaxLevel]*orderNode
	n := o.preds(k, prev[:])
	if n == nil || n.key != k {
		return
	}
	for i := range n.next {
		if p := prev[i]; p == nil {
			o.head[i] = n.next[i]
		} else {
			p.next[i] = n.next[i]
		}
	}
	for o.level > 0 && o.head[o.level-1] == nil {
		o.level--
	}
}

// ascend calls fn with the keys at or after k, in order, until it
// returns false.
func (o *order) ascend(k subID, fn func(subID) bool) {
	for n := o.preds(k, nil); n != nil && fn(n.key); n = n.next[0] {
	}
}
