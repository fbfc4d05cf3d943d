// Package matchcache keeps, in process, the newest Match answer of a
// bounded number of scopes. The stores whose Match costs a query
// (PostgreSQL, Cloud Datastore) use it; each store's entry carries the
// versions its answer was read at, which the store checks itself.
package matchcache

import "sync"

// MaxScopes is the number of scopes a Cache holds; putting one more drops
// an arbitrary entry.
const MaxScopes = 10_000

// Cache maps scopes to entries of type E. The zero Cache is empty and
// ready to use; it is safe for concurrent use.
type Cache[E any] struct {
	mu sync.Mutex
	m  map[string]E
}

// Get returns scope's entry, if there is one.
func (c *Cache[E]) Get(scope string) (E, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[scope]
	return e, ok
}

// Put stores e as scope's entry, replacing any, and drops an arbitrary
// other entry if the cache holds MaxScopes scopes already.
func (c *Cache[E]) Put(scope string, e E) { c.put(scope, e, true) }

// PutIfRoom stores e as scope's entry, replacing any, unless the cache
// holds MaxScopes other scopes: it drops no entry to make room. It reports
// whether it stored e.
func (c *Cache[E]) PutIfRoom(scope string, e E) bool { return c.put(scope, e, false) }

// put stores e as scope's entry; when the cache is full and scope is not
// in it, it drops an arbitrary entry if evict, else stores nothing.
func (c *Cache[E]) put(scope string, e E, evict bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]E)
	}
	if _, ok := c.m[scope]; !ok && len(c.m) >= MaxScopes {
		if !evict {
			return false
		}
		for k := range c.m { // drop an arbitrary entry
			delete(c.m, k)
			break
		}
	}
	c.m[scope] = e
	return true
}

// Drop removes scope's entry.
func (c *Cache[E]) Drop(scope string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, scope)
}

// DropAll removes every entry.
func (c *Cache[E]) DropAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.m)
}

// Len returns the number of entries.
func (c *Cache[E]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
