package moitessierhttp_test

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/likestripes/moitessier/moitessierhttp"
)

// TestStart: start=… makes a new subscriber begin with the listener's
// history, over SSE, long-poll, WebSocket and POST /v1/listeners; without
// it a new subscriber starts at the newest message.
func TestStart(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{})
	ctx := ctxT(t)
	owner := e.client(all(t, "owner"))
	room := moitessierhttp.Query{Scopes: []string{"start.room"}}
	if _, err := owner.Join(ctx, room); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		dispatch(t, owner, "start.room", fmt.Sprint("m", i))
	}
	time.Sleep(20 * time.Millisecond)
	mid := time.Now()
	dispatch(t, owner, "start.room", "m4")

	sse := func(person, start string) []string {
		t.Helper()
		q := room
		q.Start = start
		st, err := e.client(all(t, person)).Events(ctx, q, "")
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			st.Close()
			waitFor(t, "the stream to end on the server", func() bool { return e.srv.Metrics().Snapshot().Open["sse"] == 0 })
		}()
		readyEvent(t, st)
		// A message dispatched now marks the end of what was there.
		dispatch(t, owner, "start.room", "mark "+person)
		var got []string
		for {
			_, m := nextMessage(t, st)
			if m.Text == "mark "+person {
				return got
			}
			got = append(got, m.Text)
		}
	}
	t.Run("SSE", func(t *testing.T) {
		if got := sse("newbie", ""); len(got) != 0 {
			t.Fatalf("no start: %q, want only new messages", got)
		}
		if got := sse("old", "oldest"); !slices.Equal(got[:4], []string{"m1", "m2", "m3", "m4"}) {
			t.Fatalf("start=oldest: %q", got)
		}
		if got := sse("since", mid.UTC().Format(time.RFC3339Nano)); !slices.Equal(got[:1], []string{"m4"}) || slices.Contains(got, "m3") {
			t.Fatalf("start=<time>: %q, want m4 first", got)
		}
		if got := sse("hour", "1h"); !slices.Equal(got[:4], []string{"m1", "m2", "m3", "m4"}) {
			t.Fatalf("start=1h: %q", got)
		}
		// A subscriber that exists keeps its cursor: no history again,
		// only what came after it last read.
		if got := sse("old", "oldest"); slices.Contains(got, "m1") || slices.Contains(got, "m4") {
			t.Fatalf("start=oldest for a subscriber that exists: %q, want only what came since it left", got)
		}
	})

	t.Run("Poll", func(t *testing.T) {
		res, err := e.client(all(t, "poller")).Poll(ctx, moitessierhttp.Query{Scopes: room.Scopes, Start: "oldest"}, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Messages) == 0 || res.Messages[0].Text != "m1" {
			t.Fatalf("poll with start=oldest: %+v", res.Messages)
		}
	})

	t.Run("WebSocket", func(t *testing.T) {
		c := dialWS(t, e, all(t, "wsnew"), "")
		c.send(moitessierhttp.WSRequest{Op: "listen", Ref: "r", Scopes: room.Scopes, Start: "oldest"})
		c.expect("listening", "r")
		if f := c.expect("messages", "r"); f.Messages[0].Text != "m1" {
			t.Fatalf("ws start=oldest: %+v", f.Messages)
		}
	})

	t.Run("Join", func(t *testing.T) {
		r, err := e.client(all(t, "joiner")).Join(ctx, moitessierhttp.Query{Scopes: room.Scopes, Start: "oldest"})
		if err != nil || r.Cursor != 0 {
			t.Fatalf("join with start=oldest: cursor %d, %v; want 0", r.Cursor, err)
		}
	})

	t.Run("Bad", func(t *testing.T) {
		for _, q := range []string{"scope=start.room&start=yesterday", "scope=start.room&start=-1h", "listener=x&start=oldest"} {
			code, _, body := do(t, "GET", e.ts.URL+"/v1/poll?timeout=0&"+q, all(t, "alice"), "")
			if code != http.StatusBadRequest || errorCode(t, body) != "bad_request" {
				t.Fatalf("%s: %d %s", q, code, body)
			}
		}
		if _, err := moitessierhttp.ParseStart(url.QueryEscape("2026-01-02"), time.Now()); err == nil {
			t.Fatal("ParseStart took a date without a time")
		}
	})
}
