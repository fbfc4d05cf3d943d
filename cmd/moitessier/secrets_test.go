package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

func TestRedactDSN(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgres://app:hunter2@db:5432/app", "postgres://app:xxxxx@db:5432/app"},
		{"postgres://app:hun@ter/2@db/app?sslmode=disable", "postgres://app:xxxxx@db/app?sslmode=disable"},
		{"postgres://app@db/app?password=hunter2", "postgres://app@db/app?password=xxxxx"},
		{"postgresql://db/app?sslmode=require&password=hunter2&x=1", "postgresql://db/app?sslmode=require&password=xxxxx&x=1"},
		{"postgres://db/app?sslpassword=hunter2", "postgres://db/app?sslpassword=xxxxx"},
		{"postgres://db/app?PASSWORD=hunter2", "postgres://db/app?PASSWORD=xxxxx"},
		{"host=db user=app password=hunter2 dbname=app", "host=db user=app password=xxxxx dbname=app"},
		{"host=db password='hunter 2' dbname=app", "host=db password=xxxxx dbname=app"},
		{"postgres://app@db/app?x=a@b", "postgres://app@db/app?x=a@b"},
		{"moitessier.db", "moitessier.db"},
	} {
		if got := redactDSN(tc.in); got != tc.want {
			t.Errorf("redactDSN(%q)=%q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestRedactErr: an error that quotes the DSN, or its password alone (as
// a driver may, decoded or not), is shown with the password masked and
// still wraps the original.
func TestRedactErr(t *testing.T) {
	orig := errors.New("boom")
	for _, tc := range []struct{ dsn, msg string }{
		{"postgres://app:hunter2@db/app", "connect postgres://app:hunter2@db/app"},
		{"postgres://app:hunter2@db/app", "auth failed for password hunter2"},
		{"postgres://app:p%40ss%3Fw0rd@db/app", "auth failed for password p@ss?w0rd"},
		{"postgres://app:p%40ss%3Fw0rd@db/app", "auth failed for password p%40ss%3Fw0rd"},
		{"postgres://app@db/app?password=hunter2", "no answer with password hunter2"},
		{"host=db password=hunter2", "cannot parse host=db password=hunter2"},
	} {
		err := redactErr(fmt.Errorf("%s: %w", tc.msg, orig), tc.dsn)
		for _, pw := range []string{"hunter2", "p@ss?w0rd", "p%40ss%3Fw0rd"} {
			if strings.Contains(err.Error(), pw) {
				t.Errorf("redactErr(%q): %q shows the password", tc.msg, err)
			}
		}
		if !errors.Is(err, orig) || !strings.Contains(err.Error(), "xxxxx") {
			t.Errorf("redactErr(%q) = %q: want the password masked and the error wrapped", tc.msg, err)
		}
	}
	if redactErr(nil, "postgres://app:hunter2@db/app") != nil {
		t.Error("redactErr(nil) is not nil")
	}
}

// TestDSNPasswordNeverShown checks every place a store's DSN may show up:
// the help (whose defaults come from the environment), the errors of a
// store that does not open, and what serve prints and logs.
func TestDSNPasswordNeverShown(t *testing.T) {
	const pw = "hunter2sekrit"
	ctx := ctxT(t)
	for _, dsn := range []string{
		"postgres://app:" + pw + "@127.0.0.1:1/app?connect_timeout=1",
		"postgres://app@127.0.0.1:1/app?connect_timeout=1&password=" + pw,
	} {
		t.Run("Help", func(t *testing.T) {
			t.Setenv("MOITESSIER_STORE", dsn)
			t.Setenv("MOITESSIER_SECRET", pw+pw+pw)
			for _, cmd := range []string{"serve", "gc"} {
				out, _, _ := runCmd(ctx, t, "", cmd, "--help")
				if strings.Contains(out, pw) || !strings.Contains(out, "127.0.0.1:1") {
					t.Fatalf("%s --help shows the password:\n%s", cmd, out)
				}
			}
		})
		t.Run("Error", func(t *testing.T) {
			_, stderr, err := runCmd(ctx, t, "", "serve", "--addr", "127.0.0.1:0", "--store", dsn)
			if err == nil {
				t.Fatal("serve on an unreachable database started")
			}
			if strings.Contains(err.Error(), pw) || strings.Contains(stderr, pw) {
				t.Fatalf("error shows the password: %v\n%s", err, stderr)
			}
			_, _, err = runCmd(ctx, t, "", "gc", "--store", dsn)
			if err == nil || strings.Contains(err.Error(), pw) {
				t.Fatalf("gc error shows the password: %v", err)
			}
		})
	}
	// A store bench does not take is named in its error, masked.
	if _, stderr, err := runCmd(ctx, t, "", "bench", "--store", "host=db password="+pw, "fanout-1"); err == nil || strings.Contains(stderr, pw) || !strings.Contains(stderr, "password=xxxxx") {
		t.Fatalf("bench: %v %q", err, stderr)
	}
	// What serve prints and logs, on a database that answers.
	base := env("MOITESSIER_POSTGRES_DSN", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	dsn := base + map[bool]string{true: "&", false: "?"}[strings.Contains(base, "?")] + "password=" + pw
	probe, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	st, err := openStore(probe, dsn, "moitessier_cmd_probe", false)
	if err != nil {
		if os.Getenv("MOITESSIER_REQUIRE_POSTGRES") == "1" {
			t.Fatalf("PostgreSQL required but unreachable at MOITESSIER_POSTGRES_DSN: %v", err)
		}
		t.Skipf("PostgreSQL unreachable; set MOITESSIER_POSTGRES_DSN to run the rest of this test: %v", err)
	}
	st.Close()
	dropSchema(dsn, "moitessier_cmd_probe")
	schema := "moitessier_cmd_" + randomHex(4)
	t.Cleanup(func() { dropSchema(dsn, schema) })
	var logs syncBuffer
	h := startServeLogged(t, &logs, "--store", dsn, "--schema", schema, "--log-level", "info")
	if out := h.stdout.String() + logs.String(); strings.Contains(out, pw) || !strings.Contains(out, "password=xxxxx") {
		t.Fatalf("serve printed or logged the password:\n%s", out)
	}
}

// TestBenchHubCommand: bench gives its hub process the secret and the
// store's address (which may hold a password) in the environment, not on
// the command line, where every user of the machine can read them.
func TestBenchHubCommand(t *testing.T) {
	const secret = "0123456789abcdef0123456789abcdef"
	for _, store := range []string{"postgres://bench:hunter2hunter2@127.0.0.1:5432/test", "sqlite", "memory"} {
		c := &benchConfig{store: store, tmp: t.TempDir()}
		args, env, _ := c.hubCommand("fanout-1", secret)
		for _, a := range args {
			if strings.Contains(a, secret) || strings.Contains(a, "hunter2") || strings.Contains(a, c.tmp) || a == "--secret" || a == "--store" {
				t.Fatalf("%s: the hub's arguments %q carry the secret or the store", store, args)
			}
		}
		// os/exec uses the last value of a key (lastValue).
		if v, _ := lastValue(env, "MOITESSIER_SECRET"); v != secret {
			t.Fatalf("%s: MOITESSIER_SECRET %q", store, v)
		}
		want := store
		if store == "sqlite" {
			want = c.tmp
		}
		if v, _ := lastValue(env, "MOITESSIER_STORE"); !strings.HasPrefix(v, want) {
			t.Fatalf("%s: MOITESSIER_STORE %q", store, v)
		}
	}
}
