//go:build unix

package gcpemu

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

var errNoGcloud = errors.New("not found in PATH")

// watchdog starts a background watcher that ends the whole process group
// when its stdin (a pipe whose write end only the test binary holds)
// closes: when stop closes it, or when the test binary ends in any way. It
// sends SIGTERM, and 10 s later SIGKILL to whatever of the group is left
// (a Java server with a backlog of requests from a test binary that timed
// out was seen to outlive SIGTERM by many minutes, at full processor). It
// runs in a session of its own (setsid), so that it is not of the group it
// ends and stop does not wait for it; where there is no setsid command
// (macOS), it sends SIGTERM alone, from within the group. Then the shell
// execs the emulator command ("$@"), which keeps the shell's pid: the
// group's id.
//
// The group is a new session (Setsid), and gcloud is its leader: gcloud's
// emulator launcher moves itself into a process group of its own unless it
// leads its session, and the Java server it starts inherits that group.
const watchdog = `exec 3<&0
if command -v setsid >/dev/null 2>&1; then
	setsid sh -c 'read line; kill -TERM -"$1" 2>/dev/null; sleep 10; kill -KILL -"$1" 2>/dev/null' sh $$ <&3 >/dev/null 2>&1 &
else
	{ read line <&3; kill -TERM 0; } </dev/null &
fi
exec "$@" </dev/null 3<&-
`

// emulator is a running emulator process group.
type emulator struct {
	host   string
	dir    string
	log    string
	cmd    *exec.Cmd
	pgid   int
	stdin  *os.File      // closing it makes the watchdog end the group
	exited chan struct{} // closed when gcloud has exited
}

// start starts the emulator of kind k on a free port and waits until it
// answers its health check.
func start(k kind) (*emulator, error) {
	gcloud, err := exec.LookPath("gcloud")
	if err != nil {
		return nil, fmt.Errorf("%w: %s: gcloud %w (install google-cloud-cli and its emulator component, or set %s)",
			ErrUnavailable, k.name, errNoGcloud, k.env)
	}
	if _, err := exec.LookPath("java"); err != nil {
		return nil, fmt.Errorf("%w: %s: java %w (the emulators need Java 17 or later, or set %s)",
			ErrUnavailable, k.name, errNoGcloud, k.env)
	}
	host, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: find a free port: %w", ErrUnavailable, k.name, err)
	}
	dir, err := os.MkdirTemp("", "gcpemu-")
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, k.name, err)
	}
	logPath := filepath.Join(dir, "emulator.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, k.name, err)
	}
	defer logFile.Close()
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, k.name, err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, k.name, err)
	}
	defer r.Close()

	args := append([]string{"-c", watchdog, "sh", gcloud}, k.args(host, data)...)
	cmd := exec.Command("/bin/sh", args...)
	cmd.Stdin = r
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = append(os.Environ(), "CLOUDSDK_CORE_DISABLE_PROMPTS=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("%w: %s: start gcloud: %w", ErrUnavailable, k.name, err)
	}
	e := &emulator{host: host, dir: dir, log: logPath, cmd: cmd, pgid: cmd.Process.Pid, stdin: w, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(e.exited)
	}()
	if err := waitHealthy(host, StartTimeout, e.exited); err != nil {
		tail := e.logTail()
		e.stop()
		return nil, fmt.Errorf("%w: %s on %s: %w; its output ends:\n%s", ErrUnavailable, k.name, host, err, tail)
	}
	return e, nil
}

// logTail returns the last lines the emulator printed.
func (e *emulator) logTail() string {
	b, err := os.ReadFile(e.log)
	if err != nil {
		return err.Error()
	}
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// stop ends the emulator's process group: SIGTERM, then SIGKILL to whatever
// is left after 10 s. It returns when no process of the group is left.
func (e *emulator) stop() {
	e.stdin.Close()
	_ = syscall.Kill(-e.pgid, syscall.SIGTERM)
	if !waitGroupGone(e.pgid, 10*time.Second) {
		_ = syscall.Kill(-e.pgid, syscall.SIGKILL)
		waitGroupGone(e.pgid, 5*time.Second)
	}
	<-e.exited
	os.RemoveAll(e.dir)
}

// waitGroupGone waits until no live process is in group pgid, and reports
// whether that happened within timeout.
func waitGroupGone(pgid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for groupAlive(pgid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// groupAlive reports whether a process of group pgid is alive. Zombies do
// not count: an orphan is reaped by init whenever init gets to it.
func groupAlive(pgid int) bool {
	procs, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil || len(procs) == 0 {
		return syscall.Kill(-pgid, 0) == nil
	}
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := bytes.Fields(b[i+1:])
		if len(f) < 3 || string(f[0]) == "Z" || string(f[0]) == "X" {
			continue
		}
		if g, err := strconv.Atoi(string(f[2])); err == nil && g == pgid {
			return true
		}
	}
	return false
}
