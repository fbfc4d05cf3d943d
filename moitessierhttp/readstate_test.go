package moitessierhttp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/memstore"
	"github.com/likestripes/moitessier/moitessierhttp"
)

// rowCounter is a real memory store that counts the subscriber rows its
// Subscribers returns: what a request costs on a listener with many; and
// its reads, Listener and Subscribers calls.
type rowCounter struct {
	moitessier.Store
	rows, reads atomic.Int64
}

func (c *rowCounter) Subscribers(ctx context.Context, id string, r moitessier.SubscriberRange) ([]moitessier.Subscriber, error) {
	subs, err := c.Store.Subscribers(ctx, id, r)
	c.rows.Add(int64(len(subs)))
	c.reads.Add(1)
	return subs, err
}

func (c *rowCounter) Listener(ctx context.Context, id string) (moitessier.ListenerInfo, error) {
	c.reads.Add(1)
	return c.Store.Listener(ctx, id)
}

// fill makes n persons p0000… subscribers of the Shared listener on scope.
func fill(tb testing.TB, hub *moitessier.Hub, scope string, n int) string {
	tb.Helper()
	var id string
	for i := range n {
		l, err := hub.NewListener(ctxT(tb), moitessier.Conditions{Person: fmt.Sprintf("p%04d", i), Type: moitessier.Shared, Scope: scope})
		if err != nil {
			tb.Fatal(err)
		}
		id = l.ID()
	}
	return id
}

// TestJoinCostDoesNotGrowWithSubscribers: joining (POST /v1/listeners) and
// leaving a listener read the caller's own subscriber row, not every
// subscriber's; leaving reads nothing but the listener before it leaves.
func TestJoinCostDoesNotGrowWithSubscribers(t *testing.T) {
	for _, n := range []int{1, 300} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			st := &rowCounter{Store: memstore.New()}
			e := newEnvOn(t, st, moitessier.Options{}, moitessierhttp.Config{})
			id := fill(t, e.hub, "big.room", n)
			st.rows.Store(0)
			newbie := e.client(all(t, "newbie"))
			if _, err := newbie.Join(ctxT(t), moitessierhttp.Query{Scopes: []string{"big.room"}}); err != nil {
				t.Fatal(err)
			}
			if got := st.rows.Load(); got > 1 {
				t.Fatalf("a join read %d subscriber rows of a listener with %d; want at most 1", got, n+1)
			}
			st.rows.Store(0)
			st.reads.Store(0)
			code, _, body := do(t, "DELETE", e.ts.URL+"/v1/listeners/"+id, all(t, "newbie"), "")
			if code != http.StatusNoContent {
				t.Fatalf("leave: %d %s", code, body)
			}
			if got := st.rows.Load(); got > 1 {
				t.Fatalf("a leave read %d subscriber rows of a listener with %d; want at most 1", got, n+1)
			}
			// The listener, whose reader the caller must be, then Leave.
			if got := st.reads.Load(); got != 1 {
				t.Fatalf("a leave made %d reads before Leave; want 1", got)
			}
			code, _, body = do(t, "DELETE", e.ts.URL+"/v1/listeners/"+id, all(t, "newbie"), "")
			if code != http.StatusNotFound || !strings.Contains(string(body), `subscriber \"newbie\"`) || strings.Contains(string(body), "memstore") {
				t.Fatalf("second leave: %d %s, want 404 naming the subscriber, not the store", code, body)
			}
		})
	}
}

func TestReadStatePages(t *testing.T) {
	st := &rowCounter{Store: memstore.New()}
	e := newEnvOn(t, st, moitessier.Options{}, moitessierhttp.Config{})
	const n = 250
	id := fill(t, e.hub, "paged.room", n)
	ctx := ctxT(t)
	c := e.client(all(t, "p0000"))

	// The default page is DefaultReadStateLimit, and says there is more.
	first, err := c.ReadState(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Subscribers) != moitessierhttp.DefaultReadStateLimit || first.Next == "" {
		t.Fatalf("first page: %d subscribers, next %q; want %d and a next", len(first.Subscribers), first.Next, moitessierhttp.DefaultReadStateLimit)
	}

	// Paging through gives every subscriber once, in order, and reads
	// about a page of rows per page.
	var persons []string
	after, pages := "", 0
	for {
		st.rows.Store(0)
		rs, err := c.ReadStatePage(ctx, id, after, 40)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.rows.Load(); got > 42 {
			t.Fatalf("a page of 40 read %d rows", got)
		}
		pages++
		for _, s := range rs.Subscribers {
			persons = append(persons, s.Person)
		}
		if rs.Next == "" {
			if len(rs.Subscribers) != n%40 {
				t.Fatalf("last page holds %d, want %d", len(rs.Subscribers), n%40)
			}
			break
		}
		if len(rs.Subscribers) != 40 {
			t.Fatalf("page %d holds %d, want 40", pages, len(rs.Subscribers))
		}
		after = rs.Next
	}
	want := make([]string, n)
	for i := range want {
		want[i] = fmt.Sprintf("p%04d", i)
	}
	if !slices.Equal(persons, want) || pages != 7 {
		t.Fatalf("%d pages held %d subscribers %v…, want 7 pages of each once in order", pages, len(persons), persons[:min(3, len(persons))])
	}

	// An exact last page has no next.
	rs, err := c.ReadStatePage(ctx, id, "", n)
	if err != nil || len(rs.Subscribers) != n || rs.Next != "" {
		t.Fatalf("a page of exactly %d: %d subscribers, next %q, %v", n, len(rs.Subscribers), rs.Next, err)
	}

	// unseen filters within pages; the pages together still hold every
	// match once.
	if _, err := e.hub.Dispatch(ctx, "x", "paged.room", "m1"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"p0007", "p0100", "p0249"} {
		l, err := e.hub.Open(ctx, id, p, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Ack(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	unseen := 0
	after = ""
	for {
		code, _, body := do(t, "GET", e.ts.URL+"/v1/listeners/"+id+"/subscribers?unseen=1&limit=100&after="+after, all(t, "p0000"), "")
		if code != http.StatusOK {
			t.Fatalf("%d %s", code, body)
		}
		var rs moitessierhttp.ReadState
		if err := json.Unmarshal(body, &rs); err != nil {
			t.Fatal(err)
		}
		unseen += len(rs.Subscribers)
		if after = rs.Next; after == "" {
			break
		}
	}
	if unseen != n-3 {
		t.Fatalf("%d subscribers have not seen 1, want %d", unseen, n-3)
	}

	// A limit above the maximum is lowered to it; bad limits and
	// positions are 400s.
	big := fill(t, e.hub, "huge.room", moitessierhttp.MaxReadStateLimit+5)
	rs, err = c.ReadStatePage(ctx, big, "", 5000)
	if err != nil || len(rs.Subscribers) != moitessierhttp.MaxReadStateLimit || rs.Next == "" {
		t.Fatalf("limit 5000: %d subscribers, next %q, %v; want %d and a next", len(rs.Subscribers), rs.Next, err, moitessierhttp.MaxReadStateLimit)
	}
	for _, q := range []string{"limit=0", "limit=-3", "limit=x", "after=%25%25", "after=AA", "after=cDAwMDA"} {
		code, _, body := do(t, "GET", e.ts.URL+"/v1/listeners/"+id+"/subscribers?"+q, all(t, "p0000"), "")
		if code != http.StatusBadRequest || errorCode(t, body) != "bad_request" {
			t.Errorf("?%s: %d %s, want 400 bad_request", q, code, body)
		}
	}
}
