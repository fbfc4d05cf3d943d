package main

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/moitessierhttp"
)

// clearEnv unsets every MOITESSIER_ variable for the test.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "MOITESSIER_") {
			t.Setenv(name, "")
		}
	}
}

// TestServeDefaultsAreTheLibrarys: with no flag and no environment, serve
// runs the hub and the HTTP server on the library's own defaults.
func TestServeDefaultsAreTheLibrarys(t *testing.T) {
	clearEnv(t)
	c, fs := serveFlags(io.Discard)
	if err := parse(fs, nil, io.Discard); err != nil {
		t.Fatal(err)
	}
	d, hd := moitessier.DefaultOptions(), moitessierhttp.DefaultConfig()
	for _, tc := range []struct {
		flag      string
		got, want any
	}{
		{"max-message-bytes", c.maxMessageBytes, d.MaxMessageBytes},
		{"max-message-bytes (HTTP)", c.maxMessageBytes, hd.MaxMessageBytes},
		{"max-handlers", c.maxHandlers, d.MaxHandlers},
		{"max-recipients", c.maxRecipients, d.MaxRecipients},
		{"handler-budget", c.handlerBudget, d.HandlerBudget},
		{"lease", c.lease, d.Lease},
		{"retention", c.retention, d.Retention.MaxAge},
		{"gc-interval", c.gcEvery, d.GCInterval},
		{"ack-interval", c.ackInterval, d.AckInterval},
		{"quota-listeners", c.quota.Listeners, d.Quota.Listeners},
		{"quota-handlers", c.quota.Handlers, d.Quota.Handlers},
		{"quota-shared", c.quota.Shared, d.Quota.Shared},
		{"quota-subscriptions", c.quota.Subscriptions, d.Quota.Subscriptions},
		{"max-scopes-per-listener", c.maxScopes, d.MaxScopesPerListener},
		{"max-listeners", c.maxListeners, hd.MaxListenersPerConn},
		{"max-streams", c.maxStreams, hd.MaxStreamsPerPerson},
		{"rate", c.rate, hd.DispatchRate},
		{"join-rate", c.joinRate, hd.JoinRate},
		{"join-burst", c.joinBurst, hd.JoinBurst},
		{"heartbeat", c.heartbeat, hd.Heartbeat},
		{"body-timeout", c.bodyTimeout, hd.BodyTimeout},
		{"handler-rate", c.handlerRate, hd.HandlerTimeRate},
		{"handler-burst", c.handlerBurst, hd.HandlerTimeBurst},
		{"write-timeout", c.writeTimeout, hd.WriteTimeout},
		{"response-timeout", c.responseTimeout, hd.ResponseTimeout},
		{"sse-batch-interval", c.sseBatch, hd.SSEBatchInterval},
	} {
		if tc.got != tc.want {
			t.Errorf("--%s defaults to %v, the library to %v", tc.flag, tc.got, tc.want)
		}
	}
	if c.burst != hd.DispatchBurst || hd.DispatchBurst != 100 {
		t.Errorf("--burst %d, library burst %d; want both 100", c.burst, hd.DispatchBurst)
	}
	// The two that differed are reconciled: positions are saved every
	// second, and a person may dispatch 50 times a second, on both.
	if d.AckInterval != time.Second || hd.DispatchRate != 50 {
		t.Errorf("AckInterval %v, DispatchRate %v; want 1s and 50", d.AckInterval, hd.DispatchRate)
	}
	if got := cliRate(0); got >= 0 {
		t.Errorf("--rate 0 gives DispatchRate %v, want a negative one (no limit)", got)
	}
}

// TestBadEnv: an environment variable its flag cannot take is an error
// that names it, not the default; a flag on the command line wins over it.
func TestBadEnv(t *testing.T) {
	for _, tc := range []struct{ name, value string }{
		{"MOITESSIER_RATE", "abc"},
		{"MOITESSIER_ACK_INTERVAL", "soon"},
		{"MOITESSIER_MAX_LISTENERS", "many"},
		{"MOITESSIER_PPROF", "maybe"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			t.Setenv(tc.name, tc.value)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := run(ctx, []string{"serve", "--addr", "127.0.0.1:0", "--store", t.TempDir() + "/m.db"}, strings.NewReader(""), io.Discard, io.Discard)
			if !errors.Is(err, errBadEnv) || !strings.Contains(err.Error(), tc.name) {
				t.Fatalf("serve with %s=%s: %v, want an error naming it", tc.name, tc.value, err)
			}
		})
	}
	t.Run("Good", func(t *testing.T) {
		clearEnv(t)
		t.Setenv("MOITESSIER_RATE", "7")
		c, fs := serveFlags(io.Discard)
		if err := parse(fs, nil, io.Discard); err != nil || c.rate != 7 {
			t.Fatalf("MOITESSIER_RATE=7: rate %v, %v", c.rate, err)
		}
	})
	t.Run("FlagWins", func(t *testing.T) {
		clearEnv(t)
		t.Setenv("MOITESSIER_RATE", "abc")
		c, fs := serveFlags(io.Discard)
		if err := parse(fs, []string{"--rate", "5"}, io.Discard); err != nil || c.rate != 5 {
			t.Fatalf("--rate 5 with MOITESSIER_RATE=abc: rate %v, %v", c.rate, err)
		}
	})
	t.Run("OtherCommands", func(t *testing.T) {
		clearEnv(t)
		t.Setenv("MOITESSIER_RATE", "abc")
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		err := run(ctx, []string{"token", "--secret", strings.Repeat("k", 32), "alice"}, strings.NewReader(""), io.Discard, io.Discard)
		if err != nil {
			t.Fatalf("a command without --rate minds MOITESSIER_RATE: %v", err)
		}
	})
}

// TestDurableJoinsFlag: --durable-joins, or MOITESSIER_PG_DURABLE_JOINS,
// reaches the Postgres store's configuration; by default it is off, as in
// the library.
func TestDurableJoinsFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  string
		want bool
	}{
		{nil, "", false},
		{[]string{"--durable-joins"}, "", true},
		{nil, "true", true},
		{[]string{"--durable-joins=false"}, "true", false},
	} {
		clearEnv(t)
		if tc.env != "" {
			t.Setenv("MOITESSIER_PG_DURABLE_JOINS", tc.env)
		}
		c, fs := serveFlags(io.Discard)
		if err := parse(fs, tc.args, io.Discard); err != nil {
			t.Fatal(err)
		}
		if got := postgresConfig("postgres://db/app", "s", c.durableJoins).DurableJoins; got != tc.want {
			t.Errorf("serve %v with MOITESSIER_PG_DURABLE_JOINS=%q: DurableJoins %v, want %v", tc.args, tc.env, got, tc.want)
		}
	}
}
