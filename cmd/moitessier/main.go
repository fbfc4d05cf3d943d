// Command moitessier runs a Moitessier hub and talks to one.
//
//	moitessier serve      run the hub: HTTP transports, auth, metrics, the demo page
//	moitessier dispatch   send a message to a scope through a running hub
//	moitessier listen     follow a scope through a running hub, like tail -f
//	moitessier token      mint a token
//	moitessier secret     print a new random secret
//	moitessier gc         remove what has expired from a store
//	moitessier bench      run the standard benchmark workloads against a store
//
// Every command takes --help. Flags default to environment variables
// (MOITESSIER_STORE, MOITESSIER_ADDR, MOITESSIER_SECRET, MOITESSIER_HUB,
// MOITESSIER_TOKEN…), named in each command's help; a flag on the command
// line wins, and a variable set to a value its flag cannot take is an
// error. Without either, a flag's default is the library's
// (moitessier.DefaultOptions, moitessierhttp.DefaultConfig).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// command is one subcommand.
type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error
}

var commands = []command{
	{"serve", "run the hub: SSE, WebSocket, long-poll, dispatch, read state, /metrics, the demo page", runServe},
	{"dispatch", "send a message to a scope through a running hub", runDispatch},
	{"listen", "follow a scope through a running hub, like tail -f", runListen},
	{"token", "mint a token (HS256 JWT) for a person", runToken},
	{"secret", "print a new random secret for --secret", runSecret},
	{"gc", "remove expired subscribers, listeners, messages and keys from a store", runGC},
	{"bench", "run the standard workloads against a store: delivered msgs/s, p50/p99 latency", runBench},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.Is(err, errUsage):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "moitessier:", err)
		os.Exit(1)
	}
}

// errUsage reports bad arguments; the usage was printed.
var errUsage = errors.New("usage")

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		if len(args) > 1 && args[0] == "help" {
			return run(ctx, []string{args[1], "--help"}, stdin, stdout, stderr)
		}
		usage(stdout)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	if args[0] == httpFloorCommand {
		return runHTTPFloor(ctx, args[1:], stdin, stdout, stderr)
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdin, stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "moitessier: unknown command %q\n\n", args[0])
	usage(stderr)
	return errUsage
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "Moitessier: durable, scoped message dispatch.\n\nUsage:\n  moitessier <command> [flags] [arguments]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun \"moitessier <command> --help\" for a command's flags.\n\nStart here:\n  moitessier serve                 # a hub on ./moitessier.db; open the address it prints\n  moitessier listen room.1         # in another terminal\n  moitessier dispatch room.1 hi    # in a third\n")
}

// newFlags returns a flag set whose usage prints the command's synopsis and
// description above its flags.
func newFlags(name, synopsis, description string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: moitessier %s %s\n\n%s\n\nFlags:\n", name, synopsis, strings.TrimSpace(description))
		hideSecrets(fs)
		fs.PrintDefaults()
	}
	return fs
}

// hideSecrets keeps the help from printing the secrets that flag
// defaults read from the environment: a store's password, a secret, a token.
func hideSecrets(fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		switch {
		case f.Name == "store":
			f.DefValue = redactDSN(f.DefValue)
		case (f.Name == "secret" || f.Name == "token") && f.DefValue != "":
			f.DefValue = "(set in the environment)"
		}
	})
}

// parse parses flags, mapping -h to flag.ErrHelp with the usage printed to stdout.
func parse(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" {
			fs.SetOutput(stdout)
			fs.Usage()
			return flag.ErrHelp
		}
	}
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	return checkEnv(fs)
}

// errBadEnv reports an environment variable whose value its flag cannot
// take: an error, never silently the default.
var errBadEnv = errors.New("bad environment variable")

// envOf finds the variable a flag's usage names: "(env MOITESSIER_RATE".
var envOf = regexp.MustCompile(`\(env (MOITESSIER_[A-Z0-9_]+)`)

// checkEnv checks the environment variables of the flags not set on the
// command line: one set to a value its flag cannot parse is an error
// (env, envInt… read them for the flags' defaults and cannot fail).
func checkEnv(fs *flag.FlagSet) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		m := envOf.FindStringSubmatch(f.Usage)
		if m == nil || set[f.Name] {
			return
		}
		v := env(m[1], "")
		g, ok := f.Value.(flag.Getter)
		if v == "" || !ok {
			return
		}
		var err error
		switch g.Get().(type) {
		case int:
			_, err = strconv.Atoi(v)
		case float64:
			_, err = strconv.ParseFloat(v, 64)
		case time.Duration:
			_, err = time.ParseDuration(v)
		case bool:
			_, err = strconv.ParseBool(v)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: %s=%q, for --%s: %v", errBadEnv, m[1], v, f.Name, err))
		}
	})
	return errors.Join(errs...)
}

// env returns the environment variable, or def.
func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(env(name, "")); err == nil {
		return n
	}
	return def
}

func envFloat(name string, def float64) float64 {
	if f, err := strconv.ParseFloat(env(name, ""), 64); err == nil {
		return f
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(env(name, "")); err == nil {
		return d
	}
	return def
}

func envBool(name string, def bool) bool {
	if b, err := strconv.ParseBool(env(name, "")); err == nil {
		return b
	}
	return def
}

// listFlag is a repeatable flag whose values may also be comma-separated.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}
