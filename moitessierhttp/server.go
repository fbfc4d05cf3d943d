package moitessierhttp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/likestripes/moitessier"
)

// Config configures a Server. Either Secret or Authenticate is required;
// every other field's zero value works and each field documents its default.
type Config struct {
	// Secret is the HMAC key of the HS256 tokens the server accepts (see
	// [Sign] and [Verify]): at least MinSecretBytes (32) random bytes, as
	// "openssl rand -base64 32" makes. Required unless Authenticate is set.
	Secret []byte
	// Authenticate, if set, replaces token verification: it returns the
	// claims of a request, or an error that wraps ErrNoToken or
	// ErrInvalidToken (401) or ErrForbidden (403).
	Authenticate func(r *http.Request) (*Claims, error)

	// AllowedOrigins are the origins allowed to call the server from a
	// browser on another origin, as "https://app.example.com", or "*" for
	// any. Each is a pattern matched against the whole origin
	// (scheme://host[:port]), case-insensitively, with [path.Match]:
	// "https://*.example.com" allows every subdomain of example.com over
	// https on its default port. The same patterns serve CORS and the
	// Origin check of WebSockets, so that a page allowed one is allowed
	// the other; a WebSocket from a page on the server's own host is
	// always allowed. Default: none, so only same-origin pages and
	// non-browser clients.
	AllowedOrigins []string

	// MaxMessageBytes is the largest message text a dispatch may carry;
	// larger gets 413. Default 64 KiB (the hub's own default limit).
	MaxMessageBytes int
	// MaxListenersPerConn is the most listeners one WebSocket connection
	// may listen to at once; one more gets a too_many_listeners error.
	// (An SSE or long-poll request always has exactly one.) Default 16.
	MaxListenersPerConn int
	// MaxStreamsPerPerson is the most streams one person may hold open at
	// once in this process: SSE streams, WebSocket connections (each with
	// up to MaxListenersPerConn listens) and waiting long-polls together.
	// One more gets 429 too_many_streams ([ErrTooManyStreams]) before
	// anything is joined; room comes back when one of them ends. Every
	// open stream holds a connection, a goroutine and its buffers, so
	// without it one token could hold as many as the hub has file
	// descriptors. Default [DefaultMaxStreamsPerPerson], 32 (several tabs
	// on several devices); negative: no limit.
	MaxStreamsPerPerson int
	// DispatchRate is how many dispatches per second one person may make,
	// over HTTP and WebSocket together; more get 429 with Retry-After. It
	// is counted in this process: N hubs on one store allow N times it.
	// Default [DefaultDispatchRate], 50 a second (a chat is far below it; a
	// script that loops is not); negative: no limit.
	DispatchRate float64
	// DispatchBurst is how many dispatches a person may make at once above
	// DispatchRate. Default: twice DispatchRate rounded up, at least 1 (100
	// with the default rate).
	DispatchBurst int
	// JoinRate is how many listener operations per second one person may
	// make, counted in this process: joining or creating a listener (POST
	// /v1/listeners, and every SSE stream, long-poll and WebSocket listen,
	// each of which joins the listener it names) and leaving one (DELETE
	// /v1/listeners/{id}, a WebSocket unlisten with leave). Each is a
	// write to the store. More get 429 rate_limited with Retry-After,
	// before anything is read or written. Default [DefaultJoinRate], 20 a
	// second: a page that joins a few listeners is far below it. A
	// long-poll client joins with every poll: a poll past the rate whose
	// token comes within its timeout waits for it (as an SSE stream waits
	// up to 5 s), so that a client polling again after every answer in a
	// busy room is slowed to the rate, each answer holding more messages,
	// rather than refused; a script that loops is slowed or refused.
	// Negative: no limit.
	JoinRate float64
	// JoinBurst is how many listener operations a person may make at once
	// above JoinRate: every tab of a person reconnecting at once after a
	// restart, say. Default: five times JoinRate rounded up, at least 1
	// (100 with the default rate).
	JoinBurst int
	// HandlerTimeRate is how much handler time (the wall time of the
	// handler calls of a person's dispatches, moitessier.Dispatched's
	// HandlerTime) one person may use per second on average, counted in
	// this process: a token bucket of time. A dispatch that names
	// handlers takes half of what its sender's bucket holds, at most the
	// hub's HandlerBudget, as its own budget (moitessier.Budget), and
	// gives back what its handlers did not use; so a person's concurrent
	// dispatches together never hold more than the bucket. When the half
	// is under 10 ms, the dispatch gets 429 handler_budget with
	// Retry-After before any handler runs; one that runs out of a share
	// smaller than HandlerBudget gets the same (with the whole budget it
	// might have succeeded). A dispatch that names no handler is not
	// affected. Default [DefaultHandlerTimeRate], 250 ms a second (a
	// quarter of a core, while handlers that compute a message take
	// microseconds); negative: no limit.
	HandlerTimeRate time.Duration
	// HandlerTimeBurst is the bucket's size: the most handler time a
	// person may use at once. Default [DefaultHandlerTimeBurst], 4 s, so
	// that a dispatch finding the bucket full gets the hub's whole default
	// HandlerBudget (2 s). At least 20 ms.
	HandlerTimeBurst time.Duration

	// Heartbeat is how often an idle SSE stream gets a comment line and a
	// WebSocket a ping, so that proxies keep the connection and dead peers
	// are found. Default 15 s.
	Heartbeat time.Duration
	// WriteTimeout bounds every write to a streaming client. A client that
	// does not take its messages within it is a slow consumer: its
	// connection is dropped (it resumes from its cursor), so it never holds
	// back a dispatcher or another client. Default 10 s.
	WriteTimeout time.Duration
	// SSEBatchInterval is the least time between two writes to one SSE
	// stream, or of one WebSocket listen: the messages that come while a
	// stream waits go out together in its next write (one frame on a
	// WebSocket). Each write costs a system call per client, so when one
	// scope has thousands of listening clients and messages come fast,
	// writing each message as it comes costs the hub more than it has,
	// and latency grows with the backlog; batching bounds the writes. A
	// stream that has not written within the interval writes at once.
	// Default 0: 40 µs per busy stream (an SSE stream or WebSocket listen
	// that wrote in the last 100 to 200 ms, this one included), at most
	// 150 ms (4 ms with 100 busy streams, 150 ms with 4 000 or
	// more), chosen from the cost of a write to a stream (see the README's
	// benchmark section) so that the streams take at most about a quarter
	// of a core; under 1 ms (fewer than 25 busy streams), no wait. Idle
	// connections do not count: a thousand clients waiting for their
	// notifications do not slow a busy room's stream. Negative: no wait.
	SSEBatchInterval time.Duration
	// BodyTimeout bounds the time a request body may take to arrive, from
	// when the server starts reading it (after the token is checked): a
	// client that has not sent all of it by then gets 408 and its
	// connection is closed. Default 10 s.
	BodyTimeout time.Duration
	// TCPAckInterval is how often the SSE streams that wrote messages their
	// client's TCP stack has not acknowledged yet ask the kernel how far it
	// has (one system call per such stream), and the time a message
	// acknowledged by the client's TCP stack waits, the connection staying
	// open, before it counts as received. Default 100 ms.
	TCPAckInterval time.Duration
	// NoTCPAcks turns off the TCP evidence of SSE streams: each stream then
	// acknowledges only what the client shows on its next request
	// (Last-Event-ID, since=N). Set it when the hub is behind a proxy that
	// does not say so with a Forwarded, X-Forwarded-For, X-Real-IP or Via
	// header (on a request with one, the TCP evidence is not used anyway):
	// the proxy's TCP stack, not the client's, acknowledges what the hub
	// writes.
	NoTCPAcks bool
	// PollTimeout is how long a long-poll waits for messages when the
	// request does not say. Default 25 s.
	PollTimeout time.Duration
	// MaxPollTimeout bounds the timeout a long-poll may ask for. Default 60 s.
	MaxPollTimeout time.Duration
	// MaxPollBytes bounds the messages of one long-poll answer, in bytes of
	// their JSON: an answer holds the messages up to it, and always at
	// least one (a message larger than it goes alone); its cursor is the
	// last one's, and the next poll continues from there. JSON may spell a
	// byte of text in 6, so without it the hub's BatchLimit messages of the
	// largest size would make one answer of about a hundred times
	// MaxMessageBytes. Default [DefaultMaxPollBytes], 1 MiB.
	MaxPollBytes int
	// ResponseTimeout bounds the writing of every answer that is not a
	// stream (a long-poll's messages, a dispatch's result, an error): a
	// client that has not taken it by then has its connection closed, so
	// that it holds neither the answer nor the handler. It runs from when
	// the answer is written, not from the request: a long-poll's wait does
	// not count. Default 30 s: a whole long-poll answer (MaxPollBytes) at
	// 35 KB/s.
	ResponseTimeout time.Duration

	// Handlers are the handler functions a dispatch may name ("handlers":
	// ["name"]) to compute the messages of Handler listeners.
	Handlers map[string]moitessier.HandlerFunc

	// Metrics receives the server's counters. Default: a new Metrics,
	// returned by Server.Metrics.
	Metrics *Metrics
	// Logger receives the logs of internal errors. Default: discard.
	Logger *slog.Logger
	// Now returns the current time, for token expiry and rate limits.
	// Default time.Now.
	Now func() time.Time
}

// DefaultDispatchRate is Config.DispatchRate's default: dispatches per
// second per person.
const DefaultDispatchRate = 50

// DefaultJoinRate is Config.JoinRate's default: joins and leaves per
// second per person.
const DefaultJoinRate = 20

// DefaultMaxStreamsPerPerson is Config.MaxStreamsPerPerson's default.
const DefaultMaxStreamsPerPerson = 32

// DefaultMaxPollBytes is Config.MaxPollBytes's default: the bytes of
// messages in one long-poll answer.
const DefaultMaxPollBytes = 1 << 20

// Defaults of the per-person handler time bucket (Config.HandlerTimeRate,
// Config.HandlerTimeBurst).
const (
	DefaultHandlerTimeRate  = 250 * time.Millisecond
	DefaultHandlerTimeBurst = 4 * time.Second
)

// DefaultConfig returns the Config that New uses for zero fields: every
// default in one place, for a command line or a config file to start
// from. Secret, Authenticate, Handlers, Metrics, Logger and Now are left
// empty.
func DefaultConfig() Config {
	c := Config{}.withDefaults()
	c.Metrics, c.Logger, c.Now = nil, nil, nil
	return c
}

func (c Config) withDefaults() Config {
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = 64 << 10
	}
	if c.MaxListenersPerConn == 0 {
		c.MaxListenersPerConn = 16
	}
	if c.MaxStreamsPerPerson == 0 {
		c.MaxStreamsPerPerson = DefaultMaxStreamsPerPerson
	}
	if c.DispatchRate == 0 {
		c.DispatchRate = DefaultDispatchRate
	}
	if c.DispatchBurst == 0 && c.DispatchRate > 0 {
		c.DispatchBurst = max(1, int(math.Ceil(2*c.DispatchRate)))
	}
	if c.JoinRate == 0 {
		c.JoinRate = DefaultJoinRate
	}
	if c.JoinBurst == 0 && c.JoinRate > 0 {
		c.JoinBurst = max(1, int(math.Ceil(5*c.JoinRate)))
	}
	if c.HandlerTimeRate == 0 {
		c.HandlerTimeRate = DefaultHandlerTimeRate
	}
	if c.HandlerTimeBurst == 0 {
		c.HandlerTimeBurst = DefaultHandlerTimeBurst
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = 15 * time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.BodyTimeout == 0 {
		c.BodyTimeout = 10 * time.Second
	}
	if c.PollTimeout == 0 {
		c.PollTimeout = 25 * time.Second
	}
	if c.MaxPollTimeout == 0 {
		c.MaxPollTimeout = 60 * time.Second
	}
	if c.MaxPollBytes == 0 {
		c.MaxPollBytes = DefaultMaxPollBytes
	}
	if c.ResponseTimeout == 0 {
		c.ResponseTimeout = 30 * time.Second
	}
	if c.TCPAckInterval == 0 {
		c.TCPAckInterval = 100 * time.Millisecond
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

func (c Config) validate() error {
	switch {
	case len(c.Secret) == 0 && c.Authenticate == nil:
		return fmt.Errorf("config: %w: Secret or Authenticate is required", moitessier.ErrInvalidArgument)
	case len(c.Secret) > 0 && CheckSecret(c.Secret) != nil:
		return fmt.Errorf("config: Secret: %w", CheckSecret(c.Secret))
	case c.MaxMessageBytes < 0, c.MaxListenersPerConn < 0, c.DispatchBurst < 0, c.JoinBurst < 0, c.HandlerTimeBurst < 0, c.MaxPollBytes < 0:
		return fmt.Errorf("config: %w: negative limit", moitessier.ErrInvalidArgument)
	case c.HandlerTimeRate > 0 && c.HandlerTimeBurst < 2*minHandlerShare:
		return fmt.Errorf("config: %w: HandlerTimeBurst under %v", moitessier.ErrInvalidArgument, 2*minHandlerShare)
	case c.Heartbeat < 0, c.WriteTimeout < 0, c.PollTimeout < 0, c.MaxPollTimeout < 0, c.BodyTimeout < 0, c.TCPAckInterval < 0, c.ResponseTimeout < 0:
		return fmt.Errorf("config: %w: negative duration", moitessier.ErrInvalidArgument)
	case c.PollTimeout > c.MaxPollTimeout:
		return fmt.Errorf("config: %w: PollTimeout above MaxPollTimeout", moitessier.ErrInvalidArgument)
	}
	for _, o := range c.AllowedOrigins {
		if o != "*" && !strings.Contains(o, "://") {
			return fmt.Errorf("config: %w: allowed origin %q: want scheme://host[:port] or *", moitessier.ErrInvalidArgument, o)
		}
		if _, err := path.Match(o, ""); err != nil {
			return fmt.Errorf("config: %w: allowed origin %q: %w", moitessier.ErrInvalidArgument, o, err)
		}
	}
	return nil
}

// Server serves a Hub over HTTP: Server-Sent Events, WebSocket, long-poll,
// dispatch and read state, behind token auth. It is an http.Handler for
// the paths below, which an app mounts on its own mux (as is, or under a
// prefix with http.StripPrefix):
//
//	GET    /v1/events                       Server-Sent Events stream of one listener
//	GET    /v1/ws                           WebSocket: listen to several listeners, dispatch
//	GET    /v1/poll                         long-poll: messages after a cursor, or none at a timeout
//	POST   /v1/dispatch                     dispatch a message
//	POST   /v1/listeners                    create or join a listener; its ID and your cursor
//	GET    /v1/listeners/{id}               a listener's description and head
//	GET    /v1/listeners/{id}/subscribers   read state: each subscriber's acknowledged cursor
//	DELETE /v1/listeners/{id}               leave a listener (the last one out deletes it)
//	GET    /v1/whoami                       the claims of the caller's token
//
// Close (or Shutdown) ends every stream cleanly, so that an http.Server's
// Shutdown can complete.
type Server struct {
	hub     *moitessier.Hub
	cfg     Config
	log     *slog.Logger
	metrics *Metrics
	mux     *http.ServeMux
	limiter *limiter
	// joins is the per-person bucket of listener operations; nil when
	// Config.JoinRate is negative.
	joins *limiter
	// handlerTime is the per-person bucket of handler time, in seconds;
	// nil when Config.HandlerTimeRate is negative.
	handlerTime *limiter
	enc         *encCache
	busy        busyStreams // the streams that write, which the default batch interval is sized by

	anyOrigin bool
	origins   []string // AllowedOrigins but "*", lower case, as originAllowed matches them

	// ctx is cancelled by Close: every stream ends.
	ctx       context.Context
	cancel    context.CancelFunc
	streams   streamGroup // also says whether Close was called
	tcpAcks   *tcpAcks
	closes    closeWatcher // hijacked connections' clients leaving or sending; stopped once Close ended the streams
	closeOnce sync.Once
	ws        wsConns // open WebSockets, stopped by Close
	tokens    tokenCache
	held      streamCounts // each person's open streams, for Config.MaxStreamsPerPerson
}

// New returns a Server for hub. The Server does not own the hub: close the
// Server first, then the hub.
func New(hub *moitessier.Hub, cfg Config) (*Server, error) {
	if hub == nil {
		return nil, fmt.Errorf("moitessierhttp: new: %w: nil hub", moitessier.ErrInvalidArgument)
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("moitessierhttp: new: %w", err)
	}
	s := &Server{
		hub:       hub,
		cfg:       cfg,
		log:       cfg.Logger,
		metrics:   cfg.Metrics,
		mux:       http.NewServeMux(),
		enc:       newEncCache(),
		anyOrigin: slices.Contains(cfg.AllowedOrigins, "*"),
		busy:      busyStreams{origin: time.Now()},
	}
	for _, o := range cfg.AllowedOrigins {
		if o != "*" {
			s.origins = append(s.origins, strings.ToLower(strings.TrimRight(o, "/")))
		}
	}
	if cfg.DispatchRate > 0 {
		s.limiter = newLimiter(cfg.DispatchRate, cfg.DispatchBurst)
	}
	if cfg.JoinRate > 0 {
		s.joins = newLimiter(cfg.JoinRate, cfg.JoinBurst)
	}
	if cfg.HandlerTimeRate > 0 {
		s.handlerTime = &limiter{rate: cfg.HandlerTimeRate.Seconds(), burst: cfg.HandlerTimeBurst.Seconds(), buckets: map[string]*bucket{}}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.tcpAcks = &tcpAcks{every: cfg.TCPAckInterval, done: s.ctx.Done(), group: &s.streams}
	s.mux.HandleFunc("GET /v1/events", s.serveSSE)
	s.mux.HandleFunc("GET /v1/ws", s.serveWS)
	s.mux.HandleFunc("GET /v1/poll", s.servePoll)
	s.mux.HandleFunc("POST /v1/dispatch", s.serveDispatch)
	s.mux.HandleFunc("POST /v1/listeners", s.serveJoin)
	s.mux.HandleFunc("GET /v1/listeners/{id}", s.serveInfo)
	s.mux.HandleFunc("GET /v1/listeners/{id}/subscribers", s.serveReadState)
	s.mux.HandleFunc("DELETE /v1/listeners/{id}", s.serveLeave)
	s.mux.HandleFunc("GET /v1/whoami", s.serveWhoami)
	s.mux.HandleFunc("/v1/", s.serveNoRoute)
	return s, nil
}

// Metrics returns the server's metrics.
func (s *Server) Metrics() *Metrics { return s.metrics }

// ServeHTTP serves the endpoints listed on Server, with CORS.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.cors(w, r) || s.refuseInput(w, r) {
		return
	}
	s.mux.ServeHTTP(w, r)
}

// refuseInput answers 400 for a query that does not parse (more than
// 10 000 parameters, a bad escape, a semicolon). A request with a body
// gets a read deadline of Config.BodyTimeout and, on HTTP/1, is marked to
// close its connection after the answer, until a handler has read the
// whole body (see readBody): net/http reads what is left of a body before
// it answers, and again after, and a client may never send it. It reports
// whether it answered.
func (s *Server) refuseInput(w http.ResponseWriter, r *http.Request) bool {
	if hasBody(r) {
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.cfg.BodyTimeout))
		if r.ProtoMajor == 1 {
			w.Header().Set("Connection", "close")
		}
	}
	if _, err := url.ParseQuery(r.URL.RawQuery); err != nil {
		s.writeError(w, r, fmt.Errorf("%w: query: %w", ErrBadRequest, err))
		return true
	}
	return false
}

func hasBody(r *http.Request) bool {
	return r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
}

// serveNoRoute answers a path the Server does not serve with 404, or a
// method a path does not take with 405 and the Allow header.
func (s *Server) serveNoRoute(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodDelete} {
		if _, pattern := s.mux.Handler(&http.Request{Method: m, URL: r.URL, Host: r.Host}); pattern != "/v1/" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		s.writeJSON(w, http.StatusMethodNotAllowed, ErrorBody{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed", Error: r.Method + " " + r.URL.Path + ": allowed: " + strings.Join(allow, ", ")})
		return
	}
	s.writeJSON(w, http.StatusNotFound, ErrorBody{Status: http.StatusNotFound, Code: "not_found", Error: "no such endpoint: " + r.Method + " " + r.URL.Path})
}

// SSE returns the Server-Sent Events handler alone, to mount elsewhere.
func (s *Server) SSE() http.Handler { return s.corsWrap(s.serveSSE) }

// WebSocket returns the WebSocket handler alone.
func (s *Server) WebSocket() http.Handler { return s.corsWrap(s.serveWS) }

// Poll returns the long-poll handler alone.
func (s *Server) Poll() http.Handler { return s.corsWrap(s.servePoll) }

// Dispatch returns the dispatch handler alone.
func (s *Server) Dispatch() http.Handler { return s.corsWrap(s.serveDispatch) }

// ReadState returns the read-state handler alone. Mounted outside the
// Server's own mux, it takes the listener ID from the "listener" query
// parameter.
func (s *Server) ReadState() http.Handler { return s.corsWrap(s.serveReadState) }

// corsWrap adds CORS to a handler mounted on its own.
func (s *Server) corsWrap(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.cors(w, r) || s.refuseInput(w, r) {
			return
		}
		h(w, r)
	})
}

// Close ends every stream at once, each with a clean close (an SSE "close"
// event, a WebSocket close frame 1001 "going away"), answers waiting
// long-polls, and refuses new streams with 503. It does not wait.
func (s *Server) Close() {
	drained := s.streams.close()
	s.cancel()
	// The close watcher stays until the streams have ended: a WebSocket
	// reads its client's answer to its close frame through it.
	s.closeOnce.Do(func() {
		go func() {
			<-drained
			s.closes.close()
		}()
	})
}

// Shutdown is Close, then waits until every stream handler has returned or
// ctx is done. Call it before http.Server.Shutdown, which does not end
// streams by itself.
func (s *Server) Shutdown(ctx context.Context) error {
	s.Close()
	drained := s.streams.close()
	select {
	case <-drained: // ended, whether or not ctx is done too
		return nil
	default:
	}
	select {
	case <-drained:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// beginStream registers a long-lived request; the returned context is
// cancelled when the parent is or the Server closes.
func (s *Server) beginStream(parent context.Context) (context.Context, func(), error) {
	ctx, _, end, err := s.beginCancelableStream(parent)
	return ctx, end, err
}

// beginCancelableStream is beginStream that also returns the context's
// cancel function (one context per stream, rather than another under it).
func (s *Server) beginCancelableStream(parent context.Context) (context.Context, context.CancelFunc, func(), error) {
	if !s.streams.begin() {
		return nil, nil, nil, errServerClosing
	}
	ctx, cancel := context.WithCancel(parent)
	stop := context.AfterFunc(s.ctx, cancel)
	return ctx, cancel, func() {
		stop()
		cancel()
		s.streams.done()
	}, nil
}

// streamGroup counts the Server's streams, and the goroutines that serve
// them, and tells when the last has ended once the Server closes. Unlike a
// sync.WaitGroup, begin may be called while another goroutine waits for the
// streams to end: once closing, it counts nothing and returns false, under
// the lock that close takes, so a request that comes after Close is turned
// away without touching the count.
type streamGroup struct {
	mu      sync.Mutex
	n       int
	closing bool
	drained chan struct{} // made by close; closed once closing and n is zero
}

// begin counts a new stream, or returns false once the group is closing.
func (g *streamGroup) begin() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing {
		return false
	}
	g.n++
	return true
}

// isClosing reports whether close was called.
func (g *streamGroup) isClosing() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closing
}

// add counts a goroutine that a counted stream starts: while that stream
// runs the count is not zero, so it may be added even when closing.
func (g *streamGroup) add() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.n == 0 && g.closing {
		panic("moitessierhttp: streamGroup.add after every stream ended")
	}
	g.n++
}

// done uncounts what begin or add counted.
func (g *streamGroup) done() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.n == 0 {
		panic("moitessierhttp: streamGroup.done with nothing counted")
	}
	g.n--
	if g.n == 0 && g.closing {
		close(g.drained)
	}
}

// close turns new streams away and returns a channel closed once every
// counted stream and goroutine is done. It may be called more than once.
func (g *streamGroup) close() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closing {
		g.closing = true
		g.drained = make(chan struct{})
		if g.n == 0 {
			close(g.drained)
		}
	}
	return g.drained
}

// streamCounts counts each person's open streams in this process.
type streamCounts struct {
	mu sync.Mutex
	m  map[string]int
}

// holdStream counts a stream that person opens, or returns an error
// wrapping ErrTooManyStreams if they hold Config.MaxStreamsPerPerson
// already. Every stream it counts is released with releaseStream, on
// every path by which the stream ends or fails to begin.
func (s *Server) holdStream(person string) error {
	most := s.cfg.MaxStreamsPerPerson
	if most < 0 {
		return nil
	}
	h := &s.held
	h.mu.Lock()
	defer h.mu.Unlock()
	if n := h.m[person]; n >= most {
		return fmt.Errorf("%w: %q holds %d streams (SSE, WebSocket, long-poll), the most allowed", ErrTooManyStreams, person, n)
	}
	if h.m == nil {
		h.m = make(map[string]int)
	}
	h.m[person]++
	return nil
}

// releaseStream ends what holdStream counted.
func (s *Server) releaseStream(person string) {
	if s.cfg.MaxStreamsPerPerson < 0 {
		return
	}
	h := &s.held
	h.mu.Lock()
	defer h.mu.Unlock()
	// Deleted at zero, so that the map holds only persons with streams.
	if n := h.m[person] - 1; n > 0 {
		h.m[person] = n
	} else {
		delete(h.m, person)
	}
}

// cors sets the CORS headers of an allowed origin and answers preflight
// requests. It reports whether it answered the request.
func (s *Server) cors(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return false
	}
	h := w.Header()
	h.Add("Vary", "Origin")
	allowed := s.originAllowed(origin)
	if allowed {
		if s.anyOrigin {
			h.Set("Access-Control-Allow-Origin", "*")
		} else {
			h.Set("Access-Control-Allow-Origin", origin)
		}
		h.Set("Access-Control-Expose-Headers", "Retry-After, Idempotent-Replayed")
	}
	if r.Method != http.MethodOptions || r.Header.Get("Access-Control-Request-Method") == "" {
		return false
	}
	if allowed {
		h.Set("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Idempotency-Key, Last-Event-ID")
		h.Set("Access-Control-Max-Age", "600")
	}
	w.WriteHeader(http.StatusNoContent)
	return true
}

// originAllowed reports whether a page of origin, as a browser sends it in
// its Origin header, may call the server from another origin: whether it
// matches one of Config.AllowedOrigins.
func (s *Server) originAllowed(origin string) bool {
	if s.anyOrigin {
		return true
	}
	origin = strings.ToLower(origin)
	for _, p := range s.origins {
		if ok, _ := path.Match(p, origin); ok {
			return true
		}
	}
	return false
}

// wsOriginAllowed is the Origin check of a WebSocket handshake: a request
// without Origin (not from a browser) or from a page on the server's own
// host, as the WebSocket library would allow, or from an allowed origin,
// matched as CORS matches it.
func (s *Server) wsOriginAllowed(r *http.Request) error {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	if u, err := url.Parse(origin); err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host) {
		return nil
	}
	if s.originAllowed(origin) {
		return nil
	}
	return fmt.Errorf("origin %.128q: %w: not an allowed origin", origin, ErrForbidden)
}

// authenticate returns the claims of the request's token.
func (s *Server) authenticate(r *http.Request) (*Claims, error) {
	if s.cfg.Authenticate != nil {
		c, err := s.cfg.Authenticate(r)
		if err == nil && (c == nil || c.Subject == "") {
			err = tokenErr(ErrTokenMalformed, "no subject")
		}
		if err != nil {
			s.metrics.authFailures.Add(1)
			return nil, err
		}
		return c, nil
	}
	tok := bearer(r)
	if tok == "" {
		s.metrics.authFailures.Add(1)
		return nil, ErrNoToken
	}
	c, err := s.tokens.verify(s.cfg.Secret, tok, s.cfg.Now())
	if err != nil {
		s.metrics.authFailures.Add(1)
		return nil, err
	}
	return c, nil
}

// tokenLife is how long the token stays valid: streams end when it expires.
func (s *Server) tokenLife(c *Claims) time.Duration {
	if c.ExpiresAt == 0 {
		return 0
	}
	d := time.Unix(c.ExpiresAt, 0).Sub(s.cfg.Now())
	if d <= 0 {
		return time.Nanosecond
	}
	return d
}

// openListener gets the listener a request names, for the token's person,
// checking that the token grants every one of its scopes.
func (s *Server) openListener(ctx context.Context, c *Claims, spec listenSpec) (*moitessier.Listener, moitessier.ListenerInfo, error) {
	var (
		l   *moitessier.Listener
		err error
	)
	if spec.id != "" {
		info, err := s.lookup(ctx, c, spec.id)
		if err != nil {
			return nil, info, err
		}
		if err := mayHandle(c, info.Type, info.Scopes); err != nil {
			return nil, info, err
		}
		l, err = s.hub.Open(ctx, spec.id, c.Subject, spec.client)
		if err != nil {
			return nil, info, err
		}
	} else {
		cond := moitessier.Conditions{Person: c.Subject, Type: spec.typ, Scopes: spec.scopes, Client: spec.client, Start: spec.start}
		if len(spec.scopes) == 0 {
			return nil, moitessier.ListenerInfo{}, fmt.Errorf("%w: no scope", moitessier.ErrInvalidScope)
		}
		for _, sc := range spec.scopes {
			if !c.CanListen(sc) {
				return nil, moitessier.ListenerInfo{}, fmt.Errorf("listen to %q: %w: the token does not grant it", sc, ErrForbidden)
			}
		}
		if err := mayHandle(c, spec.typ, spec.scopes); err != nil {
			return nil, moitessier.ListenerInfo{}, err
		}
		if l, err = s.hub.NewListener(ctx, cond); err != nil {
			return nil, moitessier.ListenerInfo{}, err
		}
	}
	info, err := s.hub.Info(ctx, l.ID())
	if err != nil {
		return nil, info, err
	}
	return l, info, nil
}

// lookup returns the listener with the ID if the token may read it. It
// authorizes before it looks up, and answers a listener the token may not
// read exactly as one that does not exist (404), so that nobody learns
// whether another person's listener exists: listener IDs are derived from
// their conditions, so anyone can compute the ID of, say, bob's Private
// listener on notify.bob.
func (s *Server) lookup(ctx context.Context, c *Claims, id string) (moitessier.ListenerInfo, error) {
	if len(c.Listen) == 0 {
		return moitessier.ListenerInfo{}, fmt.Errorf("listener: %w: the token grants no scope to listen to", ErrForbidden)
	}
	info, err := s.hub.Info(ctx, id)
	if errors.Is(err, moitessier.ErrNotFound) || err == nil && s.mayRead(c, info) != nil {
		return moitessier.ListenerInfo{}, fmt.Errorf("listener %.64q: %w", id, moitessier.ErrNotFound)
	}
	return info, err
}

// mayHandle checks that the token may hold a Handler listener on scopes:
// a Handler listener stores a copy of every matching dispatch, computed by
// the dispatcher's handlers, so it takes a dispatch grant that covers each
// of its scopes (see [Covers]), not only a listen grant. Shared and Private
// listeners need only listen grants; quotas bound how many anyone holds.
func mayHandle(c *Claims, typ moitessier.ListenerType, scopes []string) error {
	if typ != moitessier.Handler {
		return nil
	}
	for _, sc := range scopes {
		if !slices.ContainsFunc(c.Dispatch, func(g string) bool { return Covers(g, sc) }) {
			return fmt.Errorf("handler listener on %q: %w: it takes a dispatch grant covering the scope", sc, ErrForbidden)
		}
	}
	return nil
}

// mayRead checks that the token may see a listener: it grants all of the
// listener's scopes, and the listener is the person's own if it is Private
// or Handler.
func (s *Server) mayRead(c *Claims, info moitessier.ListenerInfo) error {
	if info.Owned() && info.Person != c.Subject {
		return fmt.Errorf("listener %s: %w", info.ID, moitessier.ErrNotOwner)
	}
	for _, sc := range info.Scopes {
		if !c.CanListen(sc) {
			return fmt.Errorf("listener %s: scope %q: %w: the token does not grant it", info.ID, sc, ErrForbidden)
		}
	}
	return nil
}

// openListen begins a listening request (long-poll, SSE, WebSocket): it
// answers HEAD itself (serveHead, with contentType), authenticates, and
// reads and discards a body of at most 64 KiB. It returns the claims, or
// false once it has written the error.
func (s *Server) openListen(w http.ResponseWriter, r *http.Request, contentType string) (*Claims, bool) {
	if r.Method == http.MethodHead {
		s.serveHead(w, r, contentType)
		return nil, false
	}
	c, err := s.authenticate(r)
	if err == nil {
		err = s.drainBody(w, r)
	}
	if err != nil {
		s.writeError(w, r, err)
		return nil, false
	}
	return c, true
}

// serveHead answers a HEAD request to a streaming endpoint as its GET would
// begin, status and headers, after the same checks of the token and the
// query, but without a body and without creating or joining a listener.
func (s *Server) serveHead(w http.ResponseWriter, r *http.Request, contentType string) {
	c, err := s.authenticate(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	spec, err := parseListen(r.URL.Query())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	for _, sc := range spec.scopes {
		if !c.CanListen(sc) {
			s.writeError(w, r, fmt.Errorf("listen to %q: %w: the token does not grant it", sc, ErrForbidden))
			return
		}
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
}

// isTimeout reports whether err is a write that timed out: a slow consumer.
func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}
