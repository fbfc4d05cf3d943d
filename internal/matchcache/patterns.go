package matchcache

import (
	"sync"

	"github.com/likestripes/moitessier/internal/scopeindex"
)

// Patterns is a process's copy of every wildcard pattern of a store, in a
// scope index, with the store's pattern version it was loaded at. The zero
// Patterns is empty, at version -1 (not loaded); it is safe for concurrent
// use.
type Patterns struct {
	mu      sync.RWMutex
	loaded  bool
	version int64
	idx     *scopeindex.Index
}

// Match returns the IDs of the listeners with a pattern that matches
// scope, and the version they were loaded at.
func (p *Patterns) Match(scope string) (ids []string, version int64) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.idx != nil {
		p.idx.Match(scope, func(id string) { ids = append(ids, id) })
	}
	return ids, p.versionLocked()
}

// Version returns the version the patterns were loaded at, or -1.
func (p *Patterns) Version() int64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.versionLocked()
}

func (p *Patterns) versionLocked() int64 {
	if !p.loaded {
		return -1
	}
	return p.version
}

// Set replaces the patterns with idx, loaded at version. With onlyNewer,
// it keeps the current ones unless version is greater than theirs: for a
// store whose versions only grow, so that a slow reload does not undo a
// newer one.
func (p *Patterns) Set(idx *scopeindex.Index, version int64, onlyNewer bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if onlyNewer && version <= p.versionLocked() {
		return
	}
	p.idx, p.version, p.loaded = idx, version, true
}
