//go:build unix

package gcpemu

import (
	"bufio"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain checks that Stop leaves no process of the emulators the tests
// started.
func TestMain(m *testing.M) {
	if os.Getenv("GCPEMU_CHILD") == "1" {
		child()
		return
	}
	code := m.Run()
	var pgids []int
	mu.Lock()
	for _, s := range emulators {
		if s.emu != nil {
			pgids = append(pgids, s.emu.pgid)
		}
	}
	mu.Unlock()
	Stop()
	for _, g := range pgids {
		if groupAlive(g) {
			fmt.Fprintf(os.Stderr, "FAIL: process group %d of an emulator is alive after Stop\n", g)
			code = 1
		}
	}
	os.Exit(code)
}

// child starts a Pub/Sub emulator, prints its process group and kills
// itself, as a test binary that times out or is killed would end: without
// Stop.
func child() {
	e, err := start(pubsubKind)
	if err != nil {
		fmt.Println("ERR", strings.ReplaceAll(err.Error(), "\n", " "))
		os.Exit(0)
	}
	fmt.Println("PGID", e.pgid, e.host)
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
}

func healthy(t *testing.T, host string) {
	t.Helper()
	resp, err := http.Get("http://" + host + "/")
	if err != nil {
		t.Fatalf("GET / of %s: %v", host, err)
	}
	defer resp.Body.Close()
	var b [16]byte
	n, _ := resp.Body.Read(b[:])
	if got := strings.TrimSpace(string(b[:n])); got != "Ok" {
		t.Fatalf("GET / of %s = %q, want Ok", host, got)
	}
}

func TestDatastore(t *testing.T) {
	host := Datastore(t)
	healthy(t, host)
	if got := os.Getenv("DATASTORE_EMULATOR_HOST"); got != host {
		t.Fatalf("DATASTORE_EMULATOR_HOST=%q, want %q", got, host)
	}
	if again := Datastore(t); again != host {
		t.Fatalf("second Datastore = %q, want the same emulator %q", again, host)
	}
}

func TestPubSub(t *testing.T) {
	host := PubSub(t)
	healthy(t, host)
	if got := os.Getenv("PUBSUB_EMULATOR_HOST"); got != host {
		t.Fatalf("PUBSUB_EMULATOR_HOST=%q, want %q", got, host)
	}
	if again := PubSub(t); again != host {
		t.Fatalf("second PubSub = %q, want the same emulator %q", again, host)
	}
}

// javaInGroup returns the pids of java processes in group pgid.
func javaInGroup(pgid int) []int {
	var pids []int
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		if g, err := syscall.Getpgid(pid); err != nil || g != pgid {
			continue
		}
		cmd, _ := os.ReadFile("/proc/" + d.Name() + "/cmdline")
		if strings.Contains(string(cmd), "java") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestStopEndsJava: stop ends the gcloud wrapper and the Java server alike.
func TestStopEndsJava(t *testing.T) {
	e, err := start(pubsubKind)
	if err != nil {
		unavailable(t, err)
	}
	java := javaInGroup(e.pgid)
	if len(java) == 0 {
		e.stop()
		t.Fatalf("no java process in the emulator's group %d", e.pgid)
	}
	e.stop()
	if groupAlive(e.pgid) {
		t.Fatalf("group %d alive after stop", e.pgid)
	}
	for _, pid := range java {
		if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && !strings.Contains(string(stat), ") Z") {
			t.Fatalf("java %d still running after stop: %s", pid, stat)
		}
	}
	if _, err := http.Get("http://" + e.host + "/"); err == nil {
		t.Fatalf("%s still answers after stop", e.host)
	}
	if _, err := os.Stat(e.dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("data dir %s left after stop: %v", e.dir, err)
	}
}

// TestKilledBinaryLeavesNoEmulator: a test binary killed without Stop does
// not leave its emulator behind.
func TestKilledBinaryLeavesNoEmulator(t *testing.T) {
	if _, err := exec.LookPath("gcloud"); err != nil {
		unavailable(t, err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "GCPEMU_CHILD=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	_ = cmd.Wait()
	f := strings.Fields(line)
	if len(f) < 3 || f[0] != "PGID" {
		unavailable(t, fmt.Errorf("child: %q", line))
	}
	pgid, _ := strconv.Atoi(f[1])
	if !waitGroupGone(pgid, 20*time.Second) {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		t.Fatalf("emulator group %d still alive 20 s after its test binary was killed", pgid)
	}
	if _, err := http.Get("http://" + f[2] + "/"); err == nil {
		t.Fatalf("%s still answers", f[2])
	}
}

// TestWatchdogKillsWhatIgnoresTERM: when the test binary's end closes the
// watchdog's stdin, a process of the group that ignores SIGTERM (as a busy
// emulator can, for minutes) is killed 10 s later, and the watchdog itself
// is of another group, so stop does not wait for it.
func TestWatchdogKillsWhatIgnoresTERM(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", "-c", watchdog, "sh", "/bin/sh", "-c", `trap "" TERM; sleep 60 & wait; sleep 60`)
	cmd.Stdin = r
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	pgid := cmd.Process.Pid
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	time.Sleep(200 * time.Millisecond) // let the shell trap TERM
	w.Close()                          // as the end of the test binary does
	if !waitGroupGone(pgid, 20*time.Second) {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		t.Fatalf("group %d still alive 20 s after the watchdog's stdin closed", pgid)
	}
	<-exited
}

func TestEnvHostDown(t *testing.T) {
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("PUBSUB_EMULATOR_HOST", port)
	_, _, err = obtain(pubsubKind, 300*time.Millisecond)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "PUBSUB_EMULATOR_HOST="+port) {
		t.Fatalf("obtain with a dead PUBSUB_EMULATOR_HOST = %v, want ErrUnavailable naming it", err)
	}
}

func TestNoGcloud(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := start(datastoreKind)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "gcloud not found") {
		t.Fatalf("start without gcloud = %v, want ErrUnavailable saying gcloud is not found", err)
	}
}

// recorder is a testing.TB that records Skipf and Fatalf instead of ending
// the test.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper()                        {}
func (r *recorder) Skipf(format string, a ...any)  { r.skipped = fmt.Sprintf(format, a...) }
func (r *recorder) Fatalf(format string, a ...any) { r.failed = fmt.Sprintf(format, a...) }

func TestUnavailableSkipsOrFails(t *testing.T) {
	cause := fmt.Errorf("%w: test", ErrUnavailable)
	t.Setenv(RequireEnv, "")
	r := &recorder{TB: t}
	unavailable(r, cause)
	if r.failed != "" || !strings.Contains(r.skipped, "gcpemu: emulator unavailable: test") {
		t.Fatalf("without %s: skipped %q, failed %q; want a skip with the cause", RequireEnv, r.skipped, r.failed)
	}
	t.Setenv(RequireEnv, "1")
	r = &recorder{TB: t}
	unavailable(r, cause)
	if r.skipped != "" || !strings.Contains(r.failed, "gcpemu: emulator unavailable: test") {
		t.Fatalf("with %s=1: skipped %q, failed %q; want a failure with the cause", RequireEnv, r.skipped, r.failed)
	}
}
