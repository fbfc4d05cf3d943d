package moitessierhttp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/moitessierhttp"
)

// The drop-and-resume tests: a client reads part of a stream while messages
// keep coming, drops its connection abruptly, and comes back with no cursor
// in hand (since=resume, no Last-Event-ID: a new tab), a hundred times. It
// must miss nothing; what it sees twice is counted, and bounded: nothing
// the server-held cursor had acknowledged when the client dropped comes
// again.

const dropTrials = 100

// dropRun is one drop-and-resume test: a listener, a dispatcher that keeps
// writing to it, and what the client has seen.
type dropRun struct {
	t     *testing.T
	e     *env
	scope string
	tok   string
	l     *moitessier.Listener

	stop chan struct{}
	wg   sync.WaitGroup

	head      moitessier.Cursor // the last dispatched seq, once stopped
	seen      map[uint64]int
	age       map[uint64]time.Duration // how long before its connection dropped a message was last received
	window    time.Duration            // if not 0: a message received longer than this before a drop never comes again
	dups      int
	maxDups   int
	lastAcked uint64 // the server-held cursor when the last connection dropped
}

func newDropRun(t *testing.T, e *env, scope string) *dropRun {
	t.Helper()
	ctx := ctxT(t)
	// The subscriber (alice, client "tab") exists before the first
	// dispatch, so that it hears them all.
	l, err := e.hub.NewListener(ctx, moitessier.Conditions{Person: "alice", Client: "tab", Type: moitessier.Shared, Scope: scope})
	if err != nil {
		t.Fatal(err)
	}
	r := &dropRun{t: t, e: e, scope: scope, tok: all(t, "alice"), l: l, stop: make(chan struct{}), seen: map[uint64]int{}, age: map[uint64]time.Duration{}}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for i := 0; ; i++ {
			select {
			case <-r.stop:
				return
			default:
			}
			d, err := e.hub.Dispatch(context.Background(), "bob", scope, fmt.Sprint("m", i))
			if err != nil {
				t.Errorf("dispatch: %v", err)
				return
			}
			r.head = d.Messages[0].Seq
			time.Sleep(500 * time.Microsecond)
		}
	}()
	return r
}

// cursor returns the subscriber's server-held cursor.
func (r *dropRun) cursor() uint64 {
	c, err := r.l.Cursor(ctxT(r.t))
	if err != nil {
		r.t.Fatal(err)
	}
	return uint64(c)
}

// waitCursor waits, while the client goes on reading, until the
// server-held cursor reaches c: acknowledgement keeps up with a client
// that reads.
func (r *dropRun) waitCursor(c uint64) {
	deadline := time.Now().Add(10 * time.Second)
	for r.cursor() < c {
		if time.Now().After(deadline) {
			r.t.Fatalf("the server-held cursor is %d, still short of %d that the client received", r.cursor(), c)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// record takes what one connection received, in order, and the
// server-held cursor when it dropped; ages, if not nil, says how long
// before the drop each message was received.
func (r *dropRun) record(trial int, got []uint64, acked uint64, ages []time.Duration) {
	r.t.Helper()
	n := 0
	for i, s := range got {
		if i > 0 && s != got[i-1]+1 {
			r.t.Fatalf("trial %d: one connection delivered %d after %d", trial, s, got[i-1])
		}
		if r.seen[s] > 0 {
			n++
			if s <= r.lastAcked {
				r.t.Fatalf("trial %d: message %d came again, though the server-held cursor was %d when the client dropped", trial, s, r.lastAcked)
			}
			if a := r.age[s]; r.window > 0 && a > r.window {
				r.t.Fatalf("trial %d: message %d came again, though the client had received it %v before it dropped (bound %v)", trial, s, a, r.window)
			}
		}
		r.seen[s]++
		if ages != nil {
			r.age[s] = ages[i]
		}
	}
	r.dups += n
	r.maxDups = max(r.maxDups, n)
	r.lastAcked = acked
}

// finish stops the dispatcher, reads the rest with one last connection
// and checks that every message was seen.
func (r *dropRun) finish(last func(until uint64) []uint64) {
	r.t.Helper()
	close(r.stop)
	r.wg.Wait()
	// One more message, so that the last connection has one to wait for.
	d, err := r.e.hub.Dispatch(ctxT(r.t), "bob", r.scope, "end")
	if err != nil {
		r.t.Fatal(err)
	}
	r.head = d.Messages[0].Seq
	r.record(dropTrials, last(uint64(r.head)), 0, nil)
	var lost []uint64
	for s := uint64(1); s <= uint64(r.head); s++ {
		if r.seen[s] == 0 {
			lost = append(lost, s)
		}
	}
	r.t.Logf("%d messages, %d trials: %d lost, %d seen twice (at most %d after one drop)", r.head, dropTrials, len(lost), r.dups, r.maxDups)
	if len(lost) > 0 {
		r.t.Errorf("lost %d messages the client never received: %v", len(lost), lost[:min(len(lost), 20)])
	}
}

// received is what a connection's reader has parsed so far, and when.
type received struct {
	mu   sync.Mutex
	seqs []uint64
	at   []time.Time
}

func (rc *received) add(s uint64) {
	rc.mu.Lock()
	rc.seqs = append(rc.seqs, s)
	rc.at = append(rc.at, time.Now())
	rc.mu.Unlock()
}

// ages returns how long before dropped each message was received.
func (rc *received) ages(dropped time.Time) []time.Duration {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := make([]time.Duration, len(rc.at))
	for i, t := range rc.at {
		out[i] = dropped.Sub(t)
	}
	return out
}

func (rc *received) get() []uint64 {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]uint64(nil), rc.seqs...)
}

// waitN waits until n messages came, or the reader ended.
func (rc *received) waitN(tb testing.TB, n int, done <-chan struct{}) []uint64 {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := rc.get()
		if len(got) >= n {
			return got
		}
		select {
		case <-done:
			tb.Fatalf("the connection ended after %d messages, want %d", len(got), n)
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%d messages after 10 s, want %d", len(got), n)
		}
		time.Sleep(500 * time.Microsecond)
	}
}

// trialShape is what one trial does: read k messages, wait or not for the
// server-held cursor to reach the k-th, drop with a reset or not.
func trialShape(trial int) (k int, waitAck, reset bool) {
	return 1 + rand.IntN(8), trial%2 == 1, rand.IntN(2) == 0
}

// TestSSEDropResume: SSE over a real socket, read in part and dropped.
// Acknowledged on the evidence of the client's TCP stack, a message the
// client received more than two TCPAckIntervals before it dropped (and
// some slack for a loaded machine) never comes again: every 20th trial
// reads for 300 ms before it drops, to hold the stream to that bound.
func TestSSEDropResume(t *testing.T) {
	const every = 10 * time.Millisecond
	// A hundred reconnects in a few seconds, each a join: about the
	// default join burst, which a slower machine would refill and a faster
	// one not.
	e := newEnv(t, moitessierhttp.Config{TCPAckInterval: every, JoinRate: -1})
	r := newDropRun(t, e, "drop.sse")
	r.window = 2*every + 150*time.Millisecond
	addr := strings.TrimPrefix(e.ts.URL, "http://")
	for trial := range dropTrials {
		k, waitAck, reset := trialShape(trial)
		long := trial%20 == 10
		got, acked, ages := sseConn(t, addr, r, func(rc *received, done <-chan struct{}) {
			got := rc.waitN(t, k, done)
			if waitAck {
				r.waitCursor(got[k-1])
			}
			if long {
				time.Sleep(300 * time.Millisecond)
			}
		}, reset || long)
		r.record(trial, got, acked, ages)
	}
	r.finish(func(until uint64) []uint64 {
		got, _, _ := sseConn(t, addr, r, func(rc *received, done <-chan struct{}) {
			deadline := time.Now().Add(10 * time.Second)
			for {
				if got := rc.get(); len(got) > 0 && got[len(got)-1] >= until {
					return
				}
				if time.Now().After(deadline) {
					return
				}
				time.Sleep(time.Millisecond)
			}
		}, false)
		return got
	})
}

// sseConn opens an SSE stream with since=resume and no Last-Event-ID,
// reads it (every event in every byte read counts as received, as in a
// browser) until until returns, and drops the connection: with a reset, or
// with a plain close (which is a reset too when unread bytes are left).
func sseConn(tb testing.TB, addr string, r *dropRun, until func(*received, <-chan struct{}), reset bool) ([]uint64, uint64, []time.Duration) {
	tb.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	fmt.Fprintf(conn, "GET /v1/events?scope=%s&client=tab HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n", r.scope, addr, r.tok)
	rc := &received{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var pending []byte
		inBody := false
		b := make([]byte, 64<<10)
		for {
			n, err := conn.Read(b)
			pending = append(pending, b[:n]...)
			if !inBody {
				if i := bytes.Index(pending, []byte("\r\n\r\n")); i >= 0 {
					if !bytes.HasPrefix(pending, []byte("HTTP/1.1 200")) {
						tb.Errorf("answer %q", pending[:i])
						return
					}
					pending, inBody = pending[i+4:], true
				}
			}
			for inBody {
				i := bytes.Index(pending, []byte("\n\n"))
				if i < 0 {
					break
				}
				ev := string(pending[:i])
				pending = pending[i+2:]
				if id, ok := strings.CutPrefix(ev, "id: "); ok {
					id, _, _ = strings.Cut(id, "\n")
					s, err := strconv.ParseUint(id, 10, 64)
					if err != nil {
						tb.Errorf("event %q", ev)
						return
					}
					rc.add(s)
				}
			}
			if err != nil {
				return
			}
		}
	}()
	until(rc, done)
	acked := r.cursor()
	if reset {
		_ = conn.(*net.TCPConn).SetLinger(0)
	}
	dropped := time.Now()
	_ = conn.Close()
	<-done
	return rc.get(), acked, rc.ages(dropped)
}

// TestWebSocketDropResume: WebSocket, acknowledging each frame it reads
// with an ack frame, read in part and dropped.
func TestWebSocketDropResume(t *testing.T) {
	// A hundred reconnects, each a join: see TestSSEDropResume.
	e := newEnv(t, moitessierhttp.Config{JoinRate: -1})
	r := newDropRun(t, e, "drop.ws")
	for trial := range dropTrials {
		k, waitAck, _ := trialShape(trial)
		got, acked := wsConn(t, e, r, func(rc *received, done <-chan struct{}) {
			got := rc.waitN(t, k, done)
			if waitAck {
				r.waitCursor(got[k-1])
			}
		})
		r.record(trial, got, acked, nil)
	}
	r.finish(func(until uint64) []uint64 {
		got, _ := wsConn(t, e, r, func(rc *received, done <-chan struct{}) {
			deadline := time.Now().Add(10 * time.Second)
			for {
				if got := rc.get(); len(got) > 0 && got[len(got)-1] >= until {
					return
				}
				if time.Now().After(deadline) {
					return
				}
				time.Sleep(time.Millisecond)
			}
		})
		return got
	})
}

// wsConn listens over a WebSocket with since=resume, acknowledging every
// messages frame once it has read it, until until returns, then drops the
// connection without a close handshake.
func wsConn(tb testing.TB, e *env, r *dropRun, until func(*received, <-chan struct{})) ([]uint64, uint64) {
	tb.Helper()
	u := "ws" + strings.TrimPrefix(e.ts.URL, "http") + "/v1/ws?client=tab&scope=" + r.scope
	conn, _, err := websocket.Dial(ctxT(tb), u, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + r.tok}}})
	if err != nil {
		tb.Fatal(err)
	}
	conn.SetReadLimit(1 << 20)
	rc := &received{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			_, b, err := conn.Read(context.Background())
			if err != nil {
				return
			}
			var f moitessierhttp.WSFrame
			if err := json.Unmarshal(b, &f); err != nil {
				tb.Errorf("frame %s: %v", b, err)
				return
			}
			if f.Type != "messages" {
				continue
			}
			for _, m := range f.Messages {
				rc.add(m.Seq)
			}
			ack := fmt.Sprintf(`{"op":"ack","ref":"","seq":%d}`, f.Messages[len(f.Messages)-1].Seq)
			_ = conn.Write(context.Background(), websocket.MessageText, []byte(ack))
		}
	}()
	until(rc, done)
	acked := r.cursor()
	_ = conn.CloseNow()
	<-done
	return rc.get(), acked
}

// TestPollDropResume: long-poll, each answer's cursor sent back with the
// next poll, and a poll dropped before its answer is read.
func TestPollDropResume(t *testing.T) {
	// Hundreds of polls a second, each a join: past the default join rate.
	e := newEnv(t, moitessierhttp.Config{JoinRate: -1})
	r := newDropRun(t, e, "drop.poll")
	addr := strings.TrimPrefix(e.ts.URL, "http://")
	base := e.ts.URL + "/v1/poll?client=tab&timeout=5&scope=" + r.scope
	poll := func(since string) moitessierhttp.PollResult {
		t.Helper()
		u := base
		if since != "" {
			u += "&since=" + since
		}
		code, _, body := do(t, "GET", u, r.tok, "")
		if code != http.StatusOK {
			t.Fatalf("poll: %d %s", code, body)
		}
		var res moitessierhttp.PollResult
		if err := json.Unmarshal(body, &res); err != nil {
			t.Fatal(err)
		}
		return res
	}
	seqs := func(res moitessierhttp.PollResult) []uint64 {
		var s []uint64
		for _, m := range res.Messages {
			s = append(s, m.Seq)
		}
		return s
	}
	for trial := range dropTrials {
		k, waitAck, reset := trialShape(trial)
		var got []uint64
		res := poll("") // since=resume
		got = append(got, seqs(res)...)
		for range k % 3 {
			sent := res.Cursor
			res = poll(strconv.FormatUint(sent, 10))
			got = append(got, seqs(res)...)
			if waitAck {
				// A poll with since=N acknowledges N before it answers.
				if c := r.cursor(); c < sent {
					t.Fatalf("server-held cursor %d after a poll with since=%d", c, sent)
				}
			}
		}
		// The next poll, sent and dropped before its answer is read.
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "GET %s&since=%d HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n", strings.TrimPrefix(base, e.ts.URL), res.Cursor, addr, r.tok)
		time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
		acked := r.cursor()
		if reset {
			_ = conn.(*net.TCPConn).SetLinger(0)
		}
		_ = conn.Close()
		r.record(trial, got, acked, nil)
	}
	r.finish(func(until uint64) []uint64 {
		var got []uint64
		res := poll("")
		got = append(got, seqs(res)...)
		for len(got) > 0 && got[len(got)-1] < until {
			res = poll(strconv.FormatUint(res.Cursor, 10))
			got = append(got, seqs(res)...)
		}
		return got
	})
}

// TestSSEAcksUnderLoad: a stream that writes many times per
// TCPAckInterval (more than it keeps track of one by one) still
// acknowledges what its client receives, while it goes on writing.
func TestSSEAcksUnderLoad(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{TCPAckInterval: 200 * time.Millisecond, SSEBatchInterval: -1})
	r := newDropRun(t, e, "load.sse")
	defer func() {
		close(r.stop)
		r.wg.Wait()
	}()
	addr := strings.TrimPrefix(e.ts.URL, "http://")
	sseConn(t, addr, r, func(rc *received, done <-chan struct{}) {
		time.Sleep(time.Second) // five intervals of writes
		got := rc.waitN(t, 1, done)
		r.waitCursor(got[len(got)-1])
	}, true)
}
