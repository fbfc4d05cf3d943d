package moitessierhttp_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/moitessierhttp"
)

func TestPoll(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{})
	alice := e.client(all(t, "alice"))
	ctx := ctxT(t)
	q := moitessierhttp.Query{Scopes: []string{"poll.room"}, Client: "p"}
	if _, err := alice.Join(ctx, q); err != nil {
		t.Fatal(err)
	}

	t.Run("Timeout", func(t *testing.T) {
		start := time.Now()
		res, err := alice.Poll(ctx, q, 200*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Messages) != 0 || res.Cursor != 0 {
			t.Fatalf("%+v", res)
		}
		if el := time.Since(start); el < 150*time.Millisecond {
			t.Fatalf("returned after %v, want the timeout", el)
		}
	})

	t.Run("Existing", func(t *testing.T) {
		dispatch(t, alice, "poll.room", "m1")
		dispatch(t, alice, "poll.room", "m2")
		start := time.Now()
		q := q
		q.Since = "0"
		res, err := alice.Poll(ctx, q, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Messages) != 2 || res.Cursor != 2 || res.Messages[1].Text != "m2" {
			t.Fatalf("%+v", res)
		}
		if el := time.Since(start); el > 5*time.Second {
			t.Fatalf("waited %v with messages there", el)
		}
	})

	t.Run("Wakes", func(t *testing.T) {
		q := q
		q.Since = "2"
		go func() {
			time.Sleep(100 * time.Millisecond)
			dispatch(t, alice, "poll.room", "m3")
		}()
		start := time.Now()
		res, err := alice.Poll(ctx, q, 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Messages) != 1 || res.Messages[0].Text != "m3" || res.Cursor != 3 {
			t.Fatalf("%+v", res)
		}
		if el := time.Since(start); el > 10*time.Second {
			t.Fatalf("returned after %v, want as soon as m3 was stored", el)
		}
	})

	t.Run("AckBySince", func(t *testing.T) {
		// Polling with since=3 acknowledged 3: resume starts after it.
		res, err := alice.Poll(ctx, q, 100*time.Millisecond) // since "resume"
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Messages) != 0 || res.Cursor != 2 {
			// since=2 was the last acknowledged position; m3 was returned
			// by that poll but not acknowledged by a later one.
			t.Logf("resume answered %+v", res)
		}
		q := q
		q.Since = "3"
		if _, err := alice.Poll(ctx, q, 10*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		q.Since = ""
		res, err = alice.Poll(ctx, q, 100*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Messages) != 0 || res.Cursor != 3 {
			t.Fatalf("after acking 3, resume gave %+v", res)
		}
	})

	t.Run("BadTimeout", func(t *testing.T) {
		code, _, body := do(t, "GET", e.ts.URL+"/v1/poll?scope=poll.room&timeout=soon", all(t, "alice"), "")
		if code != http.StatusBadRequest {
			t.Fatalf("%d %s", code, body)
		}
	})
}

func TestDispatch(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{
		Handlers: map[string]moitessier.HandlerFunc{
			"upper": func(ctx context.Context, id string, m moitessier.Message) (string, error) {
				return strings.ToUpper(m.Text), nil
			},
		},
	})
	alice := e.client(all(t, "alice"))
	ctx := ctxT(t)
	join := func(tok string, q moitessierhttp.Query) moitessierhttp.JoinResult {
		t.Helper()
		r, err := e.client(tok).Join(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	read := func(tok, id string) []moitessierhttp.Message {
		t.Helper()
		res, err := e.client(tok).Poll(ctx, moitessierhttp.Query{Listener: id, Since: "0"}, 50*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		return res.Messages
	}

	t.Run("JSON", func(t *testing.T) {
		l := join(all(t, "alice"), moitessierhttp.Query{Scopes: []string{"d.json"}})
		res := dispatch(t, alice, "d.json", "hi")
		if res.Stored != 1 || res.Reached != 1 || res.Replayed || res.ID == "" {
			t.Fatalf("%+v", res)
		}
		if ms := read(all(t, "alice"), l.Listener.ID); len(ms) != 1 || ms[0].Dispatch != res.ID {
			t.Fatalf("%+v", ms)
		}
	})

	t.Run("PlainText", func(t *testing.T) {
		l := join(all(t, "alice"), moitessierhttp.Query{Scopes: []string{"d.plain"}})
		code, _, body := do(t, "POST", e.ts.URL+"/v1/dispatch?scope=d.plain", all(t, "alice"), "hello there", "Content-Type", "text/plain")
		if code != http.StatusOK {
			t.Fatalf("%d %s", code, body)
		}
		if ms := read(all(t, "alice"), l.Listener.ID); len(ms) != 1 || ms[0].Text != "hello there" {
			t.Fatalf("%+v", ms)
		}
	})

	t.Run("IdempotencyKey", func(t *testing.T) {
		l := join(all(t, "alice"), moitessierhttp.Query{Scopes: []string{"d.idem"}})
		body := `{"scope":"d.idem","text":"once"}`
		code, h1, b1 := do(t, "POST", e.ts.URL+"/v1/dispatch", all(t, "alice"), body, "Content-Type", "application/json", "Idempotency-Key", "k-1")
		if code != http.StatusOK || h1.Get("Idempotent-Replayed") != "" {
			t.Fatalf("first: %d %s", code, b1)
		}
		code, h2, b2 := do(t, "POST", e.ts.URL+"/v1/dispatch", all(t, "alice"), body, "Content-Type", "application/json", "Idempotency-Key", "k-1")
		if code != http.StatusOK || h2.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("retry: %d %s %v", code, b2, h2)
		}
		var r1, r2 moitessierhttp.DispatchResult
		_ = json.Unmarshal(b1, &r1)
		_ = json.Unmarshal(b2, &r2)
		if !r2.Replayed || r1.ID != r2.ID {
			t.Fatalf("first %+v, retry %+v", r1, r2)
		}
		if ms := read(all(t, "alice"), l.Listener.ID); len(ms) != 1 {
			t.Fatalf("stored %d messages, want 1", len(ms))
		}
		// The same key from another person is another dispatch.
		res, err := e.client(all(t, "bob")).Dispatch(ctx, moitessierhttp.DispatchRequest{Scope: "d.idem", Text: "once", IdempotencyKey: "k-1"})
		if err != nil || res.Replayed {
			t.Fatalf("bob: %+v, %v", res, err)
		}
	})

	t.Run("To", func(t *testing.T) {
		// Bob's notifications: his Private listener hears dispatches
		// addressed to him, not the others.
		bobTok := token(t, "bob", []string{"d.notify"}, nil)
		l := join(bobTok, moitessierhttp.Query{Scopes: []string{"d.notify"}, Type: "private"})
		if _, err := alice.Dispatch(ctx, moitessierhttp.DispatchRequest{Scope: "d.notify", Text: "for bob", To: []string{"bob"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.Dispatch(ctx, moitessierhttp.DispatchRequest{Scope: "d.notify", Text: "for carol", To: []string{"carol"}}); err != nil {
			t.Fatal(err)
		}
		if ms := read(bobTok, l.Listener.ID); len(ms) != 1 || ms[0].Text != "for bob" {
			t.Fatalf("%+v", ms)
		}
	})

	t.Run("Handler", func(t *testing.T) {
		l := join(all(t, "alice"), moitessierhttp.Query{Scopes: []string{"d.h"}, Type: "handler"})
		if _, err := alice.Dispatch(ctx, moitessierhttp.DispatchRequest{Scope: "d.h", Text: "shout", Handlers: []string{"upper"}}); err != nil {
			t.Fatal(err)
		}
		if ms := read(all(t, "alice"), l.Listener.ID); len(ms) != 1 || ms[0].Text != "SHOUT" {
			t.Fatalf("%+v", ms)
		}
		_, err := alice.Dispatch(ctx, moitessierhttp.DispatchRequest{Scope: "d.h", Text: "x", Handlers: []string{"nope"}})
		if !errors.Is(err, moitessierhttp.ErrBadRequest) {
			t.Fatalf("unknown handler: %v", err)
		}
	})

	t.Run("BadScope", func(t *testing.T) {
		_, err := alice.Dispatch(ctx, moitessierhttp.DispatchRequest{Scope: "d.*", Text: "x"})
		var he *moitessierhttp.Error
		if !errors.As(err, &he) || he.Status != http.StatusBadRequest || !errors.Is(err, moitessier.ErrInvalidScope) {
			t.Fatalf("wildcard dispatch: %v", err)
		}
	})

	t.Run("BadJSON", func(t *testing.T) {
		code, _, body := do(t, "POST", e.ts.URL+"/v1/dispatch", all(t, "alice"), `{"scope":`, "Content-Type", "application/json")
		if code != http.StatusBadRequest || errorCode(t, body) != "bad_request" {
			t.Fatalf("%d %s", code, body)
		}
	})
}

func TestLimits(t *testing.T) {
	t.Run("TooLarge", func(t *testing.T) {
		e := newEnv(t, moitessierhttp.Config{MaxMessageBytes: 100})
		l, err := e.client(all(t, "alice")).Join(ctxT(t), moitessierhttp.Query{Scopes: []string{"big"}})
		if err != nil {
			t.Fatal(err)
		}
		big := strings.Repeat("x", 101)
		code, _, body := do(t, "POST", e.ts.URL+"/v1/dispatch", all(t, "alice"), `{"scope":"big","text":"`+big+`"}`, "Content-Type", "application/json")
		if code != http.StatusRequestEntityTooLarge || errorCode(t, body) != "too_large" {
			t.Fatalf("JSON: %d %s", code, body)
		}
		code, _, body = do(t, "POST", e.ts.URL+"/v1/dispatch?scope=big", all(t, "alice"), big)
		if code != http.StatusRequestEntityTooLarge || errorCode(t, body) != "too_large" {
			t.Fatalf("plain: %d %s", code, body)
		}
		code, _, body = do(t, "POST", e.ts.URL+"/v1/dispatch?scope=big", all(t, "alice"), big[:100])
		if code != http.StatusOK {
			t.Fatalf("at the limit: %d %s", code, body)
		}
		info, err := e.hub.Info(ctxT(t), l.Listener.ID)
		if err != nil || info.Head != 1 {
			t.Fatalf("head %d, %v: want only the message at the limit stored", info.Head, err)
		}
	})

	t.Run("RateLimit", func(t *testing.T) {
		now := time.Unix(1_800_000_000, 0)
		clock := func() time.Time { return now }
		e := newEnv(t, moitessierhttp.Config{DispatchRate: 1, DispatchBurst: 2, Now: clock})
		tok, err := moitessierhttp.Sign(secret, moitessierhttp.Claims{Subject: "alice", Dispatch: []string{">"}, ExpiresAt: now.Add(time.Hour).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		bobTok, err := moitessierhttp.Sign(secret, moitessierhttp.Claims{Subject: "bob", Dispatch: []string{">"}, ExpiresAt: now.Add(time.Hour).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			if code, _, body := do(t, "POST", e.ts.URL+"/v1/dispatch?scope=rl", tok, "x"); code != http.StatusOK {
				t.Fatalf("dispatch %d: %d %s", i, code, body)
			}
		}
		code, h, body := do(t, "POST", e.ts.URL+"/v1/dispatch?scope=rl", tok, "x")
		if code != http.StatusTooManyRequests || errorCode(t, body) != "rate_limited" {
			t.Fatalf("over the limit: %d %s", code, body)
		}
		if ra, err := strconv.Atoi(h.Get("Retry-After")); err != nil || ra < 1 {
			t.Fatalf("Retry-After %q", h.Get("Retry-After"))
		}
		// Another person has their own bucket.
		if code, _, body := do(t, "POST", e.ts.URL+"/v1/dispatch?scope=rl", bobTok, "x"); code != http.StatusOK {
			t.Fatalf("bob: %d %s", code, body)
		}
		_, err = (&moitessierhttp.Client{BaseURL: e.ts.URL, Token: tok}).Dispatch(ctxT(t), moitessierhttp.DispatchRequest{Scope: "rl", Text: "x"})
		var he *moitessierhttp.Error
		if !errors.As(err, &he) || !errors.Is(err, moitessierhttp.ErrRateLimited) || he.RetryAfter < time.Second {
			t.Fatalf("client error %v", err)
		}
	})
}

func TestReadState(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{})
	ctx := ctxT(t)
	alice, bob := e.client(all(t, "alice")), e.client(all(t, "bob"))
	var id string
	for _, c := range []*moitessierhttp.Client{alice, bob} {
		r, err := c.Join(ctx, moitessierhttp.Query{Scopes: []string{"rs.room"}})
		if err != nil {
			t.Fatal(err)
		}
		id = r.Listener.ID
	}
	for i := 1; i <= 3; i++ {
		dispatch(t, alice, "rs.room", fmt.Sprint("m", i))
	}
	// Alice reads everything (and acknowledges it by polling from 3);
	// Bob reads one.
	if _, err := alice.Poll(ctx, moitessierhttp.Query{Listener: id, Since: "3"}, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Poll(ctx, moitessierhttp.Query{Listener: id, Since: "1"}, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	rs, err := alice.ReadState(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, s := range rs.Subscribers {
		got[s.Person] = s.Cursor
	}
	if got["alice"] != 3 || got["bob"] != 1 || rs.Listener.Head != 3 {
		t.Fatalf("read state %+v", rs)
	}
	code, _, body := do(t, "GET", e.ts.URL+"/v1/listeners/"+id+"/subscribers?unseen=3", all(t, "carol"), "")
	if code != http.StatusOK {
		t.Fatalf("%d %s", code, body)
	}
	var unseen moitessierhttp.ReadState
	_ = json.Unmarshal(body, &unseen)
	if len(unseen.Subscribers) != 1 || unseen.Subscribers[0].Person != "bob" {
		t.Fatalf("who has not seen 3: %+v", unseen.Subscribers)
	}
	code, _, body = do(t, "GET", e.ts.URL+"/v1/listeners/nope/subscribers", all(t, "alice"), "")
	if code != http.StatusNotFound || errorCode(t, body) != "not_found" {
		t.Fatalf("%d %s", code, body)
	}
}

// TestAuth checks every way a request is refused, and that a refused
// request changes nothing.
func TestAuth(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{})
	ctx := ctxT(t)
	alice := e.client(all(t, "alice"))
	shared, err := alice.Join(ctx, moitessierhttp.Query{Scopes: []string{"auth.room"}})
	if err != nil {
		t.Fatal(err)
	}
	private, err := alice.Join(ctx, moitessierhttp.Query{Scopes: []string{"auth.room"}, Type: "private"})
	if err != nil {
		t.Fatal(err)
	}
	expired, _ := moitessierhttp.Sign(secret, moitessierhttp.Claims{Subject: "bob", Listen: []string{">"}, Dispatch: []string{">"}, ExpiresAt: time.Now().Add(-time.Minute).Unix()})
	forged, _ := moitessierhttp.Sign([]byte("another secret, of 32 bytes or more"), moitessierhttp.Claims{Subject: "bob", Listen: []string{">"}, Dispatch: []string{">"}, ExpiresAt: time.Now().Add(time.Hour).Unix()})
	noExp, _ := moitessierhttp.Sign(secret, moitessierhttp.Claims{Subject: "bob", Listen: []string{">"}, Dispatch: []string{">"}})
	good := all(t, "bob")
	// Change bob's token so that it claims to be alice, keeping bob's signature.
	parts := strings.Split(good, ".")
	tampered := parts[0] + "." + strings.Split(all(t, "alice"), ".")[1] + "." + parts[2]
	narrow := token(t, "bob", []string{"auth.other"}, []string{"auth.other"})

	tokens := []struct {
		name, tok string
		status    int
		code      string
	}{
		{"None", "", 401, "unauthenticated"},
		{"Garbage", "not-a-token", 401, "invalid_token"},
		{"Forged", forged, 401, "invalid_token"},
		{"Tampered", tampered, 401, "invalid_token"},
		{"Expired", expired, 401, "token_expired"},
		{"NoExp", noExp, 401, "token_expired"},
		{"OutOfScope", narrow, 403, "forbidden"},
	}
	// A listener named by ID that the token may not read is answered as
	// one that does not exist.
	byID := map[string]bool{"ReadState": true, "Info": true, "ByID": true}
	requests := []struct {
		name, method, path, body string
	}{
		{"SSE", "GET", "/v1/events?scope=auth.room", ""},
		{"Poll", "GET", "/v1/poll?scope=auth.room&timeout=0.01", ""},
		{"Dispatch", "POST", "/v1/dispatch?scope=auth.room", "intruder"},
		{"Join", "POST", "/v1/listeners?scope=auth.room", ""},
		{"ReadState", "GET", "/v1/listeners/" + shared.Listener.ID + "/subscribers", ""},
		{"Info", "GET", "/v1/listeners/" + shared.Listener.ID, ""},
		{"ByID", "GET", "/v1/poll?timeout=0.01&listener=" + shared.Listener.ID, ""},
	}
	for _, tk := range tokens {
		for _, rq := range requests {
			t.Run(tk.name+"/"+rq.name, func(t *testing.T) {
				code, h, body := do(t, rq.method, e.ts.URL+rq.path, tk.tok, rq.body)
				status, ecode := tk.status, tk.code
				if status == 403 && byID[rq.name] {
					status, ecode = 404, "not_found"
				}
				if code != status || errorCode(t, body) != ecode {
					t.Fatalf("%d %s, want %d %s", code, body, status, ecode)
				}
				if code == 401 && h.Get("WWW-Authenticate") == "" {
					t.Fatal("401 without WWW-Authenticate")
				}
			})
		}
	}
	t.Run("QueryToken", func(t *testing.T) {
		code, _, body := do(t, "GET", e.ts.URL+"/v1/poll?scope=auth.room&timeout=0.01&access_token="+forged, "", "")
		if code != 401 || errorCode(t, body) != "invalid_token" {
			t.Fatalf("%d %s", code, body)
		}
	})

	t.Run("PrivateOfAnother", func(t *testing.T) {
		for _, rq := range []struct{ method, path string }{
			{"GET", "/v1/events?listener=" + private.Listener.ID},
			{"GET", "/v1/poll?timeout=0.01&listener=" + private.Listener.ID},
			{"GET", "/v1/listeners/" + private.Listener.ID + "/subscribers"},
			{"GET", "/v1/listeners/" + private.Listener.ID},
			{"DELETE", "/v1/listeners/" + private.Listener.ID},
		} {
			code, _, body := do(t, rq.method, e.ts.URL+rq.path, good, "")
			if code != 404 || errorCode(t, body) != "not_found" {
				t.Fatalf("%s %s: %d %s, want 404 not_found", rq.method, rq.path, code, body)
			}
		}
		// Her own works.
		code, _, body := do(t, "GET", e.ts.URL+"/v1/poll?timeout=0.01&listener="+private.Listener.ID, all(t, "alice"), "")
		if code != 200 {
			t.Fatalf("owner: %d %s", code, body)
		}
	})

	t.Run("NothingChanged", func(t *testing.T) {
		for _, id := range []string{shared.Listener.ID, private.Listener.ID} {
			info, err := e.hub.Info(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if info.Head != 0 {
				t.Fatalf("listener %s has %d messages after refused dispatches", id, info.Head)
			}
			subs, err := e.hub.Subscribers(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if len(subs) != 1 || subs[0].Person != "alice" {
				t.Fatalf("subscribers of %s: %+v, want only alice", id, subs)
			}
		}
	})

	t.Run("Whoami", func(t *testing.T) {
		code, _, body := do(t, "GET", e.ts.URL+"/v1/whoami", narrow, "")
		var c moitessierhttp.Claims
		if err := json.Unmarshal(body, &c); err != nil || code != 200 || c.Subject != "bob" || c.Listen[0] != "auth.other" {
			t.Fatalf("%d %s", code, body)
		}
	})

	t.Run("PatternCoverage", func(t *testing.T) {
		// A grant of room.* allows room.1 and room.*, but not room.>.
		tok := token(t, "dave", []string{"cov.*"}, nil)
		for scope, want := range map[string]int{"cov.1": 200, "cov.*": 200, "cov.>": 403, "cov.1.2": 403} {
			code, _, body := do(t, "GET", e.ts.URL+"/v1/poll?timeout=0.01&scope="+scope, tok, "")
			if code != want {
				t.Fatalf("listen %s with cov.*: %d %s, want %d", scope, code, body, want)
			}
		}
	})
}

func TestCORS(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{AllowedOrigins: []string{"https://app.example"}})
	req, _ := http.NewRequest("OPTIONS", e.ts.URL+"/v1/dispatch", nil)
	req.Header.Set("Origin", "https://app.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "authorization, content-type, idempotency-key")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Idempotency-Key") {
		t.Fatalf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
	req.Header.Set("Origin", "https://evil.example")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Fatalf("disallowed origin got Allow-Origin %q", got)
	}
	code, h, _ := do(t, "GET", e.ts.URL+"/v1/whoami", all(t, "a"), "", "Origin", "https://app.example")
	if code != 200 || h.Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Fatalf("simple request: %d %v", code, h)
	}
}

func TestConfig(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{})
	if _, err := moitessierhttp.New(e.hub, moitessierhttp.Config{}); !errors.Is(err, moitessier.ErrInvalidArgument) {
		t.Fatalf("no secret: %v", err)
	}
	if _, err := moitessierhttp.New(e.hub, moitessierhttp.Config{Secret: secret, AllowedOrigins: []string{"example.com"}}); !errors.Is(err, moitessier.ErrInvalidArgument) {
		t.Fatalf("origin without scheme: %v", err)
	}
	code, _, body := do(t, "GET", e.ts.URL+"/v1/nothing", "", "")
	if code != 404 || errorCode(t, body) != "not_found" {
		t.Fatalf("%d %s", code, body)
	}
}

// TestAuthenticate replaces tokens with the app's own authentication.
func TestAuthenticate(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{Authenticate: func(r *http.Request) (*moitessierhttp.Claims, error) {
		user := r.Header.Get("X-User")
		if user == "" {
			return nil, moitessierhttp.ErrNoToken
		}
		return &moitessierhttp.Claims{Subject: user, Listen: []string{"app.>"}, Dispatch: []string{"app.>"}}, nil
	}})
	code, _, body := do(t, "POST", e.ts.URL+"/v1/dispatch?scope=app.1", "", "hi", "X-User", "erin")
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	code, _, body = do(t, "POST", e.ts.URL+"/v1/dispatch?scope=other", "", "hi", "X-User", "erin")
	if code != 403 {
		t.Fatalf("out of scope: %d %s", code, body)
	}
	code, _, body = do(t, "POST", e.ts.URL+"/v1/dispatch?scope=app.1", "", "hi")
	if code != 401 || errorCode(t, body) != "unauthenticated" {
		t.Fatalf("no user: %d %s", code, body)
	}
	// A stream without exp runs until the client leaves.
	c := &moitessierhttp.Client{BaseURL: e.ts.URL, HTTPClient: &http.Client{Transport: headerTransport{"X-User", "erin"}}}
	res, err := c.Poll(ctxT(t), moitessierhttp.Query{Scopes: []string{"app.1"}}, 50*time.Millisecond)
	if err != nil || len(res.Messages) != 0 {
		t.Fatalf("%+v %v", res, err)
	}
}

type headerTransport struct{ k, v string }

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(h.k, h.v)
	return http.DefaultTransport.RoundTrip(r)
}

// TestAllowedOriginsAgree: CORS and the Origin check of WebSockets match
// Config.AllowedOrigins alike, as patterns (path.Match) on the whole
// origin, case-insensitively; a page allowed one is allowed the other.
func TestAllowedOriginsAgree(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{AllowedOrigins: []string{"https://*.example.com", "https://App.Example.org/"}})
	tok := all(t, "alice")
	cors := func(origin string) bool {
		_, h, _ := do(t, "GET", e.ts.URL+"/v1/whoami", tok, "", "Origin", origin)
		switch got := h.Get("Access-Control-Allow-Origin"); got {
		case origin:
			return true
		case "":
			return false
		default:
			t.Fatalf("origin %s: Allow-Origin %q", origin, got)
			return false
		}
	}
	ws := func(origin string) bool {
		u := "ws" + strings.TrimPrefix(e.ts.URL, "http") + "/v1/ws"
		conn, resp, err := websocket.Dial(ctxT(t), u, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}, "Origin": {origin}}})
		if err != nil {
			if resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Fatalf("origin %s: WebSocket: %v", origin, err)
			}
			return false
		}
		conn.CloseNow()
		return true
	}
	for origin, want := range map[string]bool{
		"https://a.example.com":           true,
		"https://a.b.example.com":         true,
		"https://app.example.org":         true, // the pattern in capitals, and with a slash
		"HTTPS://APP.EXAMPLE.ORG":         true,
		"https://example.com":             false,
		"http://a.example.com":            false,
		"https://a.example.com:8443":      false,
		"https://a.example.com.evil.test": false,
		"https://evil.test":               false,
		"null":                            false,
	} {
		if c, w := cors(origin), ws(origin); c != want || w != want {
			t.Errorf("origin %s: CORS allows it %v, WebSocket %v; want %v for both", origin, c, w, want)
		}
	}
	// A WebSocket from a page on the hub's own host needs no pattern.
	if !ws("http://" + strings.TrimPrefix(e.ts.URL, "http://")) {
		t.Error("a WebSocket from the hub's own origin was refused")
	}
	if _, err := moitessierhttp.New(e.hub, moitessierhttp.Config{Secret: secret, AllowedOrigins: []string{"https://[a.example.com"}}); !errors.Is(err, moitessier.ErrInvalidArgument) {
		t.Fatalf("a malformed pattern: %v", err)
	}
}
