package moitessierhttp_test

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/likestripes/moitessier/moitessierhttp"
)

// pollRaw polls over HTTP and returns the answer and its size in bytes.
func pollRaw(t *testing.T, e *env, tok, query string) (moitessierhttp.PollResult, int) {
	t.Helper()
	code, _, body := do(t, "GET", e.ts.URL+"/v1/poll?timeout=0.01&"+query, tok, "")
	if code != 200 {
		t.Fatalf("poll %s: %d %s", query, code, body)
	}
	var res moitessierhttp.PollResult
	if err := json.Unmarshal(body, &res); err != nil {
		t.Fatalf("poll answer %.200s: %v", body, err)
	}
	return res, len(body)
}

// TestPollAnswerBytes: a long-poll answer holds at most MaxPollBytes of
// messages (JSON may spell a byte of text in 6, so messages of the largest
// size made answers of megabytes), at least one; its cursor is the last
// message it holds, and polling on from it, which acknowledges it, gets
// every message once, in order.
func TestPollAnswerBytes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      moitessierhttp.Config
		n, size  int
		maxBytes int
	}{
		// 64 KiB of '<', 384 KiB of JSON each: two to an answer.
		{"Default", moitessierhttp.Config{}, 16, 64 << 10, moitessierhttp.DefaultMaxPollBytes},
		// A message larger than the limit goes alone.
		{"OneAtLeast", moitessierhttp.Config{MaxPollBytes: 1000}, 5, 2000, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.cfg)
			tok := all(t, "alice")
			ctx := ctxT(t)
			if _, err := e.client(tok).Join(ctx, moitessierhttp.Query{Scopes: []string{"big.room"}, Client: "p"}); err != nil {
				t.Fatal(err)
			}
			text := strings.Repeat("<", tc.size)
			for i := range tc.n {
				if _, err := e.hub.Dispatch(ctx, "alice", "big.room", strconv.Itoa(i%10)+text[1:]); err != nil {
					t.Fatal(err)
				}
			}
			var since uint64
			polls := 0
			for since < uint64(tc.n) {
				res, size := pollRaw(t, e, tok, "scope=big.room&client=p&since="+strconv.FormatUint(since, 10))
				polls++
				if len(res.Messages) == 0 {
					t.Fatalf("poll since %d: no message, %d of %d left", since, tc.n-int(since), tc.n)
				}
				if over := size - tc.maxBytes; len(res.Messages) > 1 && over > 256 {
					t.Fatalf("poll since %d: an answer of %d bytes with %d messages, over the %d of MaxPollBytes", since, size, len(res.Messages), tc.maxBytes)
				}
				for i, m := range res.Messages {
					if m.Seq != since+uint64(i)+1 || m.Text != strconv.Itoa(int(m.Seq-1)%10)+text[1:] {
						t.Fatalf("poll since %d: message %d has seq %d, want %d", since, i, m.Seq, since+uint64(i)+1)
					}
				}
				if last := res.Messages[len(res.Messages)-1].Seq; res.Cursor != last {
					t.Fatalf("poll since %d: cursor %d, but the last message in the answer is %d", since, res.Cursor, last)
				}
				since = res.Cursor
			}
			if polls < 3 {
				t.Fatalf("%d messages came in %d polls: the answers were not bounded", tc.n, polls)
			}
			// The last poll's since acknowledges everything but the last
			// answer, which a poll from its cursor acknowledges.
			pollRaw(t, e, tok, "scope=big.room&client=p&since="+strconv.FormatUint(since, 10))
			subs, err := e.hub.Subscribers(ctx, e.listenerID(t, tok, "big.room", "p"))
			if err != nil {
				t.Fatal(err)
			}
			if len(subs) != 1 || uint64(subs[0].Cursor) != uint64(tc.n) {
				t.Fatalf("subscribers %+v, want alice/p at %d", subs, tc.n)
			}
			// Resuming without a cursor starts after what was acknowledged.
			res, _ := pollRaw(t, e, tok, "scope=big.room&client=p")
			if len(res.Messages) != 0 || res.Cursor != uint64(tc.n) {
				t.Fatalf("resume: %d messages, cursor %d; want none at %d", len(res.Messages), res.Cursor, tc.n)
			}
		})
	}
}

// listenerID is the ID of the Shared listener on scope that tok joins as client.
func (e *env) listenerID(t *testing.T, tok, scope, client string) string {
	t.Helper()
	j, err := e.client(tok).Join(ctxT(t), moitessierhttp.Query{Scopes: []string{scope}, Client: client})
	if err != nil {
		t.Fatal(err)
	}
	return j.Listener.ID
}
