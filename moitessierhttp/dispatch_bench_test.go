package moitessierhttp_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
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

// BenchmarkDispatchRoundTrip measures one publisher's dispatches over
// HTTP on loopback, one after the other, each sent as moitessier bench's
// http-fanout-1 publishers send theirs (a 100-byte text, the scope in the
// query) and its answer read: to the hub, on the memory store, with one
// listener of the scope whose one subscriber is not listening (hub); and
// to a handler that only reads the body and answers (bare), what any
// dispatch over HTTP costs on the machine before the hub does anything.
// A store's commit adds to the first; against the second, it bounds what
// a hub's publisher can reach on a store (see the README's benchmarks).
func BenchmarkDispatchRoundTrip(b *testing.B) {
	text := strings.Repeat(".", 100)
	run := func(b *testing.B, url, tok string) {
		hc := &http.Client{}
		ctx := ctxT(b)
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(text))
			if err != nil {
				b.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := hc.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatal(resp.Status)
			}
		}
	}
	b.Run("hub", func(b *testing.B) {
		e := newEnv(b, moitessierhttp.Config{DispatchRate: -1})
		if _, err := e.hub.NewListener(ctxT(b), moitessier.Conditions{Person: "sender", Type: moitessier.Shared, Scope: "bench.rtt"}); err != nil {
			b.Fatal(err)
		}
		run(b, e.ts.URL+"/v1/dispatch?scope=bench.rtt", all(b, "sender"))
	})
	b.Run("bare", func(b *testing.B) {
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"stored":1,"reached":1}`))
		}))
		b.Cleanup(ts.Close)
		run(b, ts.URL+"/v1/dispatch?scope=bench.rtt", "-")
	})
}
