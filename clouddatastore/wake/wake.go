// Package wake carries a store's wake-ups between processes over Cloud
// Pub/Sub: after a process commits an append, it publishes the new heads of
// the listeners it wrote (see [moitessier.Head]), and every other process
// that opened the same store hears them, so that a dispatch in one process
// wakes listeners in all of them without polling per listener.
//
// A store shared by several processes (the Datastore store) opens one [Wake]
// per Open, calls [Wake.Publish] after each committed append, delegates
// [moitessier.Watcher.Watch] to [Wake.Watch], implements Heads itself by
// reading its entities, and closes the Wake in its Close.
//
// # Topic and subscriptions
//
// One topic per store ([Config.Topic], for example [TopicID] of the store's
// database and namespace) carries the heads; Open creates it if it does not
// exist. Each Wake creates its own subscription of that topic at Open and
// deletes it at Close. It starts receiving from it at its first
// [Wake.Watch] call, once that call's fn is registered: the wake-ups
// published between Open and then wait in the subscription (as long as
// [Config.MessageRetention]) and reach that first watcher, so a process
// whose watcher starts late (its hub's goroutine) loses none of those
// published after Open returned. A process that crashes leaves its subscription behind:
// Pub/Sub deletes it after [Config.SubscriptionExpiry] without a subscriber
// (one day by default, the shortest Pub/Sub allows), and until then keeps
// the wake-ups published to it for at most [Config.MessageRetention]
// (10 minutes by default, again the shortest), so an orphan never holds more
// than 10 minutes of wake-ups. The subscription filters out the Wake's own
// messages; its own heads are handed to its watchers directly.
//
// # Batching
//
// Publish does not block: it records the heads (keeping the highest sequence
// number per listener) and a background goroutine publishes what has
// accumulated, one batch at a time, as several heads per Pub/Sub message, no
// message larger than [Config.MaxMessageBytes]. While one batch is in
// flight the next accumulates, so a busy store sends fewer, larger messages
// and an idle one sends none.
//
// # Losses
//
// Messages are acknowledged on receipt and a publish that fails is logged
// and dropped: a wake-up can be lost, and a listener can be told of a head
// more than once or out of order. The hub covers this with its periodic
// catch-up read of the heads (Options.CatchUpInterval) and takes the highest
// head it has heard. Nothing here costs anything per listener: an idle
// listener is neither published nor polled.
package wake

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/api/option"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/likestripes/moitessier"
)

// ErrConfig reports a Config that Open cannot use: a missing project or
// topic, an invalid topic ID, or a limit out of range.
var ErrConfig = errors.New("wake: invalid config")

// Limits of Cloud Pub/Sub that bound the Config.
const (
	// MinSubscriptionExpiry is the shortest expiration policy Pub/Sub accepts.
	MinSubscriptionExpiry = 24 * time.Hour
	// MinMessageRetention and MaxMessageRetention bound a subscription's
	// message retention.
	MinMessageRetention = 10 * time.Minute
	MaxMessageRetention = 7 * 24 * time.Hour
	// MaxMessageBytesLimit is the largest Config.MaxMessageBytes: Pub/Sub
	// takes messages of up to 10 MB.
	MaxMessageBytesLimit = 9 << 20
)

// Config says which topic a Wake uses and how.
type Config struct {
	// Project is the Google Cloud project of the topic. Required.
	Project string
	// Topic is the ID (not the full name) of the store's topic, shared by
	// every process that opens the store. Required; [TopicID] derives one
	// from a Datastore database and namespace. Open creates the topic if it
	// does not exist.
	Topic string
	// MaxMessageBytes bounds the data of one Pub/Sub message. Default 32 KiB
	// (about a thousand heads of 30-byte listener IDs); at most
	// MaxMessageBytesLimit.
	MaxMessageBytes int
	// SubscriptionExpiry is how long Pub/Sub keeps the subscription of a
	// process that stopped receiving without deleting it (a crash). Default
	// and minimum 24 hours.
	SubscriptionExpiry time.Duration
	// MessageRetention is how long an undelivered wake-up stays in a
	// subscription. Default and minimum 10 minutes, at most 7 days.
	MessageRetention time.Duration
	// OpenTimeout bounds the calls Open makes (topic and subscription
	// creation) when ctx has no earlier deadline. Default 15 seconds.
	OpenTimeout time.Duration
	// PublishTimeout bounds the publishing of one batch. Default 10 seconds.
	PublishTimeout time.Duration
	// CloseTimeout bounds Close's last publish and the deletion of the
	// subscription. Default 5 seconds.
	CloseTimeout time.Duration
	// ClientOptions are passed to the Pub/Sub client, after those the
	// client derives from PUBSUB_EMULATOR_HOST when it is set. Credentials
	// default to Application Default Credentials.
	ClientOptions []option.ClientOption
	// Logger receives warnings about lost publishes and restarted receives.
	// Default: discard.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = 32 << 10
	}
	if c.SubscriptionExpiry == 0 {
		c.SubscriptionExpiry = MinSubscriptionExpiry
	}
	if c.MessageRetention == 0 {
		c.MessageRetention = MinMessageRetention
	}
	if c.OpenTimeout <= 0 {
		c.OpenTimeout = 15 * time.Second
	}
	if c.PublishTimeout <= 0 {
		c.PublishTimeout = 10 * time.Second
	}
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c
}

// topicRE is Pub/Sub's rule for topic and subscription IDs.
var topicRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}$`)

func (c Config) validate() error {
	switch {
	case c.Project == "":
		return fmt.Errorf("%w: Project is empty", ErrConfig)
	case c.Topic == "":
		return fmt.Errorf("%w: Topic is empty", ErrConfig)
	case !topicRE.MatchString(c.Topic) || strings.HasPrefix(strings.ToLower(c.Topic), "goog"):
		return fmt.Errorf("%w: Topic %q is not a Pub/Sub topic ID (3-255 letters, digits, -_.~+%%, starting with a letter, not with goog)", ErrConfig, c.Topic)
	case c.MaxMessageBytes < 64 || c.MaxMessageBytes > MaxMessageBytesLimit:
		return fmt.Errorf("%w: MaxMessageBytes %d is outside [64, %d]", ErrConfig, c.MaxMessageBytes, MaxMessageBytesLimit)
	case c.SubscriptionExpiry < MinSubscriptionExpiry:
		return fmt.Errorf("%w: SubscriptionExpiry %v is under Pub/Sub's minimum %v", ErrConfig, c.SubscriptionExpiry, MinSubscriptionExpiry)
	case c.MessageRetention < MinMessageRetention || c.MessageRetention > MaxMessageRetention:
		return fmt.Errorf("%w: MessageRetention %v is outside Pub/Sub's [%v, %v]", ErrConfig, c.MessageRetention, MinMessageRetention, MaxMessageRetention)
	}
	return nil
}

// TopicID returns the topic ID of the store in a Datastore database
// (empty for the default database) and namespace (empty for the default
// namespace): "moitessier-wake~DATABASE~NAMESPACE", with "_default" for an
// empty part. The separator '~' appears in neither database IDs nor
// namespaces, so two stores never share a topic; the project is part of the
// topic's full name, not of its ID.
func TopicID(database, namespace string) string {
	if database == "" || database == "(default)" {
		database = "_default"
	}
	if namespace == "" {
		namespace = "_default"
	}
	return "moitessier-wake~" + database + "~" + namespace
}

// Wake publishes and receives the heads of one store. Its methods are safe
// for concurrent use.
type Wake struct {
	cfg    Config
	client *pubsub.Client
	topic  string // full name
	sub    string // full name
	origin string
	pub    *pubsub.Publisher
	log    *slog.Logger

	closed    atomic.Bool
	done      chan struct{} // closed by Close
	rctx      context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	startMu   sync.Mutex // guards receiving and, with it, wg.Add against Close
	receiving bool       // the receive loop was started (by the first Watch)
	closeOnce sync.Once
	closeErr  error

	// mu guards the heads waiting to be published and the flush progress.
	mu       sync.Mutex
	pending  map[headKey]moitessier.Cursor
	queued   uint64        // Publish calls that added heads
	flushed  uint64        // queued value covered by the last finished batch
	flushErr error         // error of the last finished batch
	flushCh  chan struct{} // closed and replaced when a batch finishes
	kick     chan struct{} // wakes the flusher; capacity 1

	// wmu guards watchers and serializes calls to them.
	wmu      sync.Mutex
	watchers map[*func([]moitessier.Head)]struct{}
}

// Open creates the topic if needed and this process's subscription, and
// starts the publisher; receiving starts with the first Watch call. It fails with an error wrapping ErrConfig for a bad
// Config, and with a wrapped Pub/Sub error (with the topic's name) when
// Pub/Sub cannot be reached or refuses, writing nothing in that case but
// possibly the topic.
func Open(ctx context.Context, cfg Config) (*Wake, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	origin, err := randomHex(8)
	if err != nil {
		return nil, fmt.Errorf("wake: %w", err)
	}
	client, err := pubsub.NewClient(ctx, cfg.Project, cfg.ClientOptions...)
	if err != nil {
		return nil, fmt.Errorf("wake: pubsub client for project %q: %w", cfg.Project, err)
	}
	w := &Wake{
		cfg:      cfg,
		client:   client,
		topic:    "projects/" + cfg.Project + "/topics/" + cfg.Topic,
		sub:      "projects/" + cfg.Project + "/subscriptions/" + subscriptionID(cfg.Topic, origin),
		origin:   origin,
		log:      cfg.Logger,
		done:     make(chan struct{}),
		pending:  map[headKey]moitessier.Cursor{},
		flushCh:  make(chan struct{}),
		kick:     make(chan struct{}, 1),
		watchers: map[*func([]moitessier.Head)]struct{}{},
	}
	octx, cancel := context.WithTimeout(ctx, cfg.OpenTimeout)
	defer cancel()
	if err := w.ensureTopic(octx); err != nil {
		client.Close()
		return nil, err
	}
	if err := w.createSubscription(octx); err != nil {
		client.Close()
		return nil, err
	}
	w.pub = client.Publisher(w.topic)
	w.pub.PublishSettings.DelayThreshold = time.Millisecond // the flusher batches already
	w.pub.PublishSettings.Timeout = cfg.PublishTimeout

	w.rctx, w.cancel = context.WithCancel(context.Background())
	w.wg.Add(1)
	go w.flushLoop()
	return w, nil
}

func subscriptionID(topic, origin string) string {
	if len(topic) > 200 {
		sum := sha256.Sum256([]byte(topic))
		topic = topic[:180] + "~" + hex.EncodeToString(sum[:8])
	}
	return topic + "~" + origin
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// rpcError wraps a Pub/Sub error with what was being done and, when the
// deadline passed while the client retried, says so.
func (w *Wake) rpcError(ctx context.Context, what, limit string, err error) error {
	if ctx.Err() == context.DeadlineExceeded {
		where := "Pub/Sub"
		if h := os.Getenv("PUBSUB_EMULATOR_HOST"); h != "" && len(w.cfg.ClientOptions) == 0 {
			where = "the Pub/Sub emulator at " + h + " (PUBSUB_EMULATOR_HOST)"
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w (%w)", context.DeadlineExceeded, err)
		}
		return fmt.Errorf("wake: %s: no answer from %s within %s: %w", what, where, limit, err)
	}
	return fmt.Errorf("wake: %s: %w", what, err)
}

func (w *Wake) openLimit() string { return fmt.Sprintf("OpenTimeout %v", w.cfg.OpenTimeout) }

func (w *Wake) ensureTopic(ctx context.Context) error {
	_, err := w.client.TopicAdminClient.GetTopic(ctx, &pubsubpb.GetTopicRequest{Topic: w.topic})
	if status.Code(err) == codes.NotFound {
		_, err = w.client.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: w.topic})
		if status.Code(err) == codes.AlreadyExists {
			err = nil
		}
		if err != nil {
			return w.rpcError(ctx, "create topic "+w.topic, w.openLimit(), err)
		}
		return nil
	}
	if err != nil {
		return w.rpcError(ctx, "get topic "+w.topic, w.openLimit(), err)
	}
	return nil
}

func (w *Wake) createSubscription(ctx context.Context) error {
	_, err := w.client.SubscriptionAdminClient.CreateSubscription(ctx, &pubsubpb.Subscription{
		Name:                     w.sub,
		Topic:                    w.topic,
		AckDeadlineSeconds:       10,
		MessageRetentionDuration: durationpb.New(w.cfg.MessageRetention),
		ExpirationPolicy:         &pubsubpb.ExpirationPolicy{Ttl: durationpb.New(w.cfg.SubscriptionExpiry)},
		Filter:                   `attributes.origin != "` + w.origin + `"`,
		Labels:                   map[string]string{"moitessier": "wake"},
	})
	if err != nil {
		return w.rpcError(ctx, "create subscription "+w.sub, w.openLimit(), err)
	}
	return nil
}

// Topic returns the full name of the topic.
func (w *Wake) Topic() string { return w.topic }

// Subscription returns the full name of this Wake's subscription.
func (w *Wake) Subscription() string { return w.sub }

// Publish queues heads to be published to the other processes and handed
// to this Wake's watchers. It does not block and does not keep heads; heads
// of one incarnation of a listener (Head.Created) queued before the next
// batch leaves are merged into the highest. It returns an error wrapping
// moitessier.ErrClosed after Close.
func (w *Wake) Publish(heads []moitessier.Head) error {
	if w.closed.Load() {
		return fmt.Errorf("wake: publish: %w", moitessier.ErrClosed)
	}
	if len(heads) == 0 {
		return nil
	}
	w.mu.Lock()
	for _, h := range heads {
		k := headKey{h.Listener, createdNS(h.Created)}
		if cur, ok := w.pending[k]; !ok || h.Seq > cur {
			w.pending[k] = h.Seq
		}
	}
	w.queued++
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
	return nil
}

// Flush waits until the heads queued by Publish before the call have been
// published, and returns the error of the batch that published them, if
// any. It returns ctx's error if ctx ends first, and an error wrapping
// moitessier.ErrClosed if the Wake is closed first.
func (w *Wake) Flush(ctx context.Context) error {
	w.mu.Lock()
	target := w.queued
	for w.flushed < target {
		ch := w.flushCh
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-w.done:
			return fmt.Errorf("wake: flush: %w", moitessier.ErrClosed)
		}
		w.mu.Lock()
	}
	err := w.flushErr
	w.mu.Unlock()
	return err
}

// flushLoop publishes the pending heads, one batch at a time, until Close,
// then publishes what is left.
func (w *Wake) flushLoop() {
	defer w.wg.Done()
	for {
		select {
		case <-w.kick:
			ctx, cancel := context.WithTimeout(context.Background(), w.cfg.PublishTimeout)
			w.flush(ctx)
			cancel()
		case <-w.done:
			ctx, cancel := context.WithTimeout(context.Background(), w.cfg.CloseTimeout)
			w.flush(ctx)
			cancel()
			return
		}
	}
}

// flush publishes everything pending as one batch.
func (w *Wake) flush(ctx context.Context) {
	w.mu.Lock()
	pending, target := w.pending, w.queued
	n := len(pending) // read under mu: an empty map stays w.pending, which Publish writes
	if n > 0 {
		w.pending = make(map[headKey]moitessier.Cursor, n)
	}
	w.mu.Unlock()
	if n == 0 {
		return
	}
	heads := make([]moitessier.Head, 0, len(pending))
	for k, seq := range pending {
		heads = append(heads, moitessier.Head{Listener: k.id, Seq: seq, Created: createdTime(k.created)})
	}
	w.deliver(heads)
	var err error
	msgs := encode(heads, w.cfg.MaxMessageBytes)
	results := make([]*pubsub.PublishResult, len(msgs))
	for i, data := range msgs {
		results[i] = w.pub.Publish(ctx, &pubsub.Message{Data: data, Attributes: map[string]string{"origin": w.origin}})
	}
	for _, r := range results {
		if _, e := r.Get(ctx); e != nil && err == nil {
			err = fmt.Errorf("wake: publish %d heads to %s: %w", len(heads), w.topic, e)
		}
	}
	if err != nil {
		w.log.Warn("moitessier: wake-ups lost; the catch-up read will find them", "err", err)
	}
	w.mu.Lock()
	w.flushed, w.flushErr = target, err
	close(w.flushCh)
	w.flushCh = make(chan struct{})
	w.mu.Unlock()
}

// receiveLoop receives until ctx ends, restarting Receive when it fails
// and creating the subscription again if it was deleted (for example
// expired while this process was stopped).
func (w *Wake) receiveLoop(ctx context.Context) {
	defer w.wg.Done()
	sub := w.client.Subscriber(w.sub)
	sub.ReceiveSettings.NumGoroutines = 1
	sub.ReceiveSettings.MaxOutstandingMessages = 1000
	sub.ReceiveSettings.ShutdownOptions = &pubsub.ShutdownOptions{Timeout: 0} // stop at once: acks are immediate
	backoff := 100 * time.Millisecond
	for {
		start := time.Now()
		err := sub.Receive(ctx, w.handle)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > time.Minute {
			backoff = 100 * time.Millisecond
		}
		w.log.Warn("moitessier: wake-up receive stopped; restarting", "subscription", w.sub, "err", err)
		if status.Code(err) == codes.NotFound {
			cctx, cancel := context.WithTimeout(ctx, w.cfg.OpenTimeout)
			if cerr := w.createSubscription(cctx); cerr != nil {
				w.log.Warn("moitessier: wake-up subscription not re-created", "err", cerr)
			}
			cancel()
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// handle acknowledges a message at once and hands its heads to the watchers.
func (w *Wake) handle(_ context.Context, m *pubsub.Message) {
	m.Ack()
	if m.Attributes["origin"] == w.origin { // a filter the server did not apply
		return
	}
	heads, err := decode(m.Data)
	if err != nil {
		w.log.Warn("moitessier: wake-up message dropped", "id", m.ID, "err", err)
		return
	}
	w.deliver(heads)
}

// deliver calls every watcher with heads, one call at a time.
func (w *Wake) deliver(heads []moitessier.Head) {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	for fn := range w.watchers {
		(*fn)(heads)
	}
}

// Watch calls fn with the heads published by other processes, and with
// those this Wake publishes, until ctx is done or the Wake is closed;
// it then returns ctx's error or an error wrapping moitessier.ErrClosed.
// This is what [moitessier.Watcher.Watch] asks. fn is called from one
// goroutine at a time (across all of this Wake's watchers), must not block
// for long, and is not called after Watch returns. Heads may repeat, be
// out of date, or come out of order.
//
// The first call starts receiving from the subscription once fn is
// registered, so it hears the other processes' heads published since
// Open returned, however late it starts (within Config.MessageRetention).
// Heads received later while no Watch runs are not kept for a later one.
func (w *Wake) Watch(ctx context.Context, fn func([]moitessier.Head)) error {
	if w.closed.Load() {
		return fmt.Errorf("wake: watch: %w", moitessier.ErrClosed)
	}
	key := &fn
	w.wmu.Lock()
	w.watchers[key] = struct{}{}
	w.wmu.Unlock()
	defer func() {
		w.wmu.Lock()
		delete(w.watchers, key)
		w.wmu.Unlock()
	}()
	w.startMu.Lock()
	if !w.receiving && !w.closed.Load() {
		w.receiving = true
		w.wg.Add(1)
		go w.receiveLoop(w.rctx)
	}
	w.startMu.Unlock()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-w.done:
		return fmt.Errorf("wake: watch: %w", moitessier.ErrClosed)
	}
}

// Close publishes what is pending (within Config.CloseTimeout), stops
// receiving, ends running Watch calls, deletes the subscription and closes
// the client. No goroutine of the Wake outlives it. Later calls return the
// first call's result; every other method then fails with an error wrapping
// moitessier.ErrClosed.
func (w *Wake) Close() error {
	w.closeOnce.Do(func() {
		w.startMu.Lock() // no receive loop starts after this
		w.closed.Store(true)
		w.startMu.Unlock()
		close(w.done)
		w.cancel()
		w.wg.Wait()
		w.pub.Stop()
		ctx, cancel := context.WithTimeout(context.Background(), w.cfg.CloseTimeout)
		defer cancel()
		err := w.client.SubscriptionAdminClient.DeleteSubscription(ctx, &pubsubpb.DeleteSubscriptionRequest{Subscription: w.sub})
		if err != nil && status.Code(err) != codes.NotFound {
			w.closeErr = w.rpcError(ctx, "delete subscription "+w.sub+" (it expires by itself)", fmt.Sprintf("CloseTimeout %v", w.cfg.CloseTimeout), err)
		}
		if err := w.client.Close(); err != nil && w.closeErr == nil {
			w.closeErr = fmt.Errorf("wake: close client: %w", err)
		}
	})
	return w.closeErr
}

// headKey is what Publish merges heads by: a listener's incarnation.
type headKey struct {
	id      string
	created uint64 // createdNS
}

// createdNS is a listener's creation time on the wire, in Unix
// nanoseconds; 0 for none known.
func createdNS(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(t.UnixNano())
}

// createdTime is createdNS's inverse.
func createdTime(ns uint64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, int64(ns)).UTC()
}

// Message data: a version byte (1), then per head the listener ID's
// length (uvarint), the ID and the sequence number (uvarint). When any of
// a message's heads has a creation time, one more entry follows them, the
// incarnations entry: an "ID" of incMark then, for each head before it in
// order, its listener's creation time (createdNS, uvarint), and sequence
// number 0. A process of an earlier version of this package, which knows
// no incarnations entry, reads it as the head of a listener no one
// listens to, and the others as before: processes of both versions hear
// each other.
const version = 1

// incMark begins the ID of a message's incarnations entry; no listener ID
// a hub makes begins with it.
const incMark = "\x00"

// encode packs heads into messages of at most max bytes each; a head too
// large for an empty message goes alone.
func encode(heads []moitessier.Head, max int) [][]byte {
	var (
		msgs [][]byte
		cur  = []byte{version}
		incs []byte // the creation times of cur's heads
		some bool   // one of them is not zero
	)
	end := func() {
		if some {
			cur = binary.AppendUvarint(cur, uint64(len(incMark)+len(incs)))
			cur = append(cur, incMark...)
			cur = append(cur, incs...)
			cur = binary.AppendUvarint(cur, 0)
		}
		msgs = append(msgs, cur)
		cur, incs, some = []byte{version}, nil, false
	}
	// A head takes its own bytes and up to a varint in the incarnations
	// entry, whose own length, mark and sequence number take a few more.
	const entry = binary.MaxVarintLen64 + len(incMark) + 1
	for _, h := range heads {
		n := binary.MaxVarintLen64*3 + len(h.Listener)
		if len(cur) > 1 && len(cur)+len(incs)+entry+n > max {
			end()
		}
		cur = binary.AppendUvarint(cur, uint64(len(h.Listener)))
		cur = append(cur, h.Listener...)
		cur = binary.AppendUvarint(cur, uint64(h.Seq))
		incs = binary.AppendUvarint(incs, createdNS(h.Created))
		some = some || !h.Created.IsZero()
	}
	if len(cur) > 1 {
		end()
	}
	return msgs
}

// errBadMessage reports message data that decode cannot read.
var errBadMessage = errors.New("wake: bad message")

func decode(data []byte) ([]moitessier.Head, error) {
	if len(data) == 0 || data[0] != version {
		return nil, fmt.Errorf("%w: unknown version", errBadMessage)
	}
	var heads []moitessier.Head
	for b := data[1:]; len(b) > 0; {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return nil, fmt.Errorf("%w: bad listener length at byte %d", errBadMessage, len(data)-len(b))
		}
		id := string(b[k : k+int(n)])
		b = b[k+int(n):]
		seq, k := binary.Uvarint(b)
		if k <= 0 {
			return nil, fmt.Errorf("%w: bad sequence number at byte %d", errBadMessage, len(data)-len(b))
		}
		b = b[k:]
		heads = append(heads, moitessier.Head{Listener: id, Seq: moitessier.Cursor(seq)})
	}
	// The incarnations entry, if there is one: the last, of sequence
	// number 0, with a creation time for every head before it.
	if n := len(heads) - 1; n > 0 && heads[n].Seq == 0 && strings.HasPrefix(heads[n].Listener, incMark) {
		incs := []byte(heads[n].Listener[len(incMark):])
		created := make([]time.Time, 0, n)
		for len(incs) > 0 && len(created) < n {
			ns, k := binary.Uvarint(incs)
			if k <= 0 {
				break
			}
			incs = incs[k:]
			created = append(created, createdTime(ns))
		}
		if len(created) == n && len(incs) == 0 {
			heads = heads[:n]
			for i := range heads {
				heads[i].Created = created[i]
			}
		}
	}
	return heads, nil
}
