package moitessierhttp_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/memstore"
	"github.com/likestripes/moitessier/moitessierhttp"
)

// Serve a hub over HTTP, dispatch with a token, and read the message with a
// long-poll.
func Example() {
	hub, _ := moitessier.New(memstore.New(), moitessier.Options{})
	defer hub.Close()
	secret := []byte("a secret of at least 32 bytes...")
	srv, _ := moitessierhttp.New(hub, moitessierhttp.Config{Secret: secret})
	mux := http.NewServeMux()
	mux.Handle("/v1/", srv)
	ts := httptest.NewServer(mux)
	defer ts.Close()
	defer srv.Close()

	tok, _ := moitessierhttp.Sign(secret, moitessierhttp.Claims{
		Subject:   "alice",
		Listen:    []string{"room.>"},
		Dispatch:  []string{"room.>"},
		ExpiresAt: time.Now().Add(time.Hour).Unix(),
	})
	c := &moitessierhttp.Client{BaseURL: ts.URL, Token: tok}
	ctx := context.Background()
	room := moitessierhttp.Query{Scopes: []string{"room.1"}}
	j, _ := c.Join(ctx, room) // subscribe, so that the dispatch reaches alice
	_, _ = c.Dispatch(ctx, moitessierhttp.DispatchRequest{Scope: "room.1", Text: "hello"})
	room.Since = fmt.Sprint(j.Cursor)
	res, _ := c.Poll(ctx, room, time.Second)
	for _, m := range res.Messages {
		fmt.Printf("#%d %s: %s\n", m.Seq, m.Sender, m.Text)
	}
	_, err := c.Dispatch(ctx, moitessierhttp.DispatchRequest{Scope: "lobby", Text: "hi"})
	fmt.Println(err)
	// Output:
	// #1 alice: hello
	// 403 forbidden: dispatch to "lobby": moitessierhttp: forbidden: the token does not grant it
}
