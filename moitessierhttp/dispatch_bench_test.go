package moitessierhttp_test

import (
	"fmt"
	"testing"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/moitessierhttp"
)

// BenchmarkDispatchBigRoom measures POST /v1/dispatch to a scope that n
// Private listeners of the sender (one per client) hear, so that every
// listener reached is counted in the answer.
func BenchmarkDispatchBigRoom(b *testing.B) {
	for _, n := range []int{10, 500} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			e := newEnv(b, moitessierhttp.Config{DispatchRate: -1})
			for i := range n {
				if _, err := e.hub.NewListener(ctxT(b), moitessier.Conditions{Person: "sender", Client: fmt.Sprintf("c%05d", i), Type: moitessier.Private, Scope: "bench.room"}); err != nil {
					b.Fatal(err)
				}
			}
			c := e.client(all(b, "sender"))
			req := moitessierhttp.DispatchRequest{Scope: "bench.room", Text: "hi"}
			b.ResetTimer()
			for range b.N {
				res, err := c.Dispatch(ctxT(b), req)
				if err != nil {
					b.Fatal(err)
				}
				if res.Reached != n || res.Stored != n {
					b.Fatalf("reached %d, stored %d; want %d", res.Reached, res.Stored, n)
				}
			}
		})
	}
}
