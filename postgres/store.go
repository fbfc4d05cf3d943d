package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/internal/matchcache"
	"github.com/likestripes/moitessier/internal/storecodec"
)

// DefaultSchema is the schema the store uses when Config.Schema is empty.
const DefaultSchema = "moitessier"

// Config configures a [Store]. The zero value, with a DSN, works.
type Config struct {
	// DSN is the connection string (a URL or key=value pairs, as pgx takes
	// them). Ignored when Pool is set. Pool sizes and timeouts go in it
	// (pool_max_conns=…); without pool_max_conns the store allows 16
	// connections, not pgxpool's max(4, cores), which starves a hub whose
	// dispatchers, readers and cursor saves run at once. Without
	// statement_cache_capacity each connection caches 128 prepared
	// statements, not pgx's 512, and without description_cache_capacity
	// none of the descriptions that only the cache_describe query mode
	// uses: pgx sizes both caches up front, which made them most of an
	// idle connection's memory.
	DSN string

	// Pool, if set, is used instead of opening a pool from DSN. The store
	// does not close it. A pool the store opens sets plan_cache_mode to
	// force_generic_plan on its connections (unless the DSN sets it): the
	// store's statements are prepared once, and without it PostgreSQL
	// plans the append statement anew at every execution, a large part of
	// a single-message append (see the README's benchmark section). Do the
	// same on a pool
	// of your own (RuntimeParams, or options=-c plan_cache_mode=… in its
	// DSN) if nothing else on it needs custom plans. The setting is a
	// startup parameter, which PgBouncer refuses unless it is listed in its
	// ignore_startup_parameters: behind PgBouncer, list it there, or give
	// the store a pool of your own. A pool the store opens also runs its
	// connections at READ COMMITTED, whatever the DSN, the database or
	// the role set, as the store's statements count on (a stricter
	// default_transaction_isolation would let a sweep or a quota count
	// miss what committed while it waited for a lock); give it a pool of
	// your own only at READ COMMITTED, the server's default: New refuses
	// one whose default_transaction_isolation is another, with an error
	// wrapping moitessier.ErrInvalidArgument.
	Pool *pgxpool.Pool

	// Schema is the PostgreSQL schema that holds the store's tables; it is
	// created if missing. Default: "moitessier". Stores on different schemas
	// of one database are independent.
	Schema string

	// SkipMigrate makes Open skip migrations; run [Migrate] before. Open
	// then fails if the schema is not at this package's version.
	SkipMigrate bool

	// NotifyBatch is how many listener heads one NOTIFY payload carries at
	// most; a dispatch to more listeners sends several notifications.
	// Default 64; a larger value than 74 is taken as 74, which keeps a
	// payload under PostgreSQL's limit of 8 000 bytes with listener IDs
	// of the longest the store takes (MaxListenerID bytes), each head with
	// its listener's creation time (a hub's IDs, of 33 bytes, make
	// payloads of about 5 000 bytes at 64).
	NotifyBatch int

	// Writers is how many append statements the store runs at once. Appends
	// to one listener are never in two statements at once (the second
	// would only wait on the first's row lock until its commit is flushed):
	// an Append to a listener that a running statement writes to waits,
	// and goes with the others waiting, combined, in the next statement
	// (see MaxCombine). Appends to other listeners go at once (on the
	// caller's goroutine, or on a writer when others wait), so an open
	// transaction holding a listener's lock (DispatchTx) holds up only the
	// appends to that listener, until Writers statements are waiting on
	// such locks. Default 4. (With one statement at a time
	// to a listener, eight dispatchers to it reached about 13 500
	// appends/s here; two statements at once to it, 6 700.)
	Writers int

	// MaxCombine is the most batches one append statement carries. Default
	// 64; 1 turns combining off (every Append is its own statement, sent at
	// once, and Writers is ignored).
	MaxCombine int

	// DurableJoins keeps every Join at the session's synchronous_commit
	// (on, unless the DSN, role or database sets it otherwise: each join
	// waits for its commit to be flushed to disk). By default a join that
	// creates a listener with concrete scopes only commits asynchronously
	// (synchronous_commit off for its transaction): it returns without
	// waiting for the flush, which PostgreSQL makes within three times
	// wal_writer_delay (200ms by default), or sooner with a later durable
	// commit. Any use of the listener (a dispatch to it, ListenUntil, Ack,
	// another subscriber's join) commits durably after it, and so flushes
	// it; a crash of the database server before that loses the listener
	// with its first subscriber, and no message. Hubs then find it gone: a
	// Listener handle's next calls fail with an error wrapping
	// moitessier.ErrClosed, and joining again creates it anew, empty; what
	// was dispatched to its scopes in between reached no listener, without
	// an error to anyone, and a moitessier.Hooks.Created call may have
	// reported a listener that the server no longer has. Set DurableJoins
	// where listeners are created well ahead of their first use (see the
	// package docs, Joining in one round trip). Joins that add a
	// subscriber to an existing listener or renew a lease, and joins that
	// create a listener with a pattern scope, always wait for the flush.
	DurableJoins bool

	// ReconnectMin and ReconnectMax bound the backoff between attempts of
	// Watch to reconnect its LISTEN connection. Default 50ms and 5s.
	ReconnectMin, ReconnectMax time.Duration

	// dial, if set, dials the connections of a pool the store opens (a
	// test's connections that lose their cancel requests).
	dial pgconn.DialFunc
	// slowJoin, if set, is how long a join sent alone keeps its turn (a
	// test's, which holds the turn on a lock).
	slowJoin time.Duration
}

func (c Config) withDefaults() Config {
	if c.Schema == "" {
		c.Schema = DefaultSchema
	}
	if c.NotifyBatch <= 0 {
		c.NotifyBatch = 64
	}
	c.NotifyBatch = min(c.NotifyBatch, maxNotifyBatch)
	if c.Writers <= 0 {
		c.Writers = 4
	}
	if c.MaxCombine <= 0 {
		c.MaxCombine = 64
	}
	if c.ReconnectMin <= 0 {
		c.ReconnectMin = 50 * time.Millisecond
	}
	if c.ReconnectMax <= 0 {
		c.ReconnectMax = 5 * time.Second
	}
	if c.ReconnectMax < c.ReconnectMin {
		c.ReconnectMax = c.ReconnectMin
	}
	return c
}

func (c Config) validate() error {
	if c.Pool == nil && c.DSN == "" {
		return errors.New("postgres: Config needs a DSN or a Pool")
	}
	if len(c.Schema) > 63 {
		return fmt.Errorf("postgres: schema name %.70q longer than 63 bytes", c.Schema)
	}
	if strings.ContainsRune(c.Schema, 0) {
		return fmt.Errorf("postgres: schema name %q holds a NUL byte", c.Schema)
	}
	return nil
}

// Store is a moitessier.Store on PostgreSQL. Many processes may open stores
// on the same database and schema; they share listeners and messages. It
// also implements moitessier.Watcher (LISTEN/NOTIFY) and moitessier.Closer.
type Store struct {
	pool    *pgxpool.Pool
	ownPool bool
	cfg     Config
	channel string
	host    string

	closed  atomic.Bool
	done    chan struct{}
	closeMu sync.Once
	graces  graces

	pat matchcache.Patterns
	mc  matchcache.Cache[matchEntry]
	// patternMade is the version of pat when this process last created
	// or deleted a listener with a pattern, or -1: until pat is newer,
	// seed (which reads it) does not seed.
	patternMade atomic.Int64
	cmb         combiner
	joins       joins
	q           queries

	watchers watchers
}

var (
	_ moitessier.Store   = (*Store)(nil)
	_ moitessier.Watcher = (*Store)(nil)
	_ moitessier.Closer  = (*Store)(nil)

	_ moitessier.MatchCacher   = (*Store)(nil)
	_ moitessier.MatchAppender = (*Store)(nil)

	_ moitessier.IncarnationReader = (*Store)(nil)
)

// dsnNames returns the names of the settings dsn gives beyond the
// connection's own (pgx's and pgxpool's, such as pool_max_conns), from the
// DSN itself or a service file it names: pgx reads and removes them from
// the configuration it returns, so this parses dsn again, as pgconn does.
func dsnNames(dsn string) map[string]bool {
	names := map[string]bool{}
	if c, err := pgconn.ParseConfig(dsn); err == nil {
		for k := range c.RuntimeParams {
			names[k] = true
		}
	}
	return names
}

// statementCacheCapacity is the size of the statement cache of each
// connection of a pool the store opens, unless its DSN sets
// statement_cache_capacity: room for every statement the store prepares,
// twice over, and some of a caller's (DispatchTx runs on the caller's
// connection, which has its own cache).
const statementCacheCapacity = 128

// Open opens a store on the database at dsn with the default schema,
// migrating it. See [New].
func Open(ctx context.Context, dsn string) (*Store, error) {
	return New(ctx, Config{DSN: dsn})
}

// New opens a store as cfg says: it connects (a server that cannot be
// reached fails here, with an error naming the host), pings, and migrates
// the schema unless cfg.SkipMigrate is set.
func New(ctx context.Context, cfg Config) (*Store, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Store{cfg: cfg, pool: cfg.Pool, done: make(chan struct{})}
	s.patternMade.Store(-1)
	if s.pool == nil {
		pc, err := pgxpool.ParseConfig(cfg.DSN)
		if err != nil {
			// pgx's parse errors may quote the DSN with its password; do not.
			return nil, errors.New("postgres: cannot parse the DSN (want a postgres:// URL or key=value pairs)")
		}
		s.host = hostOf(pc.ConnConfig)
		if cfg.dial != nil {
			pc.ConnConfig.DialFunc = cfg.dial
		}
		names := dsnNames(cfg.DSN)
		if !names["pool_max_conns"] {
			pc.MaxConns = max(pc.MaxConns, 16)
		}
		// The statement caches' sizes: see Config.DSN.
		cc := pc.ConnConfig
		if !names["statement_cache_capacity"] {
			cc.StatementCacheCapacity = statementCacheCapacity
		}
		if !names["description_cache_capacity"] && cc.DefaultQueryExecMode != pgx.QueryExecModeCacheDescribe {
			cc.DescriptionCacheCapacity = 0
		}
		rp := pc.ConnConfig.RuntimeParams
		if _, ok := rp["plan_cache_mode"]; !ok && !strings.Contains(rp["options"], "plan_cache_mode") {
			rp["plan_cache_mode"] = "force_generic_plan"
		}
		// Whatever the DSN, the database or the role set (see readCommitted).
		rp["default_transaction_isolation"] = "read committed"
		pc.ConnConfig.BuildContextWatcherHandler = func(pgc *pgconn.PgConn) ctxwatch.Handler {
			return &graceHandler{conn: pgc.Conn(), g: &s.graces}
		}
		if s.pool, err = pgxpool.NewWithConfig(ctx, pc); err != nil {
			return nil, fmt.Errorf("postgres: open pool for %s: %w", s.host, err)
		}
		s.ownPool = true
	} else {
		s.host = hostOf(s.pool.Config().ConnConfig)
	}
	fail := func(err error) (*Store, error) {
		if s.ownPool {
			s.pool.Close()
		}
		return nil, err
	}
	if err := s.pool.Ping(ctx); err != nil {
		return fail(fmt.Errorf("postgres: cannot connect to %s: %w", s.host, err))
	}
	if !s.ownPool {
		// The store's own pool sets READ COMMITTED; a caller's must have
		// it (see Config.Pool). The DSN, the role or the database set it
		// for every connection alike: one tells.
		var iso string
		if err := s.pool.QueryRow(ctx, "SHOW default_transaction_isolation").Scan(&iso); err != nil {
			return fail(fmt.Errorf("postgres: %s: %w", s.host, err))
		}
		if iso != "read committed" {
			return fail(fmt.Errorf("postgres: %s: %w: the pool's default_transaction_isolation is %q; the store needs read committed (give it a pool at READ COMMITTED, or a DSN to open its own)", s.host, moitessier.ErrInvalidArgument, iso))
		}
	}
	if !cfg.SkipMigrate {
		if err := Migrate(ctx, s.pool, cfg.Schema); err != nil {
			return fail(fmt.Errorf("postgres: %s: %w", s.host, err))
		}
	} else {
		var v int
		err := s.pool.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM "+pgx.Identifier{cfg.Schema}.Sanitize()+".schema_migrations").Scan(&v)
		if err != nil {
			return fail(fmt.Errorf("postgres: %s: schema %q is not migrated (run Migrate): %w", s.host, cfg.Schema, err))
		}
		if want := SchemaVersion(); v != want {
			return fail(fmt.Errorf("postgres: %s: schema %q is at version %d, want %d (run Migrate)", s.host, cfg.Schema, v, want))
		}
	}
	s.cmb.init(s.cfg.Writers)
	s.channel = channelName(cfg.Schema)
	s.q = buildQueries(pgx.Identifier{cfg.Schema}.Sanitize())
	return s, nil
}

// Pool returns the store's connection pool. A pool the store opened has
// no description cache unless its DSN asked for one (see Config.DSN): a
// query on it in pgx's QueryExecModeCacheDescribe fails; use another mode.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Schema returns the schema that holds the store's tables.
func (s *Store) Schema() string { return s.cfg.Schema }

// Close stops Watch calls and the store's append writers, and closes the
// pool if the store opened it. Appends waiting to be sent fail with
// moitessier.ErrClosed; those being written when Close cancels them fail
// with moitessier.ErrOutcomeUnknown. Every call after Close returns an error
// wrapping moitessier.ErrClosed, but Close itself, which returns nil again.
func (s *Store) Close() error {
	s.closeMu.Do(func() {
		s.closed.Store(true)
		s.graces.close()
		close(s.done)
		s.joins.close(s)
		s.cmb.close()
		s.joins.wait()
		if s.ownPool {
			s.pool.Close()
		}
	})
	return nil
}

// graceHandler is what a connection of the store's own pool does when the
// context of a statement under way ends: it lets the statement run on for
// cancelGrace, and only then makes the connection's reads fail, which
// closes it. pgx's default fails them at once: every caller that gave up
// during a statement outside a transaction (a join, a read, a match, an
// append of its own) cost the database a connection, and a new one a
// process, which a client could repeat at its request rate. A statement
// that ends within the grace answers its caller as if its context had not
// ended. Close ends every grace under way (graces) and grants no more, so
// that it does not wait.
type graceHandler struct {
	conn net.Conn
	g    *graces
}

// graces are the store's connections in their grace, and whether the store
// is closed (no more grace).
type graces struct {
	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

// cancelGrace is how long a statement whose caller gave up may run on
// before its connection is given up.
const cancelGrace = time.Second

func (h *graceHandler) HandleCancel(context.Context) {
	g := h.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		_ = h.conn.SetDeadline(time.Now())
		return
	}
	if g.conns == nil {
		g.conns = map[net.Conn]struct{}{}
	}
	g.conns[h.conn] = struct{}{}
	_ = h.conn.SetDeadline(time.Now().Add(cancelGrace))
}

func (h *graceHandler) HandleUnwatchAfterCancel() {
	h.g.mu.Lock()
	delete(h.g.conns, h.conn)
	h.g.mu.Unlock()
	_ = h.conn.SetDeadline(time.Time{})
}

// endCtx returns the context for the commit or rollback of a transaction
// run under ctx, made when the transaction is to end: not ended with ctx,
// so that a caller that gave up during the transaction does not cost the
// pool its connection (pgx closes a connection whose commit or rollback
// fails, as one refused for an ended context does), but ended within
// cancelGrace, and by Close.
func (s *Store) endCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cancelGrace)
	ctx, stop := s.cmb.bound(ctx)
	return ctx, func() { stop(); cancel() }
}

// MaxListenerID is the length in bytes of the longest listener ID the store
// takes (a hub's are 33 bytes); Join refuses a longer one, and one holding
// a comma, a space, a control character or invalid UTF-8, which the
// notifications that carry listener IDs could not.
const MaxListenerID = 64

// maxNotifyBatch is the most heads a payload of ids of MaxListenerID bytes
// holds under 8 000 bytes: "id head,~created," is at most
// MaxListenerID+1+20+2+19+1 bytes.
const maxNotifyBatch = 7999 / (MaxListenerID + 43)

// checkListenerID returns an error wrapping moitessier.ErrInvalidArgument
// if id is not one the store takes (see MaxListenerID).
func checkListenerID(id string) error {
	switch {
	case id == "" || len(id) > MaxListenerID:
		return fmt.Errorf("%w: listener ID of %d bytes (1 to %d)", moitessier.ErrInvalidArgument, len(id), MaxListenerID)
	case !utf8.ValidString(id) || strings.ContainsFunc(id, func(r rune) bool { return r == ',' || r == ' ' || unicode.IsControl(r) }):
		return fmt.Errorf("%w: listener ID %q holds a comma, a space, a control character or invalid UTF-8", moitessier.ErrInvalidArgument, id)
	}
	return nil
}

// readCommitted is the isolation level of the store's transactions. Its
// statements and functions count on every statement taking a snapshot of
// its own, after the locks taken before it (join_listener's quota counts,
// the sweep's trim and expiry, an append's look for a Watch), which a
// stricter level would take once per transaction: the store's
// transactions say so, and a pool it opens makes it the default of its
// connections, for the statements that are transactions of their own.
var readCommitted = pgx.TxOptions{IsoLevel: pgx.ReadCommitted}

// close ends the graces under way and grants no more.
func (g *graces) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	for c := range g.conns {
		_ = c.SetDeadline(time.Now())
	}
}

// check returns an error wrapping ErrClosed once the store is closed.
func (s *Store) check(op string) error {
	if s.closed.Load() {
		return fmt.Errorf("postgres: %s: %w", op, moitessier.ErrClosed)
	}
	return nil
}

// wrap adds the operation to an error, and ErrClosed if the store was closed
// while the call ran.
func (s *Store) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if s.closed.Load() && !errors.Is(err, moitessier.ErrClosed) && !errors.Is(err, moitessier.ErrOutcomeUnknown) {
		return fmt.Errorf("postgres: %s: %w (%v)", op, moitessier.ErrClosed, err)
	}
	return fmt.Errorf("postgres: %s: %w", op, err)
}

func hostOf(cc *pgx.ConnConfig) string {
	if cc == nil {
		return "(unknown host)"
	}
	if strings.HasPrefix(cc.Host, "/") {
		return "socket " + cc.Host
	}
	return net.JoinHostPort(cc.Host, strconv.Itoa(int(cc.Port)))
}

// channelName is the NOTIFY channel of a schema; channel names are at most
// 63 bytes, so a long schema name is hashed.
func channelName(schema string) string {
	c := "moitessier:" + schema
	if len(c) > 63 {
		sum := sha256.Sum256([]byte(schema))
		c = "moitessier:" + hex.EncodeToString(sum[:16])
	}
	return c
}

// Times are stored as Unix nanoseconds and cursors as int64, as
// storecodec converts them.
func toNS(t time.Time) int64          { return storecodec.Time(t) }
func fromNS(ns int64) time.Time       { return storecodec.ParseTime(ns) }
func toSeq(c moitessier.Cursor) int64 { return storecodec.Seq(c) }

// pgCode returns the SQLSTATE of a PostgreSQL error, or "".
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// retryable reports errors after which a whole transaction may be retried:
// deadlock, serialisation failure, and (for Join racing a deletion) a
// foreign key violation.
func retryable(err error) bool {
	var re *retryError
	if errors.As(err, &re) {
		return true
	}
	switch pgCode(err) {
	case "40P01", "40001", "23503":
		return true
	}
	return false
}

// retry runs fn, retrying it a few times on retryable errors.
func retry(ctx context.Context, fn func() error) error {
	var err error
	for attempt := 0; attempt < 8; attempt++ {
		if err = fn(); err == nil || !retryable(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(attempt+1) * time.Millisecond):
		}
	}
	return err
}
