// Package moitessierhttp serves a [moitessier.Hub] over HTTP: Server-Sent
// Events, WebSocket, long-poll, dispatch and read state, behind HS256 token
// auth, as net/http handlers an app mounts on its own mux.
//
//	srv, err := moitessierhttp.New(hub, moitessierhttp.Config{Secret: secret})
//	mux.Handle("/v1/", srv)
//	...
//	srv.Shutdown(ctx) // ends streams cleanly, before http.Server.Shutdown
//
// # Endpoints
//
// See [Server] for the list. A listen request names a listener by its
// conditions in the query (scope=room.1, repeated for several; type=shared,
// private or handler; client=tab1) or by ID (listener=s3f…), and where to
// start (since=N, "resume" for the server-held cursor, "head" for only new
// messages). start=oldest, start=24h or start=<RFC 3339 time> makes a
// subscriber that joins with this request start with the listener's
// history, all that is kept or since a time (see [ParseStart]); without
// it a new subscriber starts at the newest message. The person is always
// the token's subject.
//
// # Cursors and resume
//
// Every message carries its cursor (seq). SSE events use it as their id,
// so an EventSource that reconnects sends Last-Event-ID and misses nothing.
// A client that comes without a cursor (a new tab, another device, after a
// hub restart) resumes from its server-held cursor, which moves only on
// evidence that the client received the messages, never because they were
// written to its connection:
//
//   - a request that starts after N (SSE Last-Event-ID, lastEventId or
//     since=N; a long-poll's since=N; a WebSocket listen's since) acknowledges N;
//   - on WebSocket, an ack frame {"op":"ack","ref":…,"seq":N} (see [WSRequest]);
//   - on SSE over HTTP/1.1 and plain TCP on Linux, the client's TCP stack:
//     a message is acknowledged once the kernel reports that the client
//     acknowledged every byte of it (SIOCOUTQ) and the connection stayed
//     open one more Config.TCPAckInterval, or the client then closed it
//     cleanly (a FIN; a client that closes with bytes unread sends a
//     reset). Not over HTTP/2, on other systems, or on a request that came
//     through a proxy (Forwarded, X-Forwarded-For, X-Real-IP or Via
//     headers; Config.NoTCPAcks for a proxy that adds none), whose own TCP
//     stack would acknowledge.
//
// A client that resumes without a cursor so misses nothing it did not
// receive, and sees again at most what it had not acknowledged: on
// WebSocket the frames it had not acked, on long-poll the last answer, on
// SSE what was written in the last two TCPAckIntervals before the
// connection broke (or, without TCP evidence, since its last request with
// a cursor). An SSE client whose TCP stack took bytes that it then left
// unread for a whole interval, its connection open, before closing it,
// may miss them: the one case the TCP evidence cannot see.
//
// # Auth
//
// A token ([Claims], signed with [Sign], checked with [Verify]) names the
// person (sub) and the scope patterns they may listen to (listen) and
// dispatch to (dispatch); exp is required. Browsers pass it as
// ?access_token= to EventSource and WebSocket, which cannot set headers.
// A listener is allowed when each of its scopes is covered by a listen
// pattern ([Covers]); a Private or Handler listener only for its owner.
// A Handler listener also needs a dispatch pattern covering each of its
// scopes: it stores a copy, computed by the dispatcher's handlers, of every
// dispatch it matches, so a listen grant alone does not let one person
// multiply other people's dispatches (and the hub's quotas, see
// [moitessier.Quota], bound how many listeners anyone holds).
// Failures are 401 (no token, forged, expired) or 403 (out of scope) with
// a JSON [ErrorBody], and change nothing. A listener named by ID that the
// token may not read (another person's, or out of scope) is 404, exactly
// as one that does not exist: IDs are derived from conditions, so a 403
// would tell whether it exists. A dispatch's reached and stored count only
// the caller's own listeners and the Shared ones on scopes it may listen
// to. The secret is at least [MinSecretBytes] long, and [Verify] reads a
// token strictly.
//
// # Limits and slow consumers
//
// Config bounds message size (413), listeners per WebSocket connection,
// open streams per person (SSE, WebSocket and long-poll together: 429
// too_many_streams), dispatches per person per second, and joins and
// leaves of listeners per person per second (every stream and listen joins
// its listener: a write to the store) (429 rate_limited with Retry-After). Read state
// (GET /v1/listeners/{id}/subscribers) comes a page at a time: ?limit=
// (default [DefaultReadStateLimit], at most [MaxReadStateLimit]) and
// ?after= the previous page's next. A slow consumer
// never blocks a dispatcher or other clients: the hub stores and publishes
// without waiting for anyone, each connection writes from its own
// goroutine through bounded buffers (the socket's, in chunks of 32 KiB),
// and a connection that takes no chunk within Config.WriteTimeout is
// dropped, not its messages; the client resumes from its cursor. A
// long-poll answer holds at most Config.MaxPollBytes of messages (at least
// one; the next poll continues from its cursor), and an answer that is not
// a stream must be taken within Config.ResponseTimeout, or its connection
// is closed.
//
// With many SSE streams busy, a stream that has just written waits a little
// (Config.SSEBatchInterval; by default 40 µs per stream that wrote in the
// last 100 to 200 ms, at most 150 ms; idle connections do not count) before it writes again, and what came meanwhile goes in one
// write: with ten thousand clients on one scope, a write per message per
// client costs more processor time than the messages come in.
//
// # Errors
//
// One function maps errors to statuses: moitessier.ErrInvalidScope,
// ErrInvalidArgument and ErrUnknownType are 400, ErrTooLarge 413,
// ErrBudgetExceeded 422 (a dispatch's handlers ran out of time: the same
// request would again, so it is not worth a retry),
// ErrIdempotencyMismatch 422 (an idempotency key reused for another request),
// ErrNotOwner 403, ErrNotFound 404, ErrRateLimited 429 (rate_limited, with
// Retry-After: a person's dispatch rate, or rate of joins and leaves),
// ErrHandlerBudget 429
// (handler_budget, with Retry-After: a person's handler time, see
// Config.HandlerTimeRate), ErrTooManyStreams 429 (too_many_streams,
// without Retry-After: a person holds Config.MaxStreamsPerPerson open
// streams), ErrQuotaExceeded 429 (quota_exceeded,
// without Retry-After: a person holds as many listeners or subscriptions as
// the hub allows), ErrClosed 410 (a listener deleted) or
// 503 (shutting_down: the server shuts down, or the hub was shut down
// first, moitessier.ErrHubClosed; an SSE stream then ends with a close
// event whose reason is shutting_down, and Client.Listen reconnects, and a
// WebSocket closes with 1001 after an error frame shutting_down), and moitessier.ErrOutcomeUnknown 503 with code
// "outcome_unknown": the dispatch was being written when the store lost
// its answer, so it may or may not be stored; retry it with the same
// Idempotency-Key (a stored one is then replayed). Every other error
// answer to a dispatch means nothing was stored. Only internal errors are
// logged. [Client] turns error
// answers back into errors that errors.Is matches against the same
// sentinels.
package moitessierhttp
