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

// TestHubProcs starts a hub process as http-fanout-1 does with --hub-procs
// 1 and reads its environment from the system (Linux), then runs the
// workload with the flag: its result records it. A negative value is
// refused.
func TestHubProcs(t *testing.T) {
	t.Setenv("MOITESSIER_TEST_MAIN", "1") // the hub process is this binary
	ctx := ctxT(t)
	if runtime.GOOS == "linux" {
		c := &benchConfig{store: "memory", tmp: t.TempDir(), hubProcs: 1, stderr: io.Discard}
		h, err := c.startHub(ctx, "http-fanout-1")
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile("/proc/" + strconv.Itoa(h.pid) + "/environ")
		h.stop()
		if err != nil {
			t.Fatal(err)
		}
		if v, ok := lastValue(strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00"), "GOMAXPROCS"); !ok || v != "1" {
			t.Fatalf("the hub process's GOMAXPROCS: %q (set: %v)", v, ok)
		}
	}
	out, errOut, err := runCmd(ctx, t, "", "bench", "--store", "sqlite", "--hub-procs", "1", "--messages", "20", "--json", "http-fanout-1")
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	var r BenchResult
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &r); err != nil || r.HubProcs != 1 || r.Deliveries != 20 {
		t.Fatalf("%v %s", err, out)
	}
	if _, errOut, err := runCmd(ctx, t, "", "bench", "--hub-procs", "-1", "http-fanout-1"); !errors.Is(err, errUsage) || !strings.Contains(errOut, "--hub-procs") {
		t.Fatalf("--hub-procs -1: %v %s", err, errOut)
	}
}
