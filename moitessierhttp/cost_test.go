package moitessierhttp_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
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
		MaxMessageBytes: 100, MaxHandlers: 3, HandlerBudget: 50 * time.Millisecond,
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
