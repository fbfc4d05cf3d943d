package main

import (
	"errors"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/moitessierhttp"
)

// TestDemoHandlers: the demo's handlers (greet, upper) are offered in
// development mode, or with --demo-handlers, and not otherwise.
func TestDemoHandlers(t *testing.T) {
	const secret = "demo-handlers-test-secret-0123456789"
	tok, err := moitessierhttp.Sign([]byte(secret), moitessierhttp.Claims{Subject: "alice", Listen: []string{">"}, Dispatch: []string{">"}, ExpiresAt: time.Now().Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		args  []string
		offer bool
	}{
		{"Development", nil, true},
		{"Secret", []string{"--secret", secret}, false},
		{"SecretAndFlag", []string{"--secret", secret, "--demo-handlers"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxT(t)
			h := startServe(t, append([]string{"--store", "memory"}, tc.args...)...)
			c := &moitessierhttp.Client{BaseURL: h.url, Token: tok}
			if tc.args == nil {
				dt, err := fetchDevToken(ctx, h.url, "alice")
				if err != nil {
					t.Fatal(err)
				}
				c.Token = dt.Token
			}
			if _, err := c.Join(ctx, moitessierhttp.Query{Scopes: []string{"job"}, Type: "handler"}); err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{"greet", "upper"} {
				res, err := c.Dispatch(ctx, moitessierhttp.DispatchRequest{Scope: "job", Text: "hi", Handlers: []string{name}})
				switch {
				case tc.offer && (err != nil || res.Stored != 1):
					t.Fatalf("%s: %+v, %v; want it offered", name, res, err)
				case !tc.offer && !errors.Is(err, moitessierhttp.ErrBadRequest):
					t.Fatalf("%s: %+v, %v; want 400, no such handler", name, res, err)
				}
			}
		})
	}
}

// TestHandlerFlags: --max-handlers and --handler-budget reach the hub.
func TestHandlerFlags(t *testing.T) {
	ctx := ctxT(t)
	h := startServe(t, "--store", "memory", "--max-handlers", "2", "--handler-budget", "1ns")
	dt, err := fetchDevToken(ctx, h.url, "alice")
	if err != nil {
		t.Fatal(err)
	}
	c := &moitessierhttp.Client{BaseURL: h.url, Token: dt.Token}
	_, err = c.Dispatch(ctx, moitessierhttp.DispatchRequest{Scope: "job", Text: "hi", Handlers: []string{"upper", "upper", "upper"}})
	var he *moitessierhttp.Error
	if !errors.As(err, &he) || he.Status != 400 || he.Code != "invalid_argument" {
		t.Fatalf("3 handlers over --max-handlers 2: %v", err)
	}
	// No Handler listener: no handler runs, and the budget does not matter.
	if _, err := c.Dispatch(ctx, moitessierhttp.DispatchRequest{Scope: "job", Text: "hi", Handlers: []string{"upper", "upper"}}); err != nil {
		t.Fatal(err)
	}
	// With one, a budget of 1ns is spent before the first handler.
	if _, err := c.Join(ctx, moitessierhttp.Query{Scopes: []string{"job"}, Type: "handler"}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Dispatch(ctx, moitessierhttp.DispatchRequest{Scope: "job", Text: "hi", Handlers: []string{"upper"}})
	if !errors.As(err, &he) || he.Status != 422 || he.Code != "budget_exceeded" || !errors.Is(err, moitessier.ErrBudgetExceeded) {
		t.Fatalf("dispatch over --handler-budget 1ns: %v", err)
	}
}
