package moitessierhttp_test

import (
	"fmt"
	"testing"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/moitessierhttp"
)

// BenchmarkJoinBigRoom measures POST /v1/listeners (join a Shared listener
// and read one's cursor) on a listener with n other subscribers.
func BenchmarkJoinBigRoom(b *testing.B) {
	for _, n := range []int{10, 7400} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			e := newEnv(b, moitessierhttp.Config{})
			for i := range n {
				if _, err := e.hub.NewListener(ctxT(b), moitessier.Conditions{Person: fmt.Sprintf("p%05d", i), Type: moitessier.Shared, Scope: "bench.room"}); err != nil {
					b.Fatal(err)
				}
			}
			c := e.client(all(b, "newbie"))
			q := moitessierhttp.Query{Scopes: []string{"bench.room"}}
			b.ResetTimer()
			for range b.N {
				if _, err := c.Join(ctxT(b), q); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
