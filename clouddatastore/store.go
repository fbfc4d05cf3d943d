package clouddatastore

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"cloud.google.com/go/datastore"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/clouddatastore/wake"
	"github.com/likestripes/moitessier/internal/matchcache"
	"github.com/likestripes/moitessier/internal/storecodec"
)

// Config configures a [Store]. Project is required unless Client is set;
// every other field's zero value works and documents its default.
type Config struct {
	// Project is the Google Cloud project. With the emulator
	// (DATASTORE_EMULATOR_HOST set) any name works.
	Project string
	// Database is the Firestore database ID; "" is the project's default
	// database, "(default)".
	Database string
	// Namespace is the Datastore namespace that holds the store's
	// entities; "" is the default namespace. Stores on different
	// namespaces (or databases) of one project are independent.
	Namespace string
	// NoCreate makes New fail, rather than set up an empty store, when the
	// namespace holds no store yet: for deployments where a mistyped
	// namespace should be an error, not a new empty store.
	NoCreate bool

	// Client, if set, is used instead of a client made from Project and
	// Database (which are then ignored), and is not closed by Close. The
	// store's counts (Stats) then cover only what it can see: its own
	// calls, not the RPCs below them.
	Client *datastore.Client
	// ClientOptions are passed to datastore.NewClientWithDatabase
	// (credentials, endpoint…). Credentials default to Application
	// Default Credentials, or none with the emulator.
	ClientOptions []option.ClientOption

	// Wake carries wake-ups between processes; see [Waker]. Nil: New opens
	// one on Cloud Pub/Sub (package wake) in Project, on the topic
	// wake.TopicID(Database, Namespace), and Close closes it; a Waker given
	// here is not closed.
	Wake Waker
	// NoPubSub, with Wake nil, opens no Pub/Sub wake-ups: a dispatch wakes
	// the listeners of its own process at once and those of other
	// processes at their hub's next catch-up read (Options.CatchUpInterval,
	// 2 s by default). For a single process, or where Pub/Sub is not
	// available.
	NoPubSub bool
	// PubSubOptions are passed to the Pub/Sub client (credentials…); with
	// the emulator, PUBSUB_EMULATOR_HOST.
	PubSubOptions []option.ClientOption
	// Logger receives the wake-ups' warnings (a publish that failed).
	// Default: discard.
	Logger *slog.Logger

	// Writers is how many append transactions the store runs at once. An
	// Append whose listeners are all free is sent by a free writer
	// together with every other queued Append that fits in one commit;
	// Appends to a listener that a running transaction writes wait for it
	// and go, combined, in the next one. Default 4.
	Writers int
	// MaxCombine is the most Appends one transaction carries. Default 64;
	// 1 turns combining off.
	MaxCombine int
	// MaxMutations is the most entities one commit writes or deletes.
	// Default 500, the limit Cloud Datastore documented per Commit (the
	// limits of Firestore in Datastore mode list only the 10 MiB size of a
	// transaction: raise it if your database accepts more). An Append
	// that needs more fails with a [LimitError] and writes nothing.
	MaxMutations int
	// MaxCommitBytes bounds the estimated size of one commit. Default
	// 9 MiB (Datastore's limit is 10 MiB per transaction), or 3 MiB when
	// DATASTORE_EMULATOR_HOST is set (the emulator refuses requests of
	// 4 MiB or more). An Append that needs more fails with a [LimitError].
	MaxCommitBytes int

	// RetryFor is how long an aborted transaction (a conflict with another
	// transaction on the same entities) is retried, with exponential
	// backoff from 5 ms to 1 s, before the call fails. Default 60 s.
	RetryFor time.Duration
	// CatchUpMargin is how far back Heads looks for listeners that changed
	// since its previous call: longer than a commit takes plus the clock
	// difference between the machines of one deployment. Default 10 s.
	CatchUpMargin time.Duration
	// TombstoneFor is how long Sweep keeps the record of a deleted
	// listener, so that the Heads calls of every process see the deletion.
	// Default 10 minutes; at least 3 × CatchUpMargin.
	TombstoneFor time.Duration
	// ProbeTimeout bounds the read New makes to check the project,
	// database and namespace. Default 15 s.
	ProbeTimeout time.Duration
	// Now is the store's clock for its own bookkeeping (when a listener
	// last changed, when it was deleted): not message times, which the
	// hub sets. Default time.Now.
	Now func() time.Time
}

// Waker carries wake-ups between the processes that share a store: after
// an Append commits, the store publishes the new heads of the listeners it
// wrote; [Store.Watch] hears those of every process. *wake.Wake (Cloud
// Pub/Sub) implements it.
type Waker interface {
	// Publish queues heads for every process's Watch and returns without
	// waiting. A lost wake-up costs latency only: the hub's catch-up read
	// finds the message.
	Publish(heads []moitessier.Head) error
	// Watch calls fn with the heads published by any process (this one
	// included) until ctx is done or it cannot go on. The first call
	// should also hear those other processes published after the Waker
	// was given to New: the hub's Watch may start after its listeners
	// joined.
	Watch(ctx context.Context, fn func([]moitessier.Head)) error
}

func (c Config) withDefaults() Config {
	if c.Writers <= 0 {
		c.Writers = 4
	}
	if c.MaxCombine <= 0 {
		c.MaxCombine = 64
	}
	if c.MaxMutations <= 0 {
		c.MaxMutations = 500
	}
	if c.MaxCommitBytes <= 0 {
		c.MaxCommitBytes = 9 << 20
		if os.Getenv("DATASTORE_EMULATOR_HOST") != "" {
			c.MaxCommitBytes = 3 << 20
		}
	}
	if c.RetryFor <= 0 {
		c.RetryFor = 60 * time.Second
	}
	if c.CatchUpMargin <= 0 {
		c.CatchUpMargin = 10 * time.Second
	}
	if c.TombstoneFor <= 0 {
		c.TombstoneFor = 10 * time.Minute
	}
	if c.TombstoneFor < 3*c.CatchUpMargin {
		c.TombstoneFor = 3 * c.CatchUpMargin
	}
	if c.ProbeTimeout <= 0 {
		c.ProbeTimeout = 15 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

var (
	namespaceRE = regexp.MustCompile(`^[0-9A-Za-z._-]{0,100}$`)
	databaseRE  = regexp.MustCompile(`^([a-z][a-z0-9-]{2,62}|\(default\))$`)
	projectRE   = regexp.MustCompile(`^[a-z0-9.:-]{1,100}$`)
)

// ErrConfig is wrapped by the errors of a Config that cannot work: a
// missing or malformed project, database or namespace.
var ErrConfig = errors.New("clouddatastore: invalid config")

func (c Config) validate() error {
	if c.Client == nil {
		if c.Project == "" {
			return fmt.Errorf("%w: Project is required", ErrConfig)
		}
		if !projectRE.MatchString(c.Project) {
			return fmt.Errorf("%w: project %q is not a Google Cloud project ID", ErrConfig, c.Project)
		}
		if c.Database != "" && !databaseRE.MatchString(c.Database) {
			return fmt.Errorf("%w: database %q is not a Firestore database ID (4-63 lowercase letters, digits and dashes, starting with a letter)", ErrConfig, c.Database)
		}
	}
	if !namespaceRE.MatchString(c.Namespace) || (strings.HasPrefix(c.Namespace, "__") && strings.HasSuffix(c.Namespace, "__") && len(c.Namespace) >= 4) {
		return fmt.Errorf("%w: namespace %q: want at most 100 letters, digits, '.', '_' or '-', not __reserved__", ErrConfig, c.Namespace)
	}
	return nil
}

// Store is a moitessier.Store on Firestore in Datastore mode. Many
// processes may open stores on the same project, database and namespace;
// they share listeners and messages. It also implements
// moitessier.Watcher, moitessier.MatchCacher and moitessier.Closer.
type Store struct {
	client    *datastore.Client
	ownClient bool
	cfg       Config
	ns        string
	where     string // project/database/namespace, for errors

	closed  atomic.Bool
	done    chan struct{}
	closeMu sync.Once

	stats   counters
	pat     matchcache.Patterns
	mc      matchcache.Cache[matchEntry]
	cmb     combiner
	heads   headTracker
	trimmed sync.Map // listener gen -> seq up to which MaxCount trimmed
	wake    Waker
	ownWake *wake.Wake
}

var (
	_ moitessier.Store       = (*Store)(nil)
	_ moitessier.Watcher     = (*Store)(nil)
	_ moitessier.MatchCacher = (*Store)(nil)
	_ moitessier.Closer      = (*Store)(nil)
)

// schemaVersion is the layout of the entities this package writes; New
// records it in the namespace's meta entity and refuses another.
const schemaVersion = 1

// New opens a store as cfg says. It checks the config, connects, and reads
// the namespace's meta entity, creating it if the namespace holds no store
// yet (unless cfg.NoCreate). A project or database that does not exist, a
// Datastore (or emulator) that does not answer within cfg.ProbeTimeout, or
// a namespace without a store under NoCreate fails here with an error that
// says which, and writes nothing.
func New(ctx context.Context, cfg Config) (*Store, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Store{cfg: cfg, ns: cfg.Namespace, done: make(chan struct{}), client: cfg.Client}
	db := cfg.Database
	if db == "" {
		db = "(default)"
	}
	s.where = fmt.Sprintf("project %q, database %q, namespace %q", cfg.Project, db, cfg.Namespace)
	emu := os.Getenv("DATASTORE_EMULATOR_HOST")
	if s.client == nil {
		if emu != "" {
			s.where += " on the emulator at " + emu + " (DATASTORE_EMULATOR_HOST)"
			// The client retries an unreachable emulator until the
			// deadline: say at once that it is down.
			if err := probeEmulator(ctx, emu, cfg.ProbeTimeout); err != nil {
				return nil, fmt.Errorf("clouddatastore: %s: the emulator does not answer: %w", s.where, err)
			}
		}
		opts := []option.ClientOption{
			option.WithGRPCDialOption(grpc.WithChainUnaryInterceptor(s.stats.intercept)),
		}
		if emu != "" {
			// The client pings every minute; the emulator allows one every
			// five and answers more with GOAWAY "too_many_pings", which
			// gRPC logs on every reconnection.
			opts = append(opts, option.WithGRPCDialOption(grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 6 * time.Minute, Timeout: 20 * time.Second})))
		}
		opts = append(opts, cfg.ClientOptions...)
		dbID := cfg.Database
		if dbID == "(default)" {
			dbID = ""
		}
		c, err := datastore.NewClientWithDatabase(ctx, cfg.Project, dbID, opts...)
		if err != nil {
			return nil, fmt.Errorf("clouddatastore: %s: %w", s.where, err)
		}
		s.client, s.ownClient = c, true
	} else {
		s.where = fmt.Sprintf("namespace %q of the given client", cfg.Namespace)
	}
	if err := s.probe(ctx); err != nil {
		if s.ownClient {
			_ = s.client.Close()
		}
		return nil, err
	}
	s.wake = cfg.Wake
	if s.wake == nil && !cfg.NoPubSub {
		if cfg.Project == "" {
			if s.ownClient {
				_ = s.client.Close()
			}
			return nil, fmt.Errorf("%w: Pub/Sub wake-ups need Project (or set NoPubSub, or Wake)", ErrConfig)
		}
		w, err := wake.Open(ctx, wake.Config{
			Project: cfg.Project, Topic: wake.TopicID(cfg.Database, cfg.Namespace),
			ClientOptions: cfg.PubSubOptions, Logger: cfg.Logger,
		})
		if err != nil {
			if s.ownClient {
				_ = s.client.Close()
			}
			return nil, fmt.Errorf("clouddatastore: %s: Pub/Sub wake-ups (set Config.NoPubSub to run without): %w", s.where, err)
		}
		s.wake, s.ownWake = w, w
	}
	return s, nil
}

// probeEmulator checks that the emulator's health endpoint answers.
func probeEmulator(ctx context.Context, host string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, min(timeout, 5*time.Second))
	defer cancel()
	h := host
	if i := strings.Index(h, "://"); i >= 0 {
		h = h[i+3:]
	}
	if _, _, err := net.SplitHostPort(h); err != nil {
		return fmt.Errorf("DATASTORE_EMULATOR_HOST=%q is not host:port: %w", host, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+h+"/", nil)
	if err != nil {
		return err
	}
	// No keep-alive: an idle connection would leave http.DefaultTransport's
	// reader and writer goroutines running after the store is closed.
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	return nil
}

// probe reads the meta entity and creates it if the namespace has none.
func (s *Store) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ProbeTimeout)
	defer cancel()
	var m metaEnt
	err := s.get(ctx, s.metaKey(), &m)
	switch {
	case err == nil:
		if m.Schema != schemaVersion {
			return fmt.Errorf("clouddatastore: %s holds a store of layout %d; this package reads layout %d", s.where, m.Schema, schemaVersion)
		}
		return nil
	case errors.Is(err, datastore.ErrNoSuchEntity):
	default:
		return s.probeErr(err)
	}
	if s.cfg.NoCreate {
		return fmt.Errorf("clouddatastore: %s: %w: the namespace holds no store (Config.NoCreate is set)", s.where, moitessier.ErrNotFound)
	}
	err = s.runTx(ctx, "create store", func(tx *datastore.Transaction) error {
		var m metaEnt
		err := tx.Get(s.metaKey(), &m)
		if err == nil {
			return nil // another process created it
		}
		if !errors.Is(err, datastore.ErrNoSuchEntity) {
			return err
		}
		_, err = tx.Put(s.metaKey(), &metaEnt{Schema: schemaVersion, Created: s.cfg.Now().UnixNano()})
		return err
	})
	if err != nil {
		return s.probeErr(err)
	}
	return nil
}

func (s *Store) probeErr(err error) error {
	switch status.Code(err) {
	case codes.NotFound:
		return fmt.Errorf("clouddatastore: %s: the project or database does not exist (or has no Firestore database in Datastore mode): %w", s.where, err)
	case codes.PermissionDenied, codes.Unauthenticated:
		return fmt.Errorf("clouddatastore: %s: no permission (check the credentials, Application Default Credentials by default): %w", s.where, err)
	case codes.FailedPrecondition:
		return fmt.Errorf("clouddatastore: %s: the database is not in Datastore mode, or not ready: %w", s.where, err)
	case codes.DeadlineExceeded, codes.Unavailable:
		return fmt.Errorf("clouddatastore: %s: Datastore does not answer: %w", s.where, err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("clouddatastore: %s: Datastore does not answer within %v: %w", s.where, s.cfg.ProbeTimeout, err)
	}
	return fmt.Errorf("clouddatastore: %s: %w", s.where, err)
}

// Client returns the store's Datastore client.
func (s *Store) Client() *datastore.Client { return s.client }

// Namespace returns the namespace that holds the store's entities.
func (s *Store) Namespace() string { return s.ns }

// Close stops Watch calls, closes the Pub/Sub wake-ups and the client if
// the store opened them. Every call after Close returns an error wrapping
// moitessier.ErrClosed.
func (s *Store) Close() error {
	var err error
	s.closeMu.Do(func() {
		s.closed.Store(true)
		close(s.done)
		if s.ownWake != nil {
			err = s.ownWake.Close()
		}
		if s.ownClient {
			err = errors.Join(err, s.client.Close())
		}
	})
	return err
}

// check returns an error wrapping ErrClosed once the store is closed.
func (s *Store) check(op string) error {
	if s.closed.Load() {
		return fmt.Errorf("clouddatastore: %s: %w", op, moitessier.ErrClosed)
	}
	return nil
}

// wrap adds the operation to an error, and ErrClosed if the store was
// closed while the call ran.
func (s *Store) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if s.closed.Load() && !errors.Is(err, moitessier.ErrClosed) {
		return fmt.Errorf("clouddatastore: %s: %w (%v)", op, moitessier.ErrClosed, err)
	}
	// gRPC reports a context that ended as a status: keep it errors.Is-able.
	switch status.Code(err) {
	case codes.Canceled:
		if !errors.Is(err, context.Canceled) {
			return fmt.Errorf("clouddatastore: %s: %w (%v)", op, context.Canceled, err)
		}
	case codes.DeadlineExceeded:
		if !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("clouddatastore: %s: %w (%v)", op, context.DeadlineExceeded, err)
		}
	}
	return fmt.Errorf("clouddatastore: %s: %w", op, err)
}

// retryable reports errors after which a transaction is known not to have
// committed and may run again: a conflict with another transaction.
func retryable(err error) bool {
	if errors.Is(err, datastore.ErrConcurrentTransaction) {
		return true
	}
	var re *retryError
	if errors.As(err, &re) {
		return true
	}
	return status.Code(err) == codes.Aborted
}

// retryError asks runTx to run a transaction again.
type retryError struct{ why string }

func (e *retryError) Error() string { return e.why }

// runTx runs fn in a read-write transaction and commits it, running both
// again while the transaction aborts on a conflict (see retry). fn must do
// all its work from what it reads in tx: it may run several times.
func (s *Store) runTx(ctx context.Context, op string, fn func(tx *datastore.Transaction) error) error {
	return s.retry(ctx, op, func() error { return s.tryTx(ctx, fn) })
}

// retry runs fn again, with exponential backoff (5 ms doubling to 1 s,
// with jitter), while it fails with a conflict — a transaction that
// aborted, or a read that met another transaction's lock (the emulator
// answers such reads with Aborted too) — for up to Config.RetryFor or
// until ctx ends.
func (s *Store) retry(ctx context.Context, op string, fn func() error) error {
	backoff := 5 * time.Millisecond
	deadline := time.Now().Add(s.cfg.RetryFor)
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil {
			if attempt > 1 {
				s.stats.retries.Add(int64(attempt - 1))
			}
			return nil
		}
		if !retryable(err) {
			return err
		}
		s.stats.aborts.Add(1)
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("%s: gave up after %d attempts: %w", op, attempt, err)
		}
		d := backoff/2 + time.Duration(randUint64()%uint64(backoff))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w (after %d attempts: %v)", op, ctx.Err(), attempt, err)
		case <-t.C:
		}
		backoff = min(backoff*2, time.Second)
	}
}

// get reads one entity outside a transaction, retrying on conflicts.
func (s *Store) get(ctx context.Context, k *datastore.Key, dst any) error {
	return s.retry(ctx, "get", func() error { return s.client.Get(ctx, k, dst) })
}

// getAll runs a query outside a transaction, retrying on conflicts. dst
// is a pointer to a slice, or nil for a keys-only query.
func (s *Store) getAll(ctx context.Context, q *datastore.Query, dst any) ([]*datastore.Key, error) {
	var keys []*datastore.Key
	err := s.retry(ctx, "query", func() error {
		var err error
		keys, err = s.client.GetAll(ctx, q, dst)
		if err != nil && dst != nil {
			reflectReset(dst)
		}
		return err
	})
	return keys, err
}

func (s *Store) tryTx(ctx context.Context, fn func(tx *datastore.Transaction) error) error {
	tx, err := s.client.NewTransaction(ctx, datastore.BeginLater)
	if err != nil {
		return err
	}
	s.stats.txns.Add(1)
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if _, err = tx.Commit(); err != nil && !retryable(err) && ambiguous(err) {
		return fmt.Errorf("commit: %w: %w", moitessier.ErrOutcomeUnknown, err)
	}
	return err
}

// ambiguous reports a commit error after which the commit may or may not
// have been applied: the request or its answer was lost.
func ambiguous(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Unknown, codes.Internal:
		return true
	}
	return false
}

// errRollback is returned by a transaction function that decided to write
// nothing: runTx rolls back and returns it, and its caller treats it as
// success.
var errRollback = errors.New("rollback")

func randUint64() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:])
}

// newVersion returns a random non-zero version stamp.
func newVersion() int64 {
	for {
		if v := int64(randUint64() >> 1); v != 0 {
			return v
		}
	}
}

// newIncarnation returns a random name for one incarnation of a listener.
func newIncarnation() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Times are stored as Unix nanoseconds and cursors as int64, as
// storecodec converts them.
func toNS(t time.Time) int64          { return storecodec.Time(t) }
func fromNS(ns int64) time.Time       { return storecodec.ParseTime(ns) }
func toSeq(c moitessier.Cursor) int64 { return storecodec.Seq(c) }

// reflectReset empties the slice dst points to, so that a retried GetAll
// does not append to what a failed one loaded.
func reflectReset(dst any) {
	v := reflect.ValueOf(dst)
	if v.Kind() == reflect.Pointer && v.Elem().Kind() == reflect.Slice {
		v.Elem().SetLen(0)
	}
}
