package postgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/internal/donectx"
)

// Heads returns the current heads of the given listeners, with their
// creation times, in one query, omitting those that do not exist.
func (s *Store) Heads(ctx context.Context, ids []string) ([]moitessier.Head, error) {
	const op = "heads"
	if err := s.check(op); err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, s.q.heads, ids)
	if err != nil {
		return nil, s.wrap(op, err)
	}
	heads, err := collectHeads(rows)
	if err != nil {
		return nil, s.wrap(op, err)
	}
	return heads, nil
}

// ChangedHeads is moitessier.HeadComparer's, in one query: it sends the
// heads known, and the server returns only the listeners that are gone, or
// whose head or incarnation differs. A hub's catch-up read of many
// listeners with little news gets a small answer, where Heads returns a
// row for each.
func (s *Store) ChangedHeads(ctx context.Context, known []moitessier.Head) (changed []moitessier.Head, gone []string, err error) {
	const op = "changed heads"
	if err := s.check(op); err != nil {
		return nil, nil, err
	}
	if len(known) == 0 {
		return nil, nil, nil
	}
	var rows pgx.Rows
	if asciiIDs(known) {
		ids, heads, created := arrayLiterals(known)
		rows, err = s.pool.Query(ctx, s.q.changedHeads, ids, heads, created)
	} else {
		ids, heads, created := make([]string, len(known)), make([]int64, len(known)), make([]int64, len(known))
		for i, k := range known {
			ids[i], heads[i], created[i] = k.Listener, toSeq(k.Seq), toNS(k.Created)
		}
		rows, err = s.pool.Query(ctx, s.q.changedHeadsOf, ids, heads, created)
	}
	if err != nil {
		return nil, nil, s.wrap(op, err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id       string
			found    bool
			head, ns int64
		)
		if err := rows.Scan(&id, &found, &head, &ns); err != nil {
			return nil, nil, s.wrap(op, err)
		}
		if !found {
			gone = append(gone, id)
			continue
		}
		changed = append(changed, moitessier.Head{Listener: id, Seq: moitessier.Cursor(head), Created: fromNS(ns)})
	}
	if err := rows.Err(); err != nil {
		return nil, nil, s.wrap(op, err)
	}
	return changed, gone, nil
}

// asciiIDs reports whether every listener of known has an ID of ASCII
// bytes only, as every ID a hub makes has.
func asciiIDs(known []moitessier.Head) bool {
	for _, k := range known {
		for i := 0; i < len(k.Listener); i++ {
			if k.Listener[i] >= 0x80 {
				return false
			}
		}
	}
	return true
}

// arrayLiterals returns the listeners, heads and creation times (Unix
// nanoseconds) of known as the text of three PostgreSQL arrays, which the
// server parses at once: pgx encodes an array of many strings element by
// element, at a cost that was most of a catch-up read's in its process.
// Every ID is quoted, with its backslashes and double quotes escaped. The
// escaping goes byte by byte, so the IDs must be ASCII (asciiIDs): in a
// client encoding such as SJIS, a byte 0x5C can be the second half of a
// character, which the server would read as a backslash of its own after
// converting the text, and the array's elements would not be the IDs.
// (Every client encoding PostgreSQL offers encodes ASCII as ASCII.)
func arrayLiterals(known []moitessier.Head) (ids, heads, created string) {
	b := make([]byte, 0, len(known)*40+2)
	h := make([]byte, 0, len(known)*8+2)
	c := make([]byte, 0, len(known)*20+2)
	b, h, c = append(b, '{'), append(h, '{'), append(c, '{')
	for i, k := range known {
		if i > 0 {
			b, h, c = append(b, ','), append(h, ','), append(c, ',')
		}
		b = append(b, '"')
		for j := 0; j < len(k.Listener); j++ {
			if ch := k.Listener[j]; ch == '"' || ch == '\\' {
				b = append(b, '\\')
			}
			b = append(b, k.Listener[j])
		}
		b = append(b, '"')
		h = strconv.AppendInt(h, toSeq(k.Seq), 10)
		c = strconv.AppendInt(c, toNS(k.Created), 10)
	}
	b, h, c = append(b, '}'), append(h, '}'), append(c, '}')
	return string(b), string(h), string(c)
}

func collectHeads(rows pgx.Rows) ([]moitessier.Head, error) {
	defer rows.Close()
	var heads []moitessier.Head
	for rows.Next() {
		var (
			id      string
			head    int64
			created int64
		)
		if err := rows.Scan(&id, &head, &created); err != nil {
			return nil, err
		}
		heads = append(heads, moitessier.Head{Listener: id, Seq: moitessier.Cursor(head), Created: fromNS(created)})
	}
	return heads, rows.Err()
}

// Watch calls fn with the heads of listeners that received messages until
// ctx is done or the store is closed. When ctx carries a hub's
// moitessier.Origin and it is that hub's only Watch on this store, it
// leaves out what the hub's Dispatch wrote (through Append and
// MatchAppend with that Origin), which the hub publishes to its own
// subscribers itself; it reports everything else.
//
// It holds one dedicated connection (outside the pool) that LISTENs on the
// schema's channel and registers the Watch in the schema (see the package
// docs); an append sends the new heads with pg_notify in its own
// transaction when a Watch it does not leave out is registered, so a
// notification arrives only once the messages are visible. Once
// registered, on the first connection as after each reconnection, it
// reports the head of every listener that has messages: notifications
// sent before it listened are not delivered to it, and a hub's
// subscribers may have joined before (a connection slow to open) and be
// waiting for them. If the connection drops, Watch reconnects with
// exponential backoff (Config.ReconnectMin to ReconnectMax). fn is called
// one call at a time, from Watch's goroutine, or from a goroutine of its
// own that reads the heads again after a registration stopped waiting for
// the appends under way (see the package docs), which Watch waits for
// before it returns; it should not block for long. A store needs one
// Watch call (the hub makes one), whatever the number of listeners.
func (s *Store) Watch(ctx context.Context, fn func([]moitessier.Head)) error {
	const op = "watch"
	if err := s.check(op); err != nil {
		return err
	}
	origin := moitessier.OriginOf(ctx)
	ctx, cancel := donectx.WithDone(ctx, s.done)
	defer cancel()
	id := s.watchers.start(origin)
	defer s.watchers.stop(origin, id)
	backoff := s.cfg.ReconnectMin
	for {
		// An error ends one connection; the answer is to reconnect.
		connected, _ := s.listen(ctx, fn, id)
		if ctx.Err() != nil {
			if s.closed.Load() {
				return fmt.Errorf("postgres: %s: %w", op, moitessier.ErrClosed)
			}
			return ctx.Err()
		}
		if connected {
			backoff = s.cfg.ReconnectMin
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			continue
		case <-t.C:
		}
		backoff = min(backoff*2, s.cfg.ReconnectMax)
	}
}

// listen connects, LISTENs, registers as Watch id (see watchers.go),
// reports every head and delivers notifications until the connection fails
// or ctx ends; it then deletes its registration if it can. connected
// reports whether LISTEN succeeded.
func (s *Store) listen(ctx context.Context, fn func([]moitessier.Head), id string) (connected bool, err error) {
	// Its reads end at once when ctx does (pgx's default), not after the
	// grace the store's own pool gives its statements: a watch ends only
	// when its hub or the store closes, and must not hold up their Close.
	// A pool of the caller's keeps its own handler. (The second read of
	// the heads below runs on the pool, whose statements have their grace:
	// it can hold up a hub's Close by that much, not a store's, which
	// ends the grace at once.)
	cc := s.pool.Config().ConnConfig
	if s.ownPool {
		cc = cc.Copy()
		cc.BuildContextWatcherHandler = func(pgc *pgconn.PgConn) ctxwatch.Handler {
			return &pgconn.DeadlineContextWatcherHandler{Conn: pgc.Conn()}
		}
	}
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return false, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		return false, err
	}
	defer func() {
		// Before the connection closes (deferred above). If it broke, the
		// row goes when this Watch registers again (under the same id),
		// another Watch starts, or Sweep runs.
		if conn.IsClosed() {
			return
		}
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, _ = conn.Exec(cctx, s.q.deleteWatcher, id)
	}()
	left, err := s.register(ctx, conn, id)
	if err != nil {
		return false, err
	}
	if len(left) > 0 {
		var stop func()
		fn, stop = s.reportAgainAfter(ctx, left, fn)
		defer stop()
	}
	// Notifications of commits before the LISTEN are not delivered to this
	// connection: those of the time before the first connection (the hub's
	// subscribers may have joined already), and those sent while it was
	// away. Report every head; each page is read after the LISTEN, so a
	// commit it misses is notified.
	if err := s.reportHeads(ctx, conn, fn); err != nil {
		return true, err
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return true, err
		}
		if heads := parseHeads(n.Payload); len(heads) > 0 {
			fn(heads)
		}
	}
}

// reportAgainAfter is listen's answer to appends that may not have seen
// its registration and were still writing when the wait ended (left): it
// reports every head again, on the pool, once they have ended, from a
// goroutine of its own. It returns fn made to take one call at a time,
// for listen to call instead, and stop, which ends the goroutine and
// waits for it.
func (s *Store) reportAgainAfter(ctx context.Context, left []string, fn func([]moitessier.Head)) (func([]moitessier.Head), func()) {
	var mu sync.Mutex
	one := func(hs []moitessier.Head) {
		mu.Lock()
		defer mu.Unlock()
		fn(hs)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// After an error too (the pool's, not ctx's end), the heads are
		// read, at once: better early than never.
		if _, err := s.awaitWriters(ctx, s.pool, left, time.Time{}); err == nil || ctx.Err() == nil {
			_ = s.reportHeads(ctx, s.pool, one)
		}
	}()
	return one, func() { cancel(); wg.Wait() }
}

// reportHeads calls fn with the head of every listener with messages, a
// page at a time, as q reads them.
func (s *Store) reportHeads(ctx context.Context, q queryer, fn func([]moitessier.Head)) error {
	after := ""
	for {
		rows, err := q.Query(ctx, s.q.allHeads, after, 1000)
		if err != nil {
			return err
		}
		heads, err := collectHeads(rows)
		if err != nil {
			return err
		}
		if len(heads) > 0 {
			fn(heads)
			after = heads[len(heads)-1].Listener
		}
		if len(heads) < 1000 {
			return nil
		}
	}
}

// parseHeads parses a payload "id head,~created,id head,~created,…": each
// head is followed by its listener's creation time in Unix nanoseconds
// (its incarnation: see moitessier.Head), as an item of its own, which
// the parser of an earlier version of this package, which knows only "id
// head" items, skips (an item with no space), so that processes of both
// versions on one schema hear each other. A head with no creation time
// after it has no known incarnation; what does not parse is skipped.
func parseHeads(p string) []moitessier.Head {
	heads := make([]moitessier.Head, 0, strings.Count(p, ",")/2+1)
	last := false // the previous item was a head, heads' last
	for item := range strings.SplitSeq(p, ",") {
		if ns, ok := strings.CutPrefix(item, "~"); ok && !strings.Contains(item, " ") {
			if n, err := strconv.ParseInt(ns, 10, 64); err == nil && last {
				heads[len(heads)-1].Created = fromNS(n)
			}
			last = false
			continue
		}
		last = false
		id, seq, ok := strings.Cut(item, " ")
		if !ok || id == "" {
			continue
		}
		n, err := strconv.ParseUint(seq, 10, 64)
		if err != nil {
			continue
		}
		heads = append(heads, moitessier.Head{Listener: id, Seq: moitessier.Cursor(n)})
		last = true
	}
	return heads
}
