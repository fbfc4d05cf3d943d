package moitessierhttp_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/moitessierhttp"
)

// TestNoListenerOracle checks that a token learns nothing about listeners
// it may not read: another person's listener and a listener that does not
// exist get the same answer, byte for byte but for the ID.
func TestNoListenerOracle(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{})
	ctx := ctxT(t)
	alice := e.client(all(t, "alice"))
	private, err := alice.Join(ctx, moitessierhttp.Query{Scopes: []string{"notify.alice"}, Type: "private"})
	if err != nil {
		t.Fatal(err)
	}
	shared, err := alice.Join(ctx, moitessierhttp.Query{Scopes: []string{"secret.room"}})
	if err != nil {
		t.Fatal(err)
	}
	absentPrivate := mustID(t, moitessier.Conditions{Person: "alice", Type: moitessier.Private, Scope: "notify.nobody"})
	absentShared := mustID(t, moitessier.Conditions{Person: "x", Type: moitessier.Shared, Scope: "secret.nobody"})
	for _, tc := range []struct {
		name, tok, exists, absent string
	}{
		{"PrivateOfAnother", all(t, "bob"), private.Listener.ID, absentPrivate},
		{"SharedOutOfScope", token(t, "bob", []string{"public.>"}, nil), shared.Listener.ID, absentShared},
		{"NoListenGrant", token(t, "bob", nil, []string{">"}), shared.Listener.ID, absentShared},
	} {
		for _, path := range []string{"/v1/listeners/%s", "/v1/listeners/%s/subscribers", "/v1/poll?timeout=0.01&listener=%s", "/v1/events?listener=%s"} {
			t.Run(tc.name+"/"+strings.Fields(path)[0], func(t *testing.T) {
				c1, _, b1 := do(t, "GET", e.ts.URL+fmt.Sprintf(path, tc.exists), tc.tok, "")
				c2, _, b2 := do(t, "GET", e.ts.URL+fmt.Sprintf(path, tc.absent), tc.tok, "")
				s1 := strings.ReplaceAll(string(b1), tc.exists, "ID")
				s2 := strings.ReplaceAll(string(b2), tc.absent, "ID")
				if c1 != c2 || s1 != s2 || c1 < 400 {
					t.Fatalf("exists: %d %s\nabsent: %d %s", c1, b1, c2, b2)
				}
			})
		}
	}
	// The owner still reads hers.
	if code, _, body := do(t, "GET", e.ts.URL+"/v1/listeners/"+private.Listener.ID, all(t, "alice"), ""); code != 200 {
		t.Fatalf("owner: %d %s", code, body)
	}
}

// TestNoDispatchOracle checks that an addressed dispatch does not tell its
// sender whether the addressee has a Private listener.
func TestNoDispatchOracle(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{})
	ctx := ctxT(t)
	if _, err := e.client(all(t, "alice")).Join(ctx, moitessierhttp.Query{Scopes: []string{"notify.>"}, Type: "private"}); err != nil {
		t.Fatal(err)
	}
	bob := e.client(all(t, "bob"))
	// Bob's own Private listener is his to count.
	if _, err := bob.Join(ctx, moitessierhttp.Query{Scopes: []string{"notify.x"}, Type: "private"}); err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{"", "hello"} {
		withListener, err := bob.Dispatch(ctx, moitessierhttp.DispatchRequest{Scope: "notify.x", Text: text, To: []string{"alice"}})
		if err != nil {
			t.Fatal(err)
		}
		without, err := bob.Dispatch(ctx, moitessierhttp.DispatchRequest{Scope: "notify.x", Text: text, To: []string{"carol"}})
		if err != nil {
			t.Fatal(err)
		}
		if withListener.Reached != without.Reached || withListener.Stored != without.Stored {
			t.Fatalf("text %q: to alice (who listens) %+v, to carol (who does not) %+v", text, withListener, without)
		}
		if want := len(text); withListener.Reached != 1 || withListener.Stored != min(want, 1) {
			t.Fatalf("text %q: %+v, want bob's own listener counted", text, withListener)
		}
	}
	// Alice got the message all the same.
	info, err := e.hub.Info(ctx, mustID(t, moitessier.Conditions{Person: "alice", Type: moitessier.Private, Scope: "notify.>"}))
	if err != nil || info.Head != 1 {
		t.Fatalf("alice's listener: head %d, %v", info.Head, err)
	}
	// Shared listeners on a scope the sender may listen to are counted.
	if _, err := bob.Join(ctx, moitessierhttp.Query{Scopes: []string{"room.1"}}); err != nil {
		t.Fatal(err)
	}
	if res := dispatch(t, bob, "room.1", "hi"); res.Reached != 1 || res.Stored != 1 {
		t.Fatalf("shared: %+v", res)
	}
}

func mustID(tb testing.TB, c moitessier.Conditions) string {
	tb.Helper()
	id, err := moitessier.ListenerID(c)
	if err != nil {
		tb.Fatal(err)
	}
	return id
}

// TestHeadEvents checks that HEAD /v1/events answers the headers of a
// stream, writes no event and creates no listener, over a raw socket (the
// stream writes to the socket itself, past net/http's HEAD handling).
func TestHeadEvents(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{})
	tok := all(t, "alice")
	for _, path := range []string{"/v1/events?scope=head.room", "/v1/poll?scope=head.room&since=0", "/v1/ws?scope=head.room"} {
		t.Run(strings.Fields(path)[0], func(t *testing.T) {
			conn := e.dial(t)
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprintf(conn, "HEAD %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n", path, tok)
			resp, err := io.ReadAll(bufio.NewReader(conn))
			if err != nil {
				t.Fatalf("read: %v (a HEAD answer must end)", err)
			}
			head, body, _ := strings.Cut(string(resp), "\r\n\r\n")
			if !strings.HasPrefix(head, "HTTP/1.1 200") || body != "" {
				t.Fatalf("answer %q", resp)
			}
		})
	}
	if _, err := e.hub.Info(context.Background(), mustID(t, moitessier.Conditions{Person: "x", Type: moitessier.Shared, Scope: "head.room"})); !errors.Is(err, moitessier.ErrNotFound) {
		t.Fatalf("HEAD created a listener: %v", err)
	}
	// A HEAD is checked as its GET is.
	if code, _, _ := do(t, "HEAD", e.ts.URL+"/v1/events?scope=head.room", "", ""); code != 401 {
		t.Fatalf("no token: %d", code)
	}
	if code, _, _ := do(t, "HEAD", e.ts.URL+"/v1/events?scope=head.room", token(t, "bob", []string{"other"}, nil), ""); code != 403 {
		t.Fatalf("out of scope: %d", code)
	}
}
