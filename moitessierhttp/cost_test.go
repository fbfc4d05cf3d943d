package moitessierhttp_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/memstore"
	"github.com/likestripes/moitessier/moitessierhttp"
)

// TestHandlerChainLimits: the hub's bounds on a dispatch's handler chain
// reach an HTTP client as a status, a JSON body and an errors.Is-able error.
func TestHandlerChainLimits(t *testing.T) {
	var calls atomic.Int64
	e := newEnvOn(t, memstore.New(), moitessier.Options{
		MaxMessageBytes: 100, MaxHandlers: 3, MaxRecipients: 5, HandlerBudget: 50 * time.Millisecond,
	}, moitessierhttp.Config{
		Handlers: map[string]moitessier.HandlerFunc{
			"grow": func(ctx context.Context, id string, m moitessier.Message) (string, error) {
				calls.Add(1)
				return m.Text + m.Text, nil
			},
			"wait": func(ctx context.Context, id string, m moitessier.Message) (string, error) {
				calls.Add(1)
				<-ctx.Done()
				return "", ctx.Err()
			},
		},
	})
	ts := e.ts
	ctx := ctxT(t)
	tok := all(t, "alice")
	if _, err := (&moitessierhttp.Client{BaseURL: ts.URL, Token: tok}).Join(ctx, moitessierhttp.Query{Scopes: []string{"job"}, Type: "handler"}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		body     string
		status   int
		code     string
		sentinel error
		calls    int64
	}{
		{"TooManyHandlers", `{"scope":"job","text":"x","handlers":["grow","grow","grow","grow"]}`, http.StatusBadRequest, "invalid_argument", moitessier.ErrInvalidArgument, 0},
		// The count is checked before any name is looked up.
		{"TooManyUnknownHandlers", `{"scope":"job","text":"x","handlers":["a","b","c","d"]}`, http.StatusBadRequest, "invalid_argument", moitessier.ErrInvalidArgument, 0},
		{"TooManyRecipients", `{"scope":"job","text":"x","to":["a","b","c","d","e","f"]}`, http.StatusBadRequest, "invalid_argument", moitessier.ErrInvalidArgument, 0},
		{"TooLargeMidChain", `{"scope":"job","text":"` + strings.Repeat("x", 40) + `","handlers":["grow","grow","grow"]}`, http.StatusRequestEntityTooLarge, "too_large", moitessier.ErrTooLarge, 2},
		{"Budget", `{"scope":"job","text":"x","handlers":["wait","wait"]}`, http.StatusUnprocessableEntity, "budget_exceeded", moitessier.ErrBudgetExceeded, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			calls.Store(0)
			code, _, body := do(t, "POST", ts.URL+"/v1/dispatch", tok, tc.body, "Content-Type", "application/json")
			if code != tc.status || errorCode(t, body) != tc.code {
				t.Fatalf("%d %s, want %d %s", code, body, tc.status, tc.code)
			}
			if tc.status == http.StatusBadRequest {
				// The same request as text, its lists in the query.
				var req moitessierhttp.DispatchRequest
				if err := json.Unmarshal([]byte(tc.body), &req); err != nil {
					t.Fatal(err)
				}
				q := url.Values{"scope": {req.Scope}, "handler": req.Handlers, "to": req.To}
				code, _, body := do(t, "POST", ts.URL+"/v1/dispatch?"+q.Encode(), tok, req.Text)
				if code != tc.status || errorCode(t, body) != tc.code {
					t.Fatalf("as text: %d %s, want %d %s", code, body, tc.status, tc.code)
				}
			}
			if got := calls.Load(); got != tc.calls {
				t.Fatalf("%d handler calls, want %d", got, tc.calls)
			}
			req := moitessierhttp.DispatchRequest{Scope: "job"}
			if err := json.Unmarshal([]byte(tc.body), &req); err != nil {
				t.Fatal(err)
			}
			if _, err := (&moitessierhttp.Client{BaseURL: ts.URL, Token: tok}).Dispatch(ctx, req); !errors.Is(err, tc.sentinel) {
				t.Fatalf("client: %v, want %v", err, tc.sentinel)
			}
		})
	}
}

// TestHandlerChainClientGone: when the client of a dispatch goes away, the
// request's context ends and the handler chain goes no further.
func TestHandlerChainClientGone(t *testing.T) {
	var calls atomic.Int64
	started := make(chan struct{}, 8)
	ended := make(chan error, 8)
	e := newEnvOn(t, memstore.New(), moitessier.Options{HandlerBudget: -1}, moitessierhttp.Config{
		Handlers: map[string]moitessier.HandlerFunc{
			"wait": func(ctx context.Context, id string, m moitessier.Message) (string, error) {
				calls.Add(1)
				started <- struct{}{}
				select {
				case <-ctx.Done():
				case <-time.After(20 * time.Second):
				}
				ended <- ctx.Err()
				return m.Text, nil
			},
		},
	})
	ts := e.ts
	tok := all(t, "alice")
	if _, err := (&moitessierhttp.Client{BaseURL: ts.URL, Token: tok}).Join(ctxT(t), moitessierhttp.Query{Scopes: []string{"job"}, Type: "handler"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, ct, body, query string }{
		{"JSON", "application/json", `{"scope":"job","text":"x","handlers":["wait","wait","wait"]}`, ""},
		{"Text", "text/plain", "x", "?scope=job&handler=wait&handler=wait&handler=wait"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls.Store(0)
			errsBefore := e.srv.Metrics().Snapshot().DispatchErrors
			ctx, cancel := context.WithCancel(context.Background())
			req, err := http.NewRequestWithContext(ctx, "POST", ts.URL+"/v1/dispatch"+tc.query, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Content-Type", tc.ct)
			done := make(chan struct{})
			go func() {
				defer close(done)
				if resp, err := http.DefaultClient.Do(req); err == nil {
					resp.Body.Close()
				}
			}()
			<-started
			cancel() // the client goes away during the first handler call
			<-done
			select {
			case err := <-ended:
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("handler's context ended with %v, want context.Canceled", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the handler's context did not end when the client went away")
			}
			waitFor(t, "the dispatch to fail", func() bool { return e.srv.Metrics().Snapshot().DispatchErrors > errsBefore })
			if n := calls.Load(); n != 1 {
				t.Fatalf("%d handler calls, want 1: none after the client went away", n)
			}
		})
	}
}

// TestHandlerTimePerPerson: the handler time one person's dispatches use
// is bounded per person over time (Config.HandlerTimeRate). A dispatch
// naming handlers gets half of its sender's bucket as its budget; one that
// runs out of it, or finds the bucket (nearly) empty, is 429
// handler_budget with Retry-After, the latter before any handler runs,
// until the bucket refills; a dispatch naming none, and another person,
// are not affected.
func TestHandlerTimePerPerson(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	var calls atomic.Int64
	var deadline atomic.Int64 // of the last handler call's context, from its start
	e := newEnvOn(t, memstore.New(), moitessier.Options{}, moitessierhttp.Config{
		DispatchRate: -1, HandlerTimeRate: 100 * time.Millisecond, HandlerTimeBurst: 100 * time.Millisecond, Now: clock,
		Handlers: map[string]moitessier.HandlerFunc{
			// slow ignores its context: it overruns any budget under 150 ms.
			"slow": func(ctx context.Context, id string, m moitessier.Message) (string, error) {
				calls.Add(1)
				time.Sleep(150 * time.Millisecond)
				return m.Text, nil
			},
			"fast": func(ctx context.Context, id string, m moitessier.Message) (string, error) {
				calls.Add(1)
				if dl, ok := ctx.Deadline(); ok {
					deadline.Store(int64(time.Until(dl)))
				}
				return m.Text, nil
			},
		},
	})
	sign := func(person string) string {
		tok, err := moitessierhttp.Sign(secret, moitessierhttp.Claims{Subject: person, Listen: []string{">"}, Dispatch: []string{">"}, ExpiresAt: clock().Add(time.Hour).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	alice, bob := sign("alice"), sign("bob")
	if _, err := (&moitessierhttp.Client{BaseURL: e.ts.URL, Token: alice}).Join(ctxT(t), moitessierhttp.Query{Scopes: []string{"job"}, Type: "handler"}); err != nil {
		t.Fatal(err)
	}
	dispatch := func(tok, handler string) (int, http.Header, []byte) {
		t.Helper()
		body := `{"scope":"job","text":"x"}`
		if handler != "" {
			body = `{"scope":"job","text":"x","handlers":["` + handler + `"]}`
		}
		return do(t, "POST", e.ts.URL+"/v1/dispatch", tok, body, "Content-Type", "application/json")
	}
	wantHandlerBudget := func(what string, code int, h http.Header, body []byte) {
		t.Helper()
		if code != http.StatusTooManyRequests || errorCode(t, body) != "handler_budget" {
			t.Fatalf("%s: %d %s, want 429 handler_budget", what, code, body)
		}
		if ra, err := strconv.Atoi(h.Get("Retry-After")); err != nil || ra < 1 {
			t.Fatalf("%s: Retry-After %q", what, h.Get("Retry-After"))
		}
	}
	// A full bucket of 100 ms gives the first dispatch 50 ms: fast runs
	// within it.
	if code, _, body := dispatch(alice, "fast"); code != http.StatusOK {
		t.Fatalf("first dispatch: %d %s", code, body)
	}
	if dl := time.Duration(deadline.Load()); dl <= 0 || dl > 50*time.Millisecond {
		t.Fatalf("the handler's budget was %v, want half the bucket, 50 ms", dl)
	}
	// slow overruns its share (about 50 ms of a 2 s HandlerBudget): 429,
	// and alice owes what it overran.
	code, h, body := dispatch(alice, "slow")
	wantHandlerBudget("past a share", code, h, body)
	// In debt, a dispatch naming handlers runs none.
	calls.Store(0)
	code, h, body = dispatch(alice, "fast")
	wantHandlerBudget("in debt", code, h, body)
	if n := calls.Load(); n != 0 {
		t.Fatalf("%d handler calls on a refused dispatch", n)
	}
	_, err := (&moitessierhttp.Client{BaseURL: e.ts.URL, Token: alice}).Dispatch(ctxT(t), moitessierhttp.DispatchRequest{Scope: "job", Text: "x", Handlers: []string{"fast"}})
	var he *moitessierhttp.Error
	if !errors.As(err, &he) || !errors.Is(err, moitessierhttp.ErrHandlerBudget) || errors.Is(err, moitessierhttp.ErrRateLimited) || he.RetryAfter < time.Second {
		t.Fatalf("client error %v, want ErrHandlerBudget with a Retry-After", err)
	}
	if n := e.srv.Metrics().Snapshot().RateLimited; n != 3 {
		t.Fatalf("moitessier_rate_limited_total %d, want the 3 refusals", n)
	}
	// Without handlers alice may dispatch; bob has a bucket of his own.
	if code, _, body := dispatch(alice, ""); code != http.StatusOK {
		t.Fatalf("alice without handlers: %d %s", code, body)
	}
	if code, _, body := dispatch(bob, "fast"); code != http.StatusOK {
		t.Fatalf("bob: %d %s", code, body)
	}
	// The debt (about 50 ms) is repaid at 100 ms a second: after two
	// seconds alice may use handlers again.
	advance(2 * time.Second)
	if code, _, body := dispatch(alice, "fast"); code != http.StatusOK {
		t.Fatalf("alice after the bucket refilled: %d %s", code, body)
	}
}
