package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/cmd/moitessier/demo"
	"github.com/likestripes/moitessier/moitessierhttp"
)

const serveDescription = `
Serve a hub over HTTP on --addr, printing the address to open:

  /                         the demo page
  /v1/...                   the API: SSE (/v1/events), WebSocket (/v1/ws),
                            long-poll (/v1/poll), dispatch (POST /v1/dispatch),
                            listeners and read state (/v1/listeners/{id}/subscribers)
  /healthz                  200 when the store answers
  /metrics                  Prometheus metrics
  /dev/token                (development mode) POST ?sub=NAME mints a token (every
                            scope, or only &listen=P and &dispatch=P patterns)

The store is a SQLite file (./moitessier.db by default; one process at a
time), or PostgreSQL with --store postgres://... (many hubs may share it).

Requests carry an HS256 token (Authorization: Bearer, or ?access_token= for
EventSource and browser WebSockets) signed with --secret. Without a secret,
the hub makes a random one and runs in development mode: /dev/token mints a
token for any name, granting every scope, and dispatches may name the demo
page's handlers (greet, upper; with a secret, only with --demo-handlers).
Never expose that mode. The random secret is kept in FILE.dev-secret beside
a SQLite store FILE, so that tokens survive a restart (see --dev-secret-file).

Limits without a flag: a long-poll waits 25s unless it asks (?timeout=, at
most 60s) and answers at most 256 messages, and 1 MiB of them; a
read-state page holds 100 subscribers (?limit=, at most 1000); a token is
at most 16 KiB; a request has at most 10000 query parameters. The flags
below set the others: the quotas per person (--quota-*), --max-handlers,
--max-recipients, --handler-budget, --max-message-bytes,
--max-scopes-per-listener, --max-listeners, --max-streams, --rate and
--burst, --join-rate and --join-burst, --handler-rate and --handler-burst
(these seven per hub process: N hubs on one store allow N times),
--body-timeout, --write-timeout and --response-timeout. The README's "Limits and quotas" lists them all with
their defaults.

SIGINT or SIGTERM shut the hub down gracefully: streams get a clean close
(SSE "close" event, WebSocket 1001) and clients resume elsewhere.`

type serveConfig struct {
	addr, store, schema, secret string
	devTokens                   bool
	devTokenTTL                 time.Duration
	cors                        listFlag
	maxMessageBytes             int
	maxHandlers                 int
	maxRecipients               int
	handlerBudget               time.Duration
	demoHandlers                bool
	maxListeners                int
	maxStreams                  int
	rate                        float64
	burst                       int
	joinRate                    float64
	joinBurst                   int
	handlerRate, handlerBurst   time.Duration
	heartbeat, writeTimeout     time.Duration
	responseTimeout             time.Duration
	sseBatch                    time.Duration
	lease, retention, gcEvery   time.Duration
	shutdownTimeout             time.Duration
	logFormat, logLevel         string
	ackInterval                 time.Duration
	noTCPAcks                   bool
	pprof                       bool
	quota                       moitessier.Quota
	maxScopes                   int
	bodyTimeout                 time.Duration
	devSecretFile               string
	durableJoins                bool
}

func serveFlags(stderr io.Writer) (*serveConfig, *flag.FlagSet) {
	c := &serveConfig{}
	// Every default is the library's: DefaultOptions for the hub,
	// DefaultConfig for the HTTP server.
	d, hd := moitessier.DefaultOptions(), moitessierhttp.DefaultConfig()
	fs := newFlags("serve", "[flags]", serveDescription, stderr)
	fs.StringVar(&c.addr, "addr", env("MOITESSIER_ADDR", "127.0.0.1:8080"), "address to listen on (env MOITESSIER_ADDR)")
	fs.StringVar(&c.store, "store", env("MOITESSIER_STORE", "moitessier.db"), storeHelp)
	fs.StringVar(&c.schema, "schema", env("MOITESSIER_PG_SCHEMA", ""), "PostgreSQL schema of the store (env MOITESSIER_PG_SCHEMA; default moitessier)")
	fs.BoolVar(&c.durableJoins, "durable-joins", envBool("MOITESSIER_PG_DURABLE_JOINS", false), "PostgreSQL: creating a listener waits for its commit to reach the disk; without it a server crash can lose a listener created in its last few hundred milliseconds that nothing used yet, such as one made by POST /v1/listeners for later reading (env MOITESSIER_PG_DURABLE_JOINS)")
	fs.StringVar(&c.secret, "secret", env("MOITESSIER_SECRET", ""), "HS256 secret that signs tokens, at least 32 bytes: make one with \"moitessier secret\" or \"openssl rand -base64 32\" (env MOITESSIER_SECRET); empty: a random one, and development mode")
	fs.BoolVar(&c.devTokens, "dev-tokens", envBool("MOITESSIER_DEV_TOKENS", false), "serve POST /dev/token even with a secret (env MOITESSIER_DEV_TOKENS); always on without one")
	fs.StringVar(&c.devSecretFile, "dev-secret-file", env("MOITESSIER_DEV_SECRET_FILE", ""), "development mode: the file that keeps the random secret (mode 0600), so that tokens survive a restart (env MOITESSIER_DEV_SECRET_FILE); empty: FILE.dev-secret beside a SQLite store FILE, none with other stores; \"none\": a new secret at every start")
	fs.DurationVar(&c.devTokenTTL, "dev-token-ttl", envDuration("MOITESSIER_DEV_TOKEN_TTL", 24*time.Hour), "lifetime of development tokens (env MOITESSIER_DEV_TOKEN_TTL)")
	fs.Var(&c.cors, "cors", "origin allowed to call the hub from a browser page elsewhere, for CORS and WebSockets alike, as https://app.example, a pattern as https://*.example.com (Go's path.Match, case-insensitive), or * (repeatable or comma-separated; env MOITESSIER_CORS)")
	fs.IntVar(&c.maxMessageBytes, "max-message-bytes", envInt("MOITESSIER_MAX_MESSAGE_BYTES", d.MaxMessageBytes), "largest message text; larger get 413 (env MOITESSIER_MAX_MESSAGE_BYTES)")
	fs.IntVar(&c.maxRecipients, "max-recipients", envInt("MOITESSIER_MAX_RECIPIENTS", d.MaxRecipients), "most persons one dispatch may address (to); more get 400 (env MOITESSIER_MAX_RECIPIENTS)")
	fs.IntVar(&c.maxHandlers, "max-handlers", envInt("MOITESSIER_MAX_HANDLERS", d.MaxHandlers), "most handlers one dispatch may name; more get 400 (env MOITESSIER_MAX_HANDLERS)")
	fs.DurationVar(&c.handlerBudget, "handler-budget", envDuration("MOITESSIER_HANDLER_BUDGET", d.HandlerBudget), "time all handler calls of one dispatch may take together; past it the dispatch stores nothing and gets 422 budget_exceeded (env MOITESSIER_HANDLER_BUDGET); negative: no budget")
	fs.BoolVar(&c.demoHandlers, "demo-handlers", envBool("MOITESSIER_DEMO_HANDLERS", false), "offer the demo page's handlers, greet and upper, to dispatches (env MOITESSIER_DEMO_HANDLERS); always on in development mode")
	fs.IntVar(&c.maxListeners, "max-listeners", envInt("MOITESSIER_MAX_LISTENERS", hd.MaxListenersPerConn), "most listeners per WebSocket connection (env MOITESSIER_MAX_LISTENERS)")
	fs.IntVar(&c.maxStreams, "max-streams", envInt("MOITESSIER_MAX_STREAMS", hd.MaxStreamsPerPerson), "most streams (SSE streams, WebSocket connections, waiting long-polls) one person may hold open at once, counted in this process; more get 429 too_many_streams; 0 or negative for no limit (env MOITESSIER_MAX_STREAMS)")
	fs.Float64Var(&c.rate, "rate", envFloat("MOITESSIER_RATE", hd.DispatchRate), "dispatches per second per person, counted in this process (N hubs on one store allow N times); more get 429; 0 or negative for no limit (env MOITESSIER_RATE)")
	fs.Float64Var(&c.joinRate, "join-rate", envFloat("MOITESSIER_JOIN_RATE", hd.JoinRate), "joins and leaves of listeners per second per person (POST and DELETE /v1/listeners, and every SSE stream, long-poll and WebSocket listen, each a write to the store), counted in this process; more get 429; 0 or negative for no limit (env MOITESSIER_JOIN_RATE)")
	fs.IntVar(&c.joinBurst, "join-burst", envInt("MOITESSIER_JOIN_BURST", hd.JoinBurst), "joins and leaves a person may make at once above --join-rate (env MOITESSIER_JOIN_BURST); 0: five times --join-rate")
	fs.DurationVar(&c.handlerRate, "handler-rate", envDuration("MOITESSIER_HANDLER_RATE", hd.HandlerTimeRate), "handler time per second one person's dispatches may use on average, counted in this process; past it a dispatch naming handlers gets 429 handler_budget; 0 or negative for no limit (env MOITESSIER_HANDLER_RATE)")
	fs.DurationVar(&c.handlerBurst, "handler-burst", envDuration("MOITESSIER_HANDLER_BURST", hd.HandlerTimeBurst), "the most handler time one person's dispatches may hold at once; a dispatch naming handlers runs on half of what is left, at most --handler-budget; at least 20ms (env MOITESSIER_HANDLER_BURST)")
	fs.IntVar(&c.burst, "burst", envInt("MOITESSIER_BURST", hd.DispatchBurst), "dispatches a person may make at once above --rate (env MOITESSIER_BURST); 0: twice --rate")
	fs.DurationVar(&c.heartbeat, "heartbeat", envDuration("MOITESSIER_HEARTBEAT", hd.Heartbeat), "SSE heartbeat and WebSocket ping interval (env MOITESSIER_HEARTBEAT)")
	fs.DurationVar(&c.bodyTimeout, "body-timeout", envDuration("MOITESSIER_BODY_TIMEOUT", hd.BodyTimeout), "a request body must arrive within this; slower gets 408 and its connection closed (env MOITESSIER_BODY_TIMEOUT)")
	fs.DurationVar(&c.writeTimeout, "write-timeout", envDuration("MOITESSIER_WRITE_TIMEOUT", hd.WriteTimeout), "a client that takes no data for this long is dropped as a slow consumer (env MOITESSIER_WRITE_TIMEOUT)")
	fs.DurationVar(&c.responseTimeout, "response-timeout", envDuration("MOITESSIER_RESPONSE_TIMEOUT", hd.ResponseTimeout), "an answer that is not a stream (a long-poll's messages, a dispatch's result, an error) must be taken by the client within this, or its connection is closed (env MOITESSIER_RESPONSE_TIMEOUT)")
	fs.DurationVar(&c.sseBatch, "sse-batch-interval", envDuration("MOITESSIER_SSE_BATCH_INTERVAL", hd.SSEBatchInterval), "least time between two writes to one SSE stream or of one WebSocket listen; what comes meanwhile goes in one write (env MOITESSIER_SSE_BATCH_INTERVAL); 0: 40µs per busy stream (one that wrote in the last 100-200ms), at most 150ms; negative: none")
	fs.DurationVar(&c.lease, "lease", envDuration("MOITESSIER_LEASE", d.Lease), "how long a subscriber stays subscribed without listening (env MOITESSIER_LEASE)")
	fs.DurationVar(&c.retention, "retention", envDuration("MOITESSIER_RETENTION", d.Retention.MaxAge), "how long messages are kept; negative keeps all (env MOITESSIER_RETENTION)")
	fs.DurationVar(&c.gcEvery, "gc-interval", envDuration("MOITESSIER_GC_INTERVAL", d.GCInterval), "how often the hub collects garbage (env MOITESSIER_GC_INTERVAL)")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", envDuration("MOITESSIER_SHUTDOWN_TIMEOUT", 10*time.Second), "how long a graceful shutdown may take: the streams and requests, then the hub's saving of positions, each get this long (env MOITESSIER_SHUTDOWN_TIMEOUT)")
	fs.DurationVar(&c.ackInterval, "ack-interval", envDuration("MOITESSIER_ACK_INTERVAL", d.AckInterval), "how often delivered positions (server-held cursors) are saved to the store, all in one write; a stream that ends saves its own at once, so only a crash may re-deliver this much (env MOITESSIER_ACK_INTERVAL)")
	fs.IntVar(&c.quota.Listeners, "quota-listeners", envInt("MOITESSIER_QUOTA_LISTENERS", d.Quota.Listeners), "most listeners one person may own (Shared ones they created count); shared by every hub on the store; -1 for no limit (env MOITESSIER_QUOTA_LISTENERS)")
	fs.IntVar(&c.quota.Shared, "quota-shared", envInt("MOITESSIER_QUOTA_SHARED", d.Quota.Shared), "most Shared listeners one person may create (each stores a copy of everyone's dispatches to its scopes; joining one someone else created does not count); -1 for no limit (env MOITESSIER_QUOTA_SHARED)")
	fs.IntVar(&c.quota.Handlers, "quota-handlers", envInt("MOITESSIER_QUOTA_HANDLERS", d.Quota.Handlers), "most Handler listeners one person may own; -1 for no limit (env MOITESSIER_QUOTA_HANDLERS)")
	fs.IntVar(&c.quota.Subscriptions, "quota-subscriptions", envInt("MOITESSIER_QUOTA_SUBSCRIPTIONS", d.Quota.Subscriptions), "most subscriptions (listener and client) one person may hold; -1 for no limit (env MOITESSIER_QUOTA_SUBSCRIPTIONS)")
	fs.IntVar(&c.maxScopes, "max-scopes-per-listener", envInt("MOITESSIER_MAX_SCOPES_PER_LISTENER", d.MaxScopesPerListener), "most scopes and patterns one listener may name (env MOITESSIER_MAX_SCOPES_PER_LISTENER)")
	fs.BoolVar(&c.noTCPAcks, "no-tcp-acks", envBool("MOITESSIER_NO_TCP_ACKS", false), "SSE streams take no evidence of receipt from the client's TCP stack, only from its next request (Last-Event-ID): set it behind a proxy that adds no Forwarded, X-Forwarded-For, X-Real-IP or Via header (env MOITESSIER_NO_TCP_ACKS)")
	fs.BoolVar(&c.pprof, "pprof", envBool("MOITESSIER_PPROF", false), "serve Go's profiler at /debug/pprof/ (env MOITESSIER_PPROF)")
	fs.StringVar(&c.logFormat, "log-format", env("MOITESSIER_LOG_FORMAT", "text"), "log format: text or json (env MOITESSIER_LOG_FORMAT)")
	fs.StringVar(&c.logLevel, "log-level", env("MOITESSIER_LOG_LEVEL", "info"), "log level: debug, info, warn or error (env MOITESSIER_LOG_LEVEL)")
	if v := env("MOITESSIER_CORS", ""); v != "" {
		_ = c.cors.Set(v)
	}
	return c, fs
}

func runServe(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	c, fs := serveFlags(stderr)
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "serve takes no arguments, got %q\n", fs.Args())
		return errUsage
	}
	log, err := newLogger(stderr, c.logFormat, c.logLevel)
	if err != nil {
		return err
	}
	if n, err := raiseOpenFiles(); err != nil {
		log.Warn("could not raise the open-files limit", "err", err)
	} else if n > 0 {
		log.Debug("open-files limit", "n", n)
	}
	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return err
	}
	h, err := startHub(ctx, c, log)
	if err != nil {
		ln.Close()
		return err
	}
	fmt.Fprintf(stdout, "moitessier: serving on %s (store: %s %s)\n", baseURL(ln.Addr()), h.store.kind, h.store.where)
	if h.dev {
		fmt.Fprintf(stdout, "moitessier: development mode (no --secret): tokens from  curl -X POST '%s/dev/token?sub=alice'\n", baseURL(ln.Addr()))
		if h.secretFile != "" {
			fmt.Fprintf(stdout, "moitessier: the development secret is kept in %s: tokens stay valid across restarts; delete it to revoke them\n", h.secretFile)
		}
	}
	return h.serve(ctx, ln, c.shutdownTimeout)
}

// hubServer is a running hub with its HTTP front.
type hubServer struct {
	store  *openedStore
	hub    *moitessier.Hub
	api    *moitessierhttp.Server
	http   *http.Server
	log    *slog.Logger
	dev    bool
	secret []byte
	// secretFile keeps the development secret, or is "".
	secretFile string
	devTTL     time.Duration
	started    time.Time
}

func startHub(ctx context.Context, c *serveConfig, log *slog.Logger) (*hubServer, error) {
	secret := []byte(c.secret)
	dev := len(secret) == 0
	if !dev && len(secret) < moitessierhttp.MinSecretBytes {
		return nil, fmt.Errorf("--secret (or MOITESSIER_SECRET): %w", moitessierhttp.CheckSecret(secret))
	}
	var secretFile string
	if dev {
		var err error
		if secret, secretFile, err = devSecret(c.devSecretFile, c.store); err != nil {
			return nil, err
		}
		log.Warn("development mode: no --secret, so a random one; POST /dev/token mints tokens for anyone", "secret_file", secretFile)
	}
	st, err := openStore(ctx, c.store, c.schema, c.durableJoins)
	if err != nil {
		return nil, err
	}
	hs := &hubServer{store: st, log: log, dev: dev || c.devTokens, secret: secret, secretFile: secretFile, devTTL: c.devTokenTTL, started: time.Now()}
	hub, err := moitessier.New(st.Store, moitessier.Options{
		MaxMessageBytes:      c.maxMessageBytes,
		MaxHandlers:          c.maxHandlers,
		MaxRecipients:        c.maxRecipients,
		HandlerBudget:        c.handlerBudget,
		Lease:                c.lease,
		Retention:            moitessier.Retention{MaxAge: c.retention},
		GCInterval:           c.gcEvery,
		AckInterval:          c.ackInterval,
		Quota:                c.quota,
		MaxScopesPerListener: c.maxScopes,
		Logger:               log,
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	hs.hub = hub
	var handlers map[string]moitessier.HandlerFunc
	if dev || c.demoHandlers {
		// The demo's handlers are for the demo: a production hub offers
		// them only when asked to.
		handlers = demo.Handlers(hub)
	}
	api, err := moitessierhttp.New(hub, moitessierhttp.Config{
		Secret:              secret,
		AllowedOrigins:      c.cors,
		MaxMessageBytes:     c.maxMessageBytes,
		MaxListenersPerConn: c.maxListeners,
		MaxStreamsPerPerson: cliCount(c.maxStreams),
		DispatchRate:        cliRate(c.rate),
		DispatchBurst:       c.burst,
		JoinRate:            cliRate(c.joinRate),
		JoinBurst:           c.joinBurst,
		HandlerTimeRate:     cliDuration(c.handlerRate),
		HandlerTimeBurst:    c.handlerBurst,
		Heartbeat:           c.heartbeat,
		WriteTimeout:        c.writeTimeout,
		ResponseTimeout:     c.responseTimeout,
		SSEBatchInterval:    c.sseBatch,
		BodyTimeout:         c.bodyTimeout,
		NoTCPAcks:           c.noTCPAcks,
		Handlers:            handlers,
		Logger:              log,
	})
	if err != nil {
		_ = hub.Close()
		st.Close()
		return nil, err
	}
	hs.api = api
	api.Metrics().Extra = processMetrics(st.kind, hs.started)

	mux := http.NewServeMux()
	mux.Handle("/v1/", api)
	mux.HandleFunc("GET /healthz", hs.healthz)
	mux.HandleFunc("/healthz", methodNotAllowed("GET, HEAD"))
	mux.Handle("GET /metrics", api.Metrics())
	mux.HandleFunc("/metrics", methodNotAllowed("GET, HEAD"))
	if hs.dev {
		mux.HandleFunc("/dev/token", hs.devToken)
	}
	if c.pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.Handle("/", demo.Handler())
	hs.http = &http.Server{
		Handler:           logRequests(log, guardBodies(mux, c.bodyTimeout)),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return hs, nil
}

// serve serves on ln until ctx is done, then shuts down gracefully.
func (hs *hubServer) serve(ctx context.Context, ln net.Listener, timeout time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- hs.http.Serve(ln) }()
	hs.log.Info("serving", "addr", ln.Addr().String(), "store", hs.store.kind, "where", hs.store.where, "dev", hs.dev)
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	hs.log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// Streams first (they get a clean close), then the HTTP server waits
	// for the requests left, then the hub saves cursors, then the store.
	err := hs.api.Shutdown(sctx)
	if herr := hs.http.Shutdown(sctx); herr != nil && err == nil {
		err = herr
	}
	// The hub gets a budget of its own: if the streams used up theirs, the
	// acknowledged positions are still saved.
	hctx, hcancel := context.WithTimeout(context.Background(), timeout)
	defer hcancel()
	if herr := hs.hub.Shutdown(hctx); herr != nil && err == nil {
		err = herr
	}
	if serr := hs.store.Close(); serr != nil && err == nil {
		err = serr
	}
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return serveErr
	}
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	hs.log.Info("stopped")
	return nil
}

func (hs *hubServer) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	// A lookup of a listener that does not exist exercises the store.
	_, err := hs.hub.Info(ctx, "s00000000000000000000000000000000")
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if err != nil && !errors.Is(err, moitessier.ErrNotFound) {
		hs.log.Error("health check", "err", err)
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, `{"status":"unavailable","store":%q}`+"\n", hs.store.kind)
		return
	}
	fmt.Fprintf(w, `{"status":"ok","store":%q,"uptime_s":%d}`+"\n", hs.store.kind, int(time.Since(hs.started).Seconds()))
}

// methodNotAllowed answers 405 with the Allow header.
func methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusMethodNotAllowed)
		fmt.Fprintf(w, `{"status":405,"code":"method_not_allowed","error":"%s %s: allowed: %s"}`+"\n", r.Method, r.URL.Path, allow)
	}
}

// guardBodies bounds in time the bodies of requests outside /v1/ (which
// the API bounds itself, after checking the token): they must arrive
// within timeout, and the connection closes after the answer, since
// net/http reads what is left of a body before and after it answers, and
// a client may never send it.
func guardBodies(h http.Handler, timeout time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/v1/") && r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(timeout))
			if r.ProtoMajor == 1 {
				w.Header().Set("Connection", "close")
			}
		}
		h.ServeHTTP(w, r)
	})
}

// devSecret returns the secret of development mode and the file that
// keeps it: read from file, or made and written there (mode 0600) so that
// tokens survive a restart. file "" is FILE.dev-secret beside a SQLite
// store FILE, and none for the other stores; "none" keeps no file.
func devSecret(file, store string) ([]byte, string, error) {
	switch file {
	case "none":
		return []byte(newSecret()), "", nil
	case "":
		if store == "memory" || store == "mem" || isShared(store) || store == "" {
			// No data directory: nothing else survives a restart of a
			// memory store, and a database server is not one.
			return []byte(newSecret()), "", nil
		}
		file = strings.TrimPrefix(store, "sqlite:") + ".dev-secret"
	}
	b, err := os.ReadFile(file)
	switch {
	case err == nil:
		secret := bytes.TrimSpace(b)
		if err := moitessierhttp.CheckSecret(secret); err != nil {
			return nil, "", fmt.Errorf("development secret in %s: %w", file, err)
		}
		if fi, err := os.Stat(file); err == nil && fi.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(file, 0o600); err != nil {
				return nil, "", fmt.Errorf("development secret in %s: readable by others, and: %w", file, err)
			}
		}
		return secret, file, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, "", fmt.Errorf("development secret: %w", err)
	}
	secret := newSecret()
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, "", fmt.Errorf("development secret: %w", err)
	}
	_, err = f.WriteString(secret + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(file)
		return nil, "", fmt.Errorf("development secret: %w", err)
	}
	return []byte(secret), file, nil
}

// DevToken is the answer of POST /dev/token.
type DevToken struct {
	Token    string   `json:"token"`
	Sub      string   `json:"sub"`
	Listen   []string `json:"listen"`
	Dispatch []string `json:"dispatch"`
	Exp      int64    `json:"exp"`
}

// devToken mints a token for the person named by ?sub= or a JSON body
// {"sub":"alice"}, granting every scope, or, when the query has listen or
// dispatch parameters (repeated), exactly those patterns.
func (hs *hubServer) devToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost && r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, `{"status":405,"code":"method_not_allowed","error":"use POST"}`, http.StatusMethodNotAllowed)
		return
	}
	sub := r.URL.Query().Get("sub")
	if sub == "" && r.Body != nil {
		var body struct {
			Sub string `json:"sub"`
		}
		_ = json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&body)
		sub = body.Sub
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if sub == "" || len(sub) > moitessier.MaxNameBytes {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintln(w, `{"status":400,"code":"bad_request","error":"name the person: ?sub=alice"}`)
		return
	}
	claims := moitessierhttp.Claims{Subject: sub, Listen: []string{">"}, Dispatch: []string{">"}, IssuedAt: time.Now().Unix(), ExpiresAt: time.Now().Add(hs.devTTL).Unix()}
	if q := r.URL.Query(); q.Has("listen") || q.Has("dispatch") {
		// Grants asked for: exactly those, and nothing else.
		claims.Listen, claims.Dispatch = nil, nil
		for _, g := range []struct {
			name string
			dst  *[]string
		}{{"listen", &claims.Listen}, {"dispatch", &claims.Dispatch}} {
			for _, p := range q[g.name] {
				if p == "" {
					continue
				}
				if err := moitessier.ValidatePattern(p); err != nil {
					w.WriteHeader(http.StatusBadRequest)
					fmt.Fprintf(w, `{"status":400,"code":"invalid_scope","error":%q}`+"\n", g.name+": "+err.Error())
					return
				}
				*g.dst = append(*g.dst, p)
			}
		}
	}
	tok, err := moitessierhttp.Sign(hs.secret, claims)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"status":400,"code":"bad_request","error":%q}`+"\n", err.Error())
		return
	}
	_ = json.NewEncoder(w).Encode(DevToken{Token: tok, Sub: sub, Listen: claims.Listen, Dispatch: claims.Dispatch, Exp: claims.ExpiresAt})
}

func baseURL(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return "http://" + a.String()
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}

// logRequests logs each request at debug level, without its query (which
// may hold a token).
func logRequests(log *slog.Logger, h http.Handler) http.Handler {
	if !log.Enabled(context.Background(), slog.LevelDebug) {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, r)
		log.Debug("request", "method", r.Method, "path", r.URL.Path, "status", sw.status, "duration", time.Since(start))
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// processMetrics adds the process's own metrics to /metrics.
func processMetrics(store string, started time.Time) func(io.Writer) {
	return func(w io.Writer) {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		fmt.Fprintf(w, "# HELP moitessier_info The hub's store.\n# TYPE moitessier_info gauge\nmoitessier_info{store=%q} 1\n", store)
		fmt.Fprintf(w, "# HELP process_start_time_seconds Start time of the process since the Unix epoch.\n# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %d\n", started.Unix())
		fmt.Fprintf(w, "# HELP go_goroutines Number of goroutines.\n# TYPE go_goroutines gauge\ngo_goroutines %d\n", runtime.NumGoroutine())
		fmt.Fprintf(w, "# HELP go_memstats_heap_inuse_bytes Heap bytes in use.\n# TYPE go_memstats_heap_inuse_bytes gauge\ngo_memstats_heap_inuse_bytes %d\n", ms.HeapInuse)
		if rss := residentBytes(); rss > 0 {
			fmt.Fprintf(w, "# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %d\n", rss)
		}
	}
}

// residentBytes reads the process's resident memory from /proc (Linux), or 0.
func residentBytes() int64 { return rssOfPid(os.Getpid()) }

func rssOfPid(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// cliDuration maps a rate flag given as a duration to its Config field:
// on the command line 0 means no limit, in Config a negative value does.
func cliDuration(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}

// cliCount maps a count flag whose 0 means no limit to its Config field,
// where a negative value does.
func cliCount(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}

// cliRate maps --rate to Config.DispatchRate: on the command line 0 means
// no limit, as it reads; in Config a zero field takes the default and a
// negative one means no limit.
func cliRate(r float64) float64 {
	if r <= 0 {
		return -1
	}
	return r
}
