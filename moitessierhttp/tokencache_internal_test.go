package moitessierhttp

import (
	"fmt"
	"testing"
	"time"
)

// TestTokenCacheBytes: the cache of verified tokens holds at most
// tokenCacheSize tokens and tokenCacheBytes of claims, however many
// patterns each token grants, counts what it holds exactly, and still
// serves the newest token from memory.
func TestTokenCacheBytes(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	now := time.Unix(1_800_000_000, 0)
	sign := func(person string, patterns int) string {
		c := Claims{Subject: person, ExpiresAt: now.Add(time.Hour).Unix()}
		for i := range patterns {
			c.Listen = append(c.Listen, fmt.Sprintf("p%07d", i))
		}
		tok, err := Sign(secret, c)
		if err != nil {
			t.Fatal(err)
		}
		if len(tok) > maxTokenBytes {
			t.Fatalf("a token of %d bytes, over the %d a Server reads", len(tok), maxTokenBytes)
		}
		return tok
	}
	check := func(t *testing.T, tc *tokenCache, what string) {
		t.Helper()
		sum := 0
		for _, e := range tc.m {
			sum += e.size
		}
		if sum != tc.bytes || tc.bytes > tokenCacheBytes || len(tc.m) > tokenCacheSize {
			t.Fatalf("%s: %d tokens, %d bytes counted, %d held; want at most %d tokens and %d bytes", what, len(tc.m), tc.bytes, sum, tokenCacheSize, tokenCacheBytes)
		}
	}
	for _, tc := range []struct {
		name         string
		tokens, pats int
	}{
		{"Large", tokenCacheSize + 100, 1000}, // about 12 KiB of token, 24 KB of claims each
		{"Small", 2 * tokenCacheSize, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cache tokenCache
			var last string
			for i := range tc.tokens {
				last = sign(fmt.Sprint("p", i), tc.pats)
				c, err := cache.verify(secret, last, now)
				if err != nil || c.Subject != fmt.Sprint("p", i) || len(c.Listen) != tc.pats {
					t.Fatalf("token %d: %+v, %v", i, c, err)
				}
				check(t, &cache, fmt.Sprintf("after %d tokens", i+1))
			}
			a, _ := cache.verify(secret, last, now)
			b, _ := cache.verify(secret, last, now)
			if a != b {
				t.Fatal("the newest token is verified again, not remembered")
			}
			check(t, &cache, "after hits")
		})
	}
}
