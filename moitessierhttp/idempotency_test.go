package moitessierhttp_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/moitessierhttp"
)

// TestIdempotencyMismatch: an Idempotency-Key reused for another request
// gets 422 with a JSON body, stores nothing, and the client's error wraps
// moitessier.ErrIdempotencyMismatch; the same request is replayed.
func TestIdempotencyMismatch(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{
		Handlers: map[string]moitessier.HandlerFunc{
			"upper": func(ctx context.Context, id string, m moitessier.Message) (string, error) {
				return strings.ToUpper(m.Text), nil
			},
			"same": func(ctx context.Context, id string, m moitessier.Message) (string, error) {
				return m.Text, nil
			},
		},
	})
	tok := all(t, "alice")
	ctx := ctxT(t)
	l, err := e.client(tok).Join(ctx, moitessierhttp.Query{Scopes: []string{"pay"}})
	if err != nil {
		t.Fatal(err)
	}
	post := func(body string) (int, http.Header, []byte) {
		return do(t, "POST", e.ts.URL+"/v1/dispatch", tok, body, "Content-Type", "application/json", "Idempotency-Key", "k1")
	}
	if code, _, body := post(`{"scope":"pay","text":"charge 10"}`); code != http.StatusOK {
		t.Fatalf("first: %d %s", code, body)
	}
	for _, body := range []string{
		`{"scope":"pay","text":"charge 20"}`,
		`{"scope":"pay.other","text":"charge 10"}`,
		`{"scope":"pay","text":"charge 10","to":["bob"]}`,
		`{"scope":"pay","text":"charge 10","handlers":["upper"]}`,
	} {
		code, _, b := post(body)
		if code != http.StatusUnprocessableEntity || errorCode(t, b) != "idempotency_mismatch" {
			t.Fatalf("%s: %d %s, want 422 idempotency_mismatch", body, code, b)
		}
	}
	code, hdr, b := post(`{"scope":"pay","text":"charge 10"}`)
	if code != http.StatusOK || hdr.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry: %d %s", code, b)
	}
	// Handler names count: the same chain replays, another is refused.
	c := e.client(tok)
	req := moitessierhttp.DispatchRequest{Scope: "pay", Text: "x", Handlers: []string{"upper"}, IdempotencyKey: "k2"}
	if _, err := c.Dispatch(ctx, req); err != nil {
		t.Fatal(err)
	}
	if res, err := c.Dispatch(ctx, req); err != nil || !res.Replayed {
		t.Fatalf("the same chain: %+v, %v; want a replay", res, err)
	}
	req.Handlers = []string{"same"}
	if _, err := c.Dispatch(ctx, req); !errors.Is(err, moitessier.ErrIdempotencyMismatch) {
		t.Fatalf("another chain under the same key: %v, want ErrIdempotencyMismatch", err)
	}
	res, err := c.Poll(ctx, moitessierhttp.Query{Listener: l.Listener.ID, Since: "0"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, m := range res.Messages {
		texts = append(texts, m.Text)
	}
	if got, want := strings.Join(texts, "|"), "charge 10|x"; got != want {
		t.Fatalf("stored %q, want %q", got, want)
	}
}
