// Package scopeindex matches concrete scopes against the scope patterns of
// many listeners, in memory. Stores that can keep their listener set in
// process (memory, SQLite) use it so that a dispatch costs no query to match.
package scopeindex

import "strings"

// Index maps scope patterns to listener IDs. It is not safe for concurrent
// use; callers hold their own lock.
type Index struct {
	exact map[string]idSet // by pattern without wildcards
	root  node
	multi map[string]int // listeners with more than one pattern
}

type node struct {
	children map[string]*node
	star     *node
	rest     map[string]struct{} // ids whose pattern ends in ">" here
	ids      map[string]struct{} // ids whose pattern ends here
}

// New returns an empty index.
func New() *Index {
	return &Index{exact: map[string]idSet{}, multi: map[string]int{}}
}

func isWild(tok string) bool { return tok == "*" || tok == ">" }

func wild(pattern string) bool {
	for tok := range strings.SplitSeq(pattern, ".") {
		if isWild(tok) {
			return true
		}
	}
	return false
}

// Add indexes listener id under each of its valid patterns.
func (x *Index) Add(id string, patterns []string) {
	if len(patterns) > 1 {
		x.multi[id] = len(patterns)
	}
	for _, p := range patterns {
		if !wild(p) {
			set := x.exact[p]
			set.add(id)
			x.exact[p] = set
			continue
		}
		n := &x.root
		toks := strings.Split(p, ".")
		for i, tok := range toks {
			if tok == ">" && i == len(toks)-1 {
				if n.rest == nil {
					n.rest = map[string]struct{}{}
				}
				n.rest[id] = struct{}{}
				n = nil
				break
			}
			n = n.child(tok)
		}
		if n != nil {
			if n.ids == nil {
				n.ids = map[string]struct{}{}
			}
			n.ids[id] = struct{}{}
		}
	}
}

func (n *node) child(tok string) *node {
	if tok == "*" {
		if n.star == nil {
			n.star = &node{}
		}
		return n.star
	}
	if n.children == nil {
		n.children = map[string]*node{}
	}
	c := n.children[tok]
	if c == nil {
		c = &node{}
		n.children[tok] = c
	}
	return c
}

// Remove drops listener id from the index; patterns are those it was added with.
func (x *Index) Remove(id string, patterns []string) {
	delete(x.multi, id)
	for _, p := range patterns {
		if !wild(p) {
			if set, ok := x.exact[p]; ok {
				if set.remove(id) {
					delete(x.exact, p)
				} else {
					x.exact[p] = set
				}
			}
			continue
		}
		x.root.remove(strings.Split(p, "."), id)
	}
}

// remove deletes id below n and reports whether n became empty.
func (n *node) remove(toks []string, id string) bool {
	if len(toks) == 0 {
		delete(n.ids, id)
	} else if toks[0] == ">" && len(toks) == 1 {
		delete(n.rest, id)
	} else if toks[0] == "*" {
		if n.star != nil && n.star.remove(toks[1:], id) {
			n.star = nil
		}
	} else if c := n.children[toks[0]]; c != nil && c.remove(toks[1:], id) {
		delete(n.children, toks[0])
	}
	return len(n.ids) == 0 && len(n.rest) == 0 && n.star == nil && len(n.children) == 0
}

// Match calls fn once for every listener with a pattern matching the
// concrete scope.
func (x *Index) Match(scope string, fn func(id string)) {
	var seen map[string]struct{}
	emit := func(id string) {
		if len(x.multi) > 0 {
			if _, ok := x.multi[id]; ok {
				if seen == nil {
					seen = map[string]struct{}{}
				}
				if _, dup := seen[id]; dup {
					return
				}
				seen[id] = struct{}{}
			}
		}
		fn(id)
	}
	if set, ok := x.exact[scope]; ok {
		if set.many == nil {
			emit(set.one)
		}
		for id := range set.many {
			emit(id)
		}
	}
	if x.root.children != nil || x.root.star != nil || x.root.rest != nil {
		x.root.match(strings.Split(scope, "."), emit)
	}
}

func (n *node) match(toks []string, emit func(string)) {
	if len(toks) == 0 {
		for id := range n.ids {
			emit(id)
		}
		return
	}
	for id := range n.rest {
		emit(id)
	}
	if c := n.children[toks[0]]; c != nil {
		c.match(toks[1:], emit)
	}
	if n.star != nil {
		n.star.match(toks[1:], emit)
	}
}

// idSet is the IDs of the listeners of one exact pattern: most patterns
// have one (a person's own scope), held without a map.
type idSet struct {
	one  string              // the ID, when the set has one (many is nil)
	many map[string]struct{} // the IDs, when it has more than one
}

func (s *idSet) add(id string) {
	switch {
	case s.many != nil:
		s.many[id] = struct{}{}
	case s.one == "" || s.one == id:
		s.one = id
	default:
		s.many = map[string]struct{}{s.one: {}, id: {}}
		s.one = ""
	}
}

// remove removes id and reports whether the set is then empty.
func (s *idSet) remove(id string) bool {
	if s.many == nil {
		if s.one == id {
			s.one = ""
		}
		return s.one == ""
	}
	delete(s.many, id)
	if len(s.many) == 1 {
		for rest := range s.many {
			s.one = rest
		}
		s.many = nil
	}
	return s.many == nil && s.one == ""
}
