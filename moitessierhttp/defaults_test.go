package moitessierhttp_test

import (
	"errors"
	"strconv"
	"testing"

	"github.com/likestripes/moitessier/moitessierhttp"
)

// TestDefaultDispatchRate: a Server whose Config says nothing limits each
// person to DefaultDispatchRate dispatches a second (burst twice that); a
// negative rate means no limit.
func TestDefaultDispatchRate(t *testing.T) {
	if d := moitessierhttp.DefaultConfig(); d.DispatchRate != moitessierhttp.DefaultDispatchRate || d.DispatchBurst != 2*moitessierhttp.DefaultDispatchRate {
		t.Fatalf("DefaultConfig: rate %v, burst %d", d.DispatchRate, d.DispatchBurst)
	}
	count := func(cfg moitessierhttp.Config) (ok, limited int) {
		e := newEnv(t, cfg)
		c := e.client(all(t, "alice"))
		for range 150 {
			_, err := c.Dispatch(ctxT(t), moitessierhttp.DispatchRequest{Scope: "rate", Text: "x"})
			switch {
			case err == nil:
				ok++
			case errors.Is(err, moitessierhttp.ErrRateLimited):
				limited++
			default:
				t.Fatal(err)
			}
		}
		return ok, limited
	}
	if ok, limited := count(moitessierhttp.Config{}); limited == 0 || ok < 100 {
		t.Fatalf("default config: %d dispatches went, %d limited; want the 100 of the burst and some limited", ok, limited)
	}
	if ok, limited := count(moitessierhttp.Config{DispatchRate: -1}); limited != 0 || ok != 150 {
		t.Fatalf("DispatchRate -1: %d went, %d limited; want all 150", ok, limited)
	}
}

// TestDefaultJoinRate: with the default Config, a page that joins a good
// many listeners at once is never limited, and a person who joins in a
// loop is; DefaultConfig says so.
func TestDefaultJoinRate(t *testing.T) {
	if d := moitessierhttp.DefaultConfig(); d.JoinRate != moitessierhttp.DefaultJoinRate || d.JoinBurst != 5*moitessierhttp.DefaultJoinRate {
		t.Fatalf("DefaultConfig: join rate %v, burst %d", d.JoinRate, d.JoinBurst)
	}
	e := newEnv(t, moitessierhttp.Config{})
	c := e.client(all(t, "alice"))
	ok, limited := 0, 0
	for i := range 150 {
		_, err := c.Join(ctxT(t), moitessierhttp.Query{Scopes: []string{"page." + strconv.Itoa(i%20)}})
		switch {
		case err == nil:
			ok++
		case errors.Is(err, moitessierhttp.ErrRateLimited):
			limited++
		default:
			t.Fatal(err)
		}
		if i < 50 && err != nil {
			t.Fatalf("join %d of a page load: %v", i, err)
		}
	}
	if limited == 0 || ok < 5*moitessierhttp.DefaultJoinRate {
		t.Fatalf("150 joins in a loop: %d went, %d limited; want the burst and some limited", ok, limited)
	}
}
