package matchcache

import (
	"strconv"
	"testing"
)

func TestGetPutDrop(t *testing.T) {
	var c Cache[int]
	if _, ok := c.Get("a"); ok {
		t.Fatal("Get on an empty cache found an entry")
	}
	c.Put("a", 1)
	c.Put("b", 2)
	c.Put("a", 3)
	if e, ok := c.Get("a"); !ok || e != 3 {
		t.Fatalf("Get(a) = %d, %v; want 3, true", e, ok)
	}
	c.Drop("a")
	if _, ok := c.Get("a"); ok {
		t.Fatal("Get(a) after Drop found an entry")
	}
	if e, ok := c.Get("b"); !ok || e != 2 {
		t.Fatalf("Get(b) = %d, %v; want 2, true", e, ok)
	}
	c.DropAll()
	if n := c.Len(); n != 0 {
		t.Fatalf("Len after DropAll = %d; want 0", n)
	}
}

func TestBounded(t *testing.T) {
	var c Cache[int]
	for i := range MaxScopes + 100 {
		c.Put(strconv.Itoa(i), i)
	}
	if n := c.Len(); n != MaxScopes {
		t.Fatalf("Len = %d; want %d", n, MaxScopes)
	}
	// Replacing a held scope drops nothing.
	last := strconv.Itoa(MaxScopes + 99)
	c.Put(last, -1)
	if n := c.Len(); n != MaxScopes {
		t.Fatalf("Len after a replacement = %d; want %d", n, MaxScopes)
	}
	if e, ok := c.Get(last); !ok || e != -1 {
		t.Fatalf("Get(%s) = %d, %v; want -1, true", last, e, ok)
	}
}
