package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// lastValue returns the value os/exec gives key in env: its last one.
func lastValue(env []string, key string) (string, bool) {
	v, found := "", false
	for _, kv := range env {
		if k, val, _ := strings.Cut(kv, "="); k == key {
			v, found = val, true
		}
	}
	return v, found
}

// TestHubProcsEnv: --hub-procs puts GOMAXPROCS in the environment of the
// processes that serve the http-* workloads (the hub, and pg-http-floor's
// service, which both take childEnv's), after an inherited value; without
// it the inherited value is left as it is.
func TestHubProcsEnv(t *testing.T) {
	t.Setenv("GOMAXPROCS", "7")
	c := &benchConfig{store: "memory", tmp: t.TempDir()}
	_, env, _ := c.hubCommand("http-fanout-1", "0123456789abcdef0123456789abcdef")
	if v, _ := lastValue(env, "GOMAXPROCS"); v != "7" {
		t.Fatalf("without --hub-procs: GOMAXPROCS %q, want the inherited 7", v)
	}
	c.hubProcs = 1
	_, env, _ = c.hubCommand("http-fanout-1", "0123456789abcdef0123456789abcdef")
	if v, _ := lastValue(env, "GOMAXPROCS"); v != "1" {
		t.Fatalf("hub with --hub-procs 1: GOMAXPROCS %q", v)
	}
	env = c.childEnv("MOITESSIER_STORE=x")
	if v, _ := lastValue(env, "GOMAXPROCS"); v != "1" {
		t.Fatalf("floor service with --hub-procs 1: GOMAXPROCS %q", v)
	}
	if v, _ := lastValue(env, "MOITESSIER_STORE"); v != "x" {
		t.Fatalf("MOITESSIER_STORE %q", v)
	}
}

// processEnv reads the environment process pid started with (Linux).
func processEnv(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
}

// TestHubProcs starts a hub process as http-fanout-1 does with --hub-procs
// 1 and reads its environment from the system (Linux), then runs the
// hub's workloads with the flag: their results record it. A negative
// value is refused.
func TestHubProcs(t *testing.T) {
	t.Setenv("MOITESSIER_TEST_MAIN", "1") // the hub process is this binary
	ctx := ctxT(t)
	if runtime.GOOS == "linux" {
		c := &benchConfig{store: "memory", tmp: t.TempDir(), hubProcs: 1, stderr: io.Discard}
		h, err := c.startHub(ctx, "http-fanout-1")
		if err != nil {
			t.Fatal(err)
		}
		env := processEnv(t, h.pid)
		h.stop()
		if v, ok := lastValue(env, "GOMAXPROCS"); !ok || v != "1" {
			t.Fatalf("the hub process's GOMAXPROCS: %q (set: %v)", v, ok)
		}
	}
	// Every workload a hub serves says so, in each round and in the
	// summary, where hub_procs is a label, not a figure; a library
	// workload, which has no hub process, does not.
	out, errOut, err := runCmd(ctx, t, "", "bench", "--store", "sqlite", "--hub-procs", "1", "--messages", "20", "--clients", "20", "--idle", "100ms",
		"--rounds", "2", "--json", "http-fanout-1", "http-idle", "sse-10k", "fanout-1")
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 12 {
		t.Fatalf("want two rounds of four results and four summaries:\n%s", out)
	}
	for _, line := range lines[:8] {
		var r BenchResult
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		if want := map[bool]int{true: 0, false: 1}[r.Workload == "fanout-1"]; r.HubProcs != want {
			t.Fatalf("hub_procs %d, want %d: %s", r.HubProcs, want, line)
		}
	}
	for _, line := range lines[8:] {
		var s RoundsSummary
		if err := json.Unmarshal([]byte(line), &s); err != nil {
			t.Fatal(err)
		}
		if want := map[bool]int{true: 0, false: 1}[s.Workload == "fanout-1"]; s.HubProcs != want || s.Rounds != 2 {
			t.Fatalf("summary: hub_procs %d, want %d: %s", s.HubProcs, want, line)
		}
		if _, ok := s.Summary["hub_procs"]; ok {
			t.Fatalf("hub_procs summarized as a figure: %s", line)
		}
	}
	if _, errOut, err := runCmd(ctx, t, "", "bench", "--hub-procs", "-1", "http-fanout-1"); !errors.Is(err, errUsage) || !strings.Contains(errOut, "--hub-procs") {
		t.Fatalf("--hub-procs -1: %v %s", err, errOut)
	}
}

// TestHubProcsHTTPFloor: pg-http-floor's bare service runs with
// --hub-procs' GOMAXPROCS too, read from the process's environment
// (Linux), and its result records it.
func TestHubProcsHTTPFloor(t *testing.T) {
	dsn := postgresDSN(t)
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	t.Setenv("MOITESSIER_TEST_MAIN", "1") // the service is this binary
	var pids []int
	c := &benchConfig{store: dsn, storeName: "postgres", publishers: 1, hubProcs: 1, stderr: io.Discard, tmp: t.TempDir()}
	c.childStarted = func(pid int) {
		if v, ok := lastValue(processEnv(t, pid), "GOMAXPROCS"); !ok || v != "1" {
			t.Errorf("the service's GOMAXPROCS: %q (set: %v)", v, ok)
		}
		pids = append(pids, pid)
	}
	res, err := c.pgHTTPFloor(ctxT(t), 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if len(pids) != 1 || res.HubProcs != 1 || res.Messages < 1 {
		t.Fatalf("started %d services; result %+v", len(pids), res)
	}
}
