package main

import (
	"errors"
	"flag"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// readmeLimits returns the rows of the README's "Limits and quotas" table.
func readmeLimits(tb testing.TB) []string {
	tb.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		tb.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(b), "\n## Limits and quotas\n")
	if !ok {
		tb.Fatal("the README has no Limits and quotas section")
	}
	sec, _, _ = strings.Cut(sec, "\n## ")
	var rows []string
	for _, line := range strings.Split(sec, "\n") {
		if strings.HasPrefix(line, "| ") {
			rows = append(rows, line)
		}
	}
	return rows
}

// spaced writes n as the README does: 1 000, 2 000, 64.
func spaced(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + " " + s[i:]
	}
	return s
}

// TestLimitsDocumented: every limit the hub has a flag for is in the
// README's "Limits and quotas" table, naming the flag, with the default
// the flag has; and serve --help states the limits that have no flag.
func TestLimitsDocumented(t *testing.T) {
	_, fs := serveFlags(io.Discard)
	rows := readmeLimits(t)
	for name, format := range map[string]func(v string) string{
		"quota-listeners":         func(v string) string { n, _ := strconv.Atoi(v); return spaced(n) },
		"quota-handlers":          func(v string) string { n, _ := strconv.Atoi(v); return spaced(n) },
		"quota-shared":            func(v string) string { n, _ := strconv.Atoi(v); return spaced(n) },
		"quota-subscriptions":     func(v string) string { n, _ := strconv.Atoi(v); return spaced(n) },
		"max-scopes-per-listener": func(v string) string { return v },
		"max-handlers":            func(v string) string { return v },
		"max-recipients":          func(v string) string { return v },
		"max-listeners":           func(v string) string { return v },
		"max-streams":             func(v string) string { return v },
		"max-message-bytes":       func(v string) string { n, _ := strconv.Atoi(v); return strconv.Itoa(n>>10) + " KiB" },
		"handler-budget":          seconds,
		"handler-rate":            seconds,
		"handler-burst":           seconds,
		"body-timeout":            seconds,
		"write-timeout":           seconds,
		"response-timeout":        seconds,
		"rate":                    func(v string) string { return v + "/s" },
		"burst":                   func(v string) string { return "bursts of " + v },
		"join-rate":               func(v string) string { return v + "/s" },
		"join-burst":              func(v string) string { return "bursts of " + v },
		"lease":                   func(v string) string { d, _ := time.ParseDuration(v); return strconv.Itoa(int(d.Hours())) + " h" },
		"retention":               func(v string) string { d, _ := time.ParseDuration(v); return strconv.Itoa(int(d.Hours()/24)) + " days" },
	} {
		f := fs.Lookup(name)
		if f == nil {
			t.Errorf("serve has no --%s", name)
			continue
		}
		var row string
		for _, r := range rows {
			if strings.Contains(r, "--"+name+"`") {
				row = r
				break
			}
		}
		if row == "" {
			t.Errorf("no row of the README's limits names --%s", name)
			continue
		}
		cols := strings.Split(row, " | ")
		if want := format(f.DefValue); len(cols) < 3 || !strings.Contains(cols[1], want) {
			t.Errorf("--%s defaults to %s, but its README row says %q (want %q in it)", name, f.DefValue, cols[1], want)
		}
	}

	out, _, err := runCmd(ctxT(t), t, "", "serve", "--help")
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatal(err)
	}
	for _, want := range []string{
		"long-poll waits 25s", "at most 60s", "at most 256 messages", "16 KiB", "10000 query parameters",
		"FILE.dev-secret", "per hub process", "Limits and quotas",
	} {
		if !strings.Contains(strings.Join(strings.Fields(out), " "), want) {
			t.Errorf("serve --help does not say %q", want)
		}
	}
	if !strings.Contains(fs.Lookup("rate").Usage, "in this process") {
		t.Errorf("--rate's help does not say that the rate is per process: %q", fs.Lookup("rate").Usage)
	}
}

// seconds writes a flag's duration as the README does: 2 s, 10 s.
func seconds(v string) string {
	d, err := time.ParseDuration(v)
	if err != nil {
		return v
	}
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + " s"
}
