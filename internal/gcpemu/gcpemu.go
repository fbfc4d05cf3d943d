// Package gcpemu starts the Google Cloud emulators that the Datastore store's
// tests run against: the Datastore emulator in Firestore-in-Datastore mode
// and the Pub/Sub emulator.
//
// [Datastore] and [PubSub] return the host:port of an emulator. When
// DATASTORE_EMULATOR_HOST (resp. PUBSUB_EMULATOR_HOST) is set, that emulator
// is used as it is. Otherwise the first call in a test binary starts one
// emulator on a free 127.0.0.1 port, shared by every test of the binary
// (tests isolate themselves with a fresh namespace or topic), and sets the
// variable for the rest of the process, so that the Google client libraries
// find it. When gcloud or Java is missing or the emulator does not come up,
// the test is skipped saying why, or fails if MOITESSIER_REQUIRE_DATASTORE=1
// (which CI sets; it covers both emulators, because the Datastore store needs
// both).
//
// The emulator runs in its own process group. [Stop] (called by [Main])
// ends the group, the gcloud wrapper and the Java server it leaves behind
// alike; if the test binary ends without Stop (a panic, a timeout, a kill),
// a watchdog in the group notices that its stdin, a pipe from the test
// binary, has closed and ends the group itself.
//
// The package keeps one emulator per kind per process: this is package-level
// state on purpose, because starting a JVM per test would cost seconds each.
package gcpemu

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// RequireEnv is the environment variable that turns a skip for a missing or
// failing emulator into a test failure.
const RequireEnv = "MOITESSIER_REQUIRE_DATASTORE"

// StartTimeout bounds how long an emulator may take to answer its health
// check after it was started. The JVM usually starts in 2 s, slower on a
// busy machine.
const StartTimeout = 90 * time.Second

// ErrUnavailable is wrapped by the errors of emulators that cannot be started
// or do not answer.
var ErrUnavailable = errors.New("gcpemu: emulator unavailable")

// kind describes one emulator.
type kind struct {
	name string // for messages
	env  string // variable the client libraries read
	// args returns the gcloud arguments to start it on hostPort with data in dir.
	args func(hostPort, dir string) []string
}

var (
	datastoreKind = kind{
		name: "Datastore emulator",
		env:  "DATASTORE_EMULATOR_HOST",
		args: func(hostPort, dir string) []string {
			// The Datastore emulator in Firestore-in-Datastore mode: strongly
			// consistent queries, and conflicting transactions fail fast with
			// Aborted. (The Firestore emulator's --database-mode=datastore-mode
			// also answers, but in preview and holding locks for seconds under
			// contention.)
			return []string{"beta", "emulators", "datastore", "start",
				"--no-store-on-disk", "--use-firestore-in-datastore-mode",
				"--host-port=" + hostPort, "--project=test", "--data-dir=" + dir}
		},
	}
	pubsubKind = kind{
		name: "Pub/Sub emulator",
		env:  "PUBSUB_EMULATOR_HOST",
		args: func(hostPort, dir string) []string {
			return []string{"beta", "emulators", "pubsub", "start",
				"--host-port=" + hostPort, "--project=test", "--data-dir=" + dir}
		},
	}
)

// shared is the one emulator of a kind in this process.
type shared struct {
	once sync.Once
	host string
	err  error
	emu  *emulator // nil when the host came from the environment
}

var (
	mu        sync.Mutex
	emulators = map[string]*shared{}
)

// Datastore returns the host:port of a Datastore emulator in
// Firestore-in-Datastore mode, starting it if DATASTORE_EMULATOR_HOST is
// unset, or skips tb (fails it under MOITESSIER_REQUIRE_DATASTORE=1).
func Datastore(tb testing.TB) string {
	tb.Helper()
	return get(tb, datastoreKind)
}

// PubSub returns the host:port of a Pub/Sub emulator, starting it if
// PUBSUB_EMULATOR_HOST is unset, or skips tb (fails it under
// MOITESSIER_REQUIRE_DATASTORE=1).
func PubSub(tb testing.TB) string {
	tb.Helper()
	return get(tb, pubsubKind)
}

func get(tb testing.TB, k kind) string {
	tb.Helper()
	mu.Lock()
	s := emulators[k.name]
	if s == nil {
		s = &shared{}
		emulators[k.name] = s
	}
	mu.Unlock()
	s.once.Do(func() { s.host, s.emu, s.err = obtain(k, 10*time.Second) })
	if s.err != nil {
		unavailable(tb, s.err)
	}
	return s.host
}

// unavailable skips tb, or fails it when RequireEnv is set.
func unavailable(tb testing.TB, err error) {
	tb.Helper()
	if os.Getenv(RequireEnv) == "1" {
		tb.Fatalf("%v (required by %s=1)", err, RequireEnv)
		return
	}
	tb.Skipf("%v (set %s=1 to fail instead of skipping)", err, RequireEnv)
}

// obtain returns the emulator named by k.env, if it answers within
// envTimeout, or starts one and sets k.env.
func obtain(k kind, envTimeout time.Duration) (string, *emulator, error) {
	if host := os.Getenv(k.env); host != "" {
		if err := waitHealthy(host, envTimeout, nil); err != nil {
			return "", nil, fmt.Errorf("%w: %s=%s: %w", ErrUnavailable, k.env, host, err)
		}
		return host, nil, nil
	}
	var err error
	for range 3 { // a free port found by listening may be taken before the emulator binds it
		var e *emulator
		e, err = start(k)
		if err == nil {
			if err := os.Setenv(k.env, e.host); err != nil {
				e.stop()
				return "", nil, fmt.Errorf("%w: set %s: %w", ErrUnavailable, k.env, err)
			}
			return e.host, e, nil
		}
		if errors.Is(err, errNoGcloud) {
			break
		}
	}
	return "", nil, err
}

// Main runs the tests of m, stops the emulators they started and exits with
// their status. Call it from TestMain in every package that uses the
// emulators:
//
//	func TestMain(m *testing.M) { gcpemu.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	Stop()
	os.Exit(code)
}

// Stop ends every emulator this process started, waiting until none of their
// processes is left. Emulators named by the environment are left alone. The
// emulators cannot be started again in this process after Stop.
func Stop() {
	mu.Lock()
	defer mu.Unlock()
	for name, s := range emulators {
		s.once.Do(func() { s.err = fmt.Errorf("%w: %s stopped", ErrUnavailable, name) })
		if s.emu != nil {
			s.emu.stop()
			s.emu = nil
		}
	}
}

// freePort returns a 127.0.0.1 address no one listens on at the moment.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

// waitHealthy polls GET http://host/ until it answers "Ok", the timeout
// passes, or exited is closed.
func waitHealthy(host string, timeout time.Duration, exited <-chan struct{}) error {
	deadline := time.Now().Add(timeout)
	// No keep-alive: an idle connection left in a shared transport keeps two
	// goroutines running, which the packages' leak checks report.
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var last error
	for {
		resp, err := client.Get("http://" + host + "/")
		if err == nil {
			var b [16]byte
			n, _ := resp.Body.Read(b[:])
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.TrimSpace(string(b[:n])) == "Ok" {
				return nil
			}
			last = fmt.Errorf("GET / answered %s %q", resp.Status, b[:n])
		} else {
			last = err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no health check answer in %v: %w", timeout, last)
		}
		select {
		case <-exited:
			return errors.New("the emulator exited")
		case <-time.After(200 * time.Millisecond):
		}
	}
}
