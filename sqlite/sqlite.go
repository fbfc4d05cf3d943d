package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/internal/scopeindex"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// ErrLocked reports that another Store, in this process or another, has the
// database open.
var ErrLocked = errors.New("sqlite: database in use by another store")

var (
	_ moitessier.Store  = (*Store)(nil)
	_ moitessier.Closer = (*Store)(nil)
)

// Store is a [moitessier.Store] on one SQLite file. It is safe for concurrent
// use. Make one with [Open] and release it with [Store.Close].
type Store struct {
	path string
	lock *os.File

	w  *sql.DB   // the writer: one connection
	wc *sql.Conn // that connection, held from Open to Close
	ck *checkpointer
	r  *sql.DB // read-only connections

	stmts statements

	// closeMu is held for reading by every call and for writing by Close,
	// which so waits for the calls in progress.
	closeMu sync.RWMutex
	closed  bool

	// qmu guards the queue of writes and whether a call is running them
	// (see writeOp).
	qmu     sync.Mutex
	queue   []*writeOp
	writing bool

	// mu guards the cache: every listener, and the scope index over them, as
	// committed (a write updates it after its commit).
	mu        sync.RWMutex
	listeners map[string]*cachedListener
	index     *scopeindex.Index

	// appendHook, if set, is called after each entry Append writes, inside
	// its transaction; an error fails the Append. Tests use it.
	appendHook func(b *moitessier.Batch, i int) error
}

type cachedListener struct {
	info moitessier.ListenerInfo
	// trimmed is a sequence number at or below which Sweep has removed the
	// messages, so that it need not look there again.
	trimmed moitessier.Cursor
}

// An Option changes a setting of [Open].
type Option func(*config)

type config struct {
	busyTimeout time.Duration
	readers     int
}

// WithBusyTimeout sets how long a statement waits for a lock held by another
// connection before it fails (SQLite's busy_timeout). The default is 5s.
func WithBusyTimeout(d time.Duration) Option {
	return func(c *config) { c.busyTimeout = d }
}

// WithReaders sets the number of read-only connections, which serve Read,
// Seek and Subscribers beside the writer. The default is the larger of 4 and
// GOMAXPROCS.
func WithReaders(n int) Option {
	return func(c *config) { c.readers = n }
}

func (c *config) withDefaults() {
	if c.busyTimeout == 0 {
		c.busyTimeout = 5 * time.Second
	}
	if c.readers == 0 {
		c.readers = max(4, runtime.GOMAXPROCS(0))
	}
}

func (c *config) validate() error {
	if c.busyTimeout < 0 {
		return fmt.Errorf("busy timeout %v: negative", c.busyTimeout)
	}
	if c.readers < 0 {
		return fmt.Errorf("readers %d: negative", c.readers)
	}
	return nil
}

// Open opens the database at path, creating it if needed, applies the schema
// migrations it lacks and loads its listeners. It takes an exclusive lock on
// path+".lock" and returns an error wrapping [ErrLocked] if another Store has
// the database open; the lock file stays in place after Close. ctx bounds the
// work done by Open only.
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	if path == "" || path == ":memory:" {
		return nil, fmt.Errorf("sqlite: open %q: a file path is required", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	lock, err := lockFile(abs + ".lock")
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	s := &Store{path: abs, lock: lock, listeners: map[string]*cachedListener{}, index: scopeindex.New()}
	if err := s.open(ctx, cfg); err != nil {
		s.release()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	return s, nil
}

// dsn returns the driver's name for the file with the given parameters.
func dsn(path string, params url.Values) string {
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + params.Encode()
}

func (s *Store) open(ctx context.Context, cfg config) error {
	busy := strconv.FormatInt(cfg.busyTimeout.Milliseconds(), 10)
	wp := url.Values{}
	wp.Set("_busy_timeout", busy)
	wp.Set("_foreign_keys", "on")
	wp.Set("_journal_mode", "WAL")
	wp.Set("_synchronous", "NORMAL")
	wp.Set("_txlock", "immediate")
	// The checkpointer copies the log into the database; the writer does
	// only past walAutoCheckpoint pages (see checkpointer).
	wp.Add("_pragma", "wal_autocheckpoint="+strconv.Itoa(walAutoCheckpoint))
	if vfs != "" {
		wp.Set("vfs", vfs)
	}
	var err error
	if s.w, err = sql.Open("sqlite", dsn(s.path, wp)); err != nil {
		return err
	}
	s.w.SetMaxOpenConns(1)
	s.w.SetMaxIdleConns(1)
	s.w.SetConnMaxLifetime(0)
	s.w.SetConnMaxIdleTime(0)
	// The first connection sets WAL mode, which the readers then find.
	if err := s.w.PingContext(ctx); err != nil {
		return err
	}
	if err := migrate(ctx, s.w); err != nil {
		return err
	}

	rp := url.Values{}
	rp.Set("_busy_timeout", busy)
	rp.Set("_query_only", "on")
	if vfs != "" {
		rp.Set("vfs", vfs)
	}
	if s.r, err = sql.Open("sqlite", dsn(s.path, rp)); err != nil {
		return err
	}
	n := max(cfg.readers, 1)
	s.r.SetMaxOpenConns(n)
	s.r.SetMaxIdleConns(n)
	s.r.SetConnMaxLifetime(0)
	s.r.SetConnMaxIdleTime(0)

	if err := s.load(ctx); err != nil {
		return err
	}
	if s.ck, err = startCheckpointer(s.path, busy); err != nil {
		return err
	}
	// Every later write runs on the writer's connection, held here: only
	// the call that is the writer (see writeOp) uses it.
	if s.wc, err = s.w.Conn(ctx); err != nil {
		return err
	}
	return s.stmts.prepare(ctx, s.wc, s.r)
}

// load reads every listener into the cache.
func (s *Store) load(ctx context.Context) error {
	rows, err := s.w.QueryContext(ctx, `SELECT id, type, person, client, created, `+headExpr+` FROM listeners`)
	if err != nil {
		return fmt.Errorf("load listeners: %w", err)
	}
	for rows.Next() {
		var (
			l             moitessier.ListenerInfo
			created, head int64
		)
		if err := rows.Scan(&l.ID, &l.Type, &l.Person, &l.Client, &created, &head); err != nil {
			rows.Close()
			return fmt.Errorf("load listeners: %w", err)
		}
		l.Created, l.Head = fromNanos(created), moitessier.Cursor(head)
		s.listeners[l.ID] = &cachedListener{info: l}
	}
	if err := rows.Close(); err != nil {
		return fmt.Errorf("load listeners: %w", err)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load listeners: %w", err)
	}

	rows, err = s.w.QueryContext(ctx, `SELECT listener_id, scope FROM listener_scopes ORDER BY listener_id, ord`)
	if err != nil {
		return fmt.Errorf("load scopes: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, scope string
		if err := rows.Scan(&id, &scope); err != nil {
			return fmt.Errorf("load scopes: %w", err)
		}
		if c := s.listeners[id]; c != nil {
			c.info.Scopes = append(c.info.Scopes, scope)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load scopes: %w", err)
	}
	for id, c := range s.listeners {
		s.index.Add(id, c.info.Scopes)
	}
	return nil
}

// Close waits for the calls in progress, closes the database and releases
// its lock. Every later call returns an error wrapping
// [moitessier.ErrClosed], but Close, which returns nil again (as every
// store's does; see the storetest package).
func (s *Store) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.release(); err != nil {
		return fmt.Errorf("sqlite: close: %w", err)
	}
	return nil
}

// release closes what Open opened, in reverse order.
func (s *Store) release() error {
	errs := []error{s.ck.close(), s.stmts.close()}
	if s.wc != nil {
		errs = append(errs, s.wc.Close())
	}
	if s.r != nil {
		errs = append(errs, s.r.Close())
	}
	if s.w != nil {
		errs = append(errs, s.w.Close())
	}
	if s.lock != nil {
		errs = append(errs, s.lock.Close())
	}
	return errors.Join(errs...)
}

// enter starts a call: it returns an error wrapping ErrClosed if the store
// is closed, and otherwise holds Close off until the matching exit.
func (s *Store) enter(op string) error {
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return fmt.Errorf("sqlite: %s: %w", op, moitessier.ErrClosed)
	}
	return nil
}

func (s *Store) exit() { s.closeMu.RUnlock() }

// ctxErr returns ctx's error if ctx is done: database/sql ends a transaction
// when its context is done, and the statement that noticed may report that
// its statement or transaction was closed rather than why.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("%w (%v)", cerr, err)
	}
	return err
}

// Times are stored as unix nanoseconds. The zero time is stored as
// math.MinInt64, so that it sorts before every other time (a zero lease has
// ended, a zero KeySince starts before every key) and reads back as zero.
var (
	minTime = time.Unix(0, math.MinInt64+1)
	maxTime = time.Unix(0, math.MaxInt64)
)

func toNanos(t time.Time) int64 {
	switch {
	case t.IsZero():
		return math.MinInt64
	case t.Before(minTime):
		return math.MinInt64 + 1
	case t.After(maxTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == math.MinInt64 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// seqArg converts a cursor to a query argument. SQLite integers are signed,
// and no stored sequence number comes near the top of the range, so larger
// cursors (such as moitessier.Resume) are clamped.
func seqArg(c moitessier.Cursor) int64 {
	if c > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(c)
}

// Path returns the absolute path of the database file.
func (s *Store) Path() string { return s.path }
