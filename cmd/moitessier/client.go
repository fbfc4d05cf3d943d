package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/likestripes/moitessier/moitessierhttp"
)

// hubFlags are the flags of the commands that talk to a running hub.
type hubFlags struct {
	hub, token, as string
}

func (h *hubFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&h.hub, "hub", env("MOITESSIER_HUB", "http://127.0.0.1:8080"), "the hub's base URL (env MOITESSIER_HUB)")
	fs.StringVar(&h.token, "token", env("MOITESSIER_TOKEN", ""), "bearer token (env MOITESSIER_TOKEN); empty: a development token from the hub's /dev/token")
	fs.StringVar(&h.as, "as", env("MOITESSIER_PERSON", defaultPerson()), "the person to get a development token for, without --token (env MOITESSIER_PERSON)")
}

func defaultPerson() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "cli"
}

// client returns a client of the hub, with a token.
func (h *hubFlags) client(ctx context.Context) (*moitessierhttp.Client, error) {
	c := &moitessierhttp.Client{BaseURL: strings.TrimRight(h.hub, "/"), Token: h.token}
	if c.Token == "" {
		tok, err := fetchDevToken(ctx, c.BaseURL, h.as)
		if err != nil {
			return nil, err
		}
		c.Token = tok.Token
		// A development hub that restarted has a new secret: get a new token.
		c.RefreshToken = func(ctx context.Context) (string, error) {
			t, err := fetchDevToken(ctx, c.BaseURL, h.as)
			return t.Token, err
		}
	}
	return c, nil
}

// fetchDevToken asks a hub in development mode for a token granting
// every scope.
func fetchDevToken(ctx context.Context, hub, person string) (DevToken, error) {
	return fetchDevTokenFor(ctx, hub, url.Values{"sub": {person}})
}

// fetchDevTokenFor asks a hub in development mode for a token; q names
// the person (sub) and, if it has listen or dispatch, exactly the grants.
func fetchDevTokenFor(ctx context.Context, hub string, q url.Values) (DevToken, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, hub+"/dev/token?"+q.Encode(), nil)
	if err != nil {
		return DevToken{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return DevToken{}, fmt.Errorf("no token and no hub to get a development token from: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return DevToken{}, fmt.Errorf("no token: pass --token or set MOITESSIER_TOKEN (mint one with \"moitessier token\"); the hub at %s has no development tokens (%s)", hub, resp.Status)
	}
	var t DevToken
	if err := json.NewDecoder(resp.Body).Decode(&t); err != nil {
		return DevToken{}, fmt.Errorf("development token: %w", err)
	}
	return t, nil
}

const dispatchDescription = `
Dispatch TEXT to SCOPE through a running hub. Without TEXT, each line of the
standard input is dispatched as one message. Prints each dispatch's ID and
how many listeners it reached (or the JSON answer with --json).

  moitessier dispatch room.1 hello everyone
  moitessier dispatch --to bob notify.bob "your build is done"
  tail -f app.log | moitessier dispatch logs.app`

func runDispatch(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	var hf hubFlags
	var to, handlers listFlag
	var key string
	var asJSON bool
	fs := newFlags("dispatch", "[flags] SCOPE [TEXT...]", dispatchDescription, stderr)
	hf.register(fs)
	fs.Var(&to, "to", "address the message to these persons' Private listeners (repeatable or comma-separated)")
	fs.Var(&handlers, "handler", "a handler of the hub to compute Handler listeners' messages, in order, up to the hub's --max-handlers (repeatable); the demo's greet and upper are offered in development mode or with serve --demo-handlers")
	fs.StringVar(&key, "key", "", "idempotency key: a retry with the same key dispatches nothing")
	fs.BoolVar(&asJSON, "json", false, "print the hub's JSON answer")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() < 1 {
		fs.Usage()
		return errUsage
	}
	scope := fs.Arg(0)
	c, err := hf.client(ctx)
	if err != nil {
		return err
	}
	send := func(text string) error {
		req := moitessierhttp.DispatchRequest{Scope: scope, Text: text, To: to, Handlers: handlers, IdempotencyKey: key}
		res, err := c.Dispatch(ctx, req)
		var he *moitessierhttp.Error
		for errors.As(err, &he) && he.Status == http.StatusTooManyRequests && ctx.Err() == nil {
			time.Sleep(max(he.RetryAfter, 100*time.Millisecond))
			res, err = c.Dispatch(ctx, req)
		}
		if err != nil {
			return err
		}
		if asJSON {
			return json.NewEncoder(stdout).Encode(res)
		}
		replayed := ""
		if res.Replayed {
			replayed = " (replayed: already dispatched with this key)"
		}
		_, err = fmt.Fprintf(stdout, "dispatched %s to %s: %d listeners reached, %d messages stored%s\n", res.ID, res.Scope, res.Reached, res.Stored, replayed)
		return err
	}
	if fs.NArg() > 1 {
		return send(strings.Join(fs.Args()[1:], " "))
	}
	sc := bufio.NewScanner(stdin)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		if err := send(sc.Text()); err != nil {
			return err
		}
	}
	return sc.Err()
}

const listenDescription = `
Follow one or more scopes through a running hub, like tail -f: print each
message as it is dispatched, reconnecting when the connection drops without
missing any. Patterns work: "room.*", "user.alice.>".

By default the listen resumes where this person's --client left off last
time (the hub keeps the cursor); --since head shows only new messages,
--since 0 everything kept. A person new to the listener starts at its
newest message, or with --start oldest (all that is kept), --start 24h (a
duration back from now) or --start 2026-01-02T15:04:05Z, with its history.

  moitessier listen room.1
  moitessier listen --type private --json notify.alice`

func runListen(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	var hf hubFlags
	var typ, client, since, start, listener string
	var asJSON bool
	var count int
	fs := newFlags("listen", "[flags] SCOPE...", listenDescription, stderr)
	hf.register(fs)
	fs.StringVar(&typ, "type", "shared", "listener type: shared, private or handler")
	fs.StringVar(&client, "client", "cli", "client name: each client has its own cursor")
	fs.StringVar(&since, "since", "resume", "where to start: resume, head, or a sequence number")
	fs.StringVar(&start, "start", "", "where a person new to the listener starts: newest (default), oldest, a duration back from now (24h) or an RFC 3339 time")
	fs.StringVar(&listener, "listener", "", "listen to an existing listener by ID instead of scopes")
	fs.BoolVar(&asJSON, "json", false, "print each message as a JSON object")
	fs.IntVar(&count, "n", 0, "exit after this many messages (0: follow until interrupted)")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() == 0 && listener == "" {
		fs.Usage()
		return errUsage
	}
	c, err := hf.client(ctx)
	if err != nil {
		return err
	}
	c.OnReconnect = func(err error, wait time.Duration) {
		fmt.Fprintf(stderr, "moitessier: connection lost (%v); reconnecting in %v\n", err, wait.Round(time.Millisecond))
	}
	q := moitessierhttp.Query{Scopes: fs.Args(), Type: typ, Client: client, Since: since, Start: start, Listener: listener}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	enc := json.NewEncoder(stdout)
	n := 0
	err = c.Listen(ctx, q, func(m moitessierhttp.Message) error {
		var err error
		if asJSON {
			err = enc.Encode(m)
		} else {
			_, err = fmt.Fprintf(stdout, "%s %s #%d %s: %s\n", m.Created.Local().Format("15:04:05"), m.Scope, m.Seq, m.Sender, m.Text)
		}
		if n++; count > 0 && n >= count {
			cancel()
		}
		return err
	})
	return err
}

const tokenDescription = `
Print a token (an HS256 JWT) for --sub, granting the scope patterns of
--listen and --dispatch and nothing else (no --dispatch: the token cannot
dispatch), signed with --secret (the hub's, at least 32 bytes). Without a
secret, ask a hub in development mode (--hub) for one: it grants exactly
--listen and --dispatch when either is given, else every scope.

  moitessier token --secret "$MOITESSIER_SECRET" --sub alice --listen 'room.>' --listen 'user.alice.>' --dispatch 'room.>'`

const secretDescription = `
Print a new random secret for "serve --secret" and "token --secret": 32
random bytes, base64-encoded (as "openssl rand -base64 32" makes).

  export MOITESSIER_SECRET=$(moitessier secret)`

func runSecret(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("secret", "", secretDescription, stderr)
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "secret takes no arguments, got %q\n", fs.Args())
		return errUsage
	}
	_, err := fmt.Fprintln(stdout, newSecret())
	return err
}

// newSecret returns 32 random bytes in base64: 44 characters, a secret of
// more than moitessierhttp.MinSecretBytes bytes as it is used.
func newSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return base64.StdEncoding.EncodeToString(b)
}

func runToken(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	var secret, sub, hub string
	var listen, dispatch listFlag
	var ttl time.Duration
	var asJSON bool
	fs := newFlags("token", "[flags]", tokenDescription, stderr)
	fs.StringVar(&secret, "secret", env("MOITESSIER_SECRET", ""), "the hub's HS256 secret (env MOITESSIER_SECRET)")
	fs.StringVar(&sub, "sub", env("MOITESSIER_PERSON", defaultPerson()), "the person (env MOITESSIER_PERSON)")
	fs.Var(&listen, "listen", "scope pattern the person may listen to (repeatable or comma-separated; none if not given)")
	fs.Var(&dispatch, "dispatch", "scope pattern the person may dispatch to (repeatable or comma-separated; none if not given)")
	fs.DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token is valid")
	fs.StringVar(&hub, "hub", env("MOITESSIER_HUB", "http://127.0.0.1:8080"), "without --secret: the hub in development mode to ask (env MOITESSIER_HUB)")
	fs.BoolVar(&asJSON, "json", false, "print the token with its claims as JSON")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if secret == "" {
		q := url.Values{"sub": {sub}}
		if len(listen) > 0 || len(dispatch) > 0 {
			// Only what was asked for; "" marks a grant asked for as none.
			q["listen"], q["dispatch"] = append([]string{""}, listen...), append([]string{""}, dispatch...)
		}
		t, err := fetchDevTokenFor(ctx, strings.TrimRight(hub, "/"), q)
		if err != nil {
			return fmt.Errorf("no --secret (or MOITESSIER_SECRET), and %w", err)
		}
		if asJSON {
			return json.NewEncoder(stdout).Encode(t)
		}
		_, err = fmt.Fprintln(stdout, t.Token)
		return err
	}
	if len(listen) == 0 && len(dispatch) == 0 {
		fmt.Fprintln(stderr, "moitessier: the token grants nothing: give --listen or --dispatch patterns ('>' for every scope)")
	}
	now := time.Now()
	claims := moitessierhttp.Claims{Subject: sub, Listen: listen, Dispatch: dispatch, IssuedAt: now.Unix(), ExpiresAt: now.Add(ttl).Unix()}
	tok, err := moitessierhttp.Sign([]byte(secret), claims)
	if err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(stdout).Encode(DevToken{Token: tok, Sub: sub, Listen: listen, Dispatch: dispatch, Exp: claims.ExpiresAt})
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}
