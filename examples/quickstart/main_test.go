package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

// readmeGoBlocks returns the README's Go code blocks, and the one that
// follows the "## Quick start (library)" heading.
func readmeGoBlocks(tb testing.TB) (blocks []string, quick string) {
	tb.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		tb.Fatal(err)
	}
	_, afterQuick, ok := strings.Cut(string(b), "## Quick start (library)")
	if !ok {
		tb.Fatal("no quick start in the README")
	}
	for rest := string(b); ; {
		_, block, ok := strings.Cut(rest, "\n```go\n")
		if !ok {
			break
		}
		block, rest, _ = strings.Cut(block, "\n```\n")
		blocks = append(blocks, block+"\n")
		if quick == "" && strings.Contains(afterQuick, block) {
			quick = block + "\n"
		}
	}
	return blocks, quick
}

// TestReadmeQuickStart: the README's quick start is this program, byte for
// byte, so that go build and go vet of this package keep it compiling, and
// this test runs it.
func TestReadmeQuickStart(t *testing.T) {
	_, quick := readmeGoBlocks(t)
	src, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	if quick != string(src) {
		t.Fatalf("the README's quick start is not examples/quickstart/main.go; paste the file into the README:\n%s", quick)
	}

	t.Chdir(t.TempDir()) // it writes app.db
	out := capture(t, func() error { return run(context.Background()) })
	if out != "#1 bob: hello, lobby\n" {
		t.Fatalf("first run printed %q", out)
	}
	// Resume: the second run sees only its own message.
	if out := capture(t, func() error { return run(context.Background()) }); out != "#2 bob: hello, lobby\n" {
		t.Fatalf("second run printed %q", out)
	}
}

// TestReadmeFragments: every other Go block of the README says that it is
// a fragment, so that nobody pastes it expecting it to compile.
func TestReadmeFragments(t *testing.T) {
	blocks, quick := readmeGoBlocks(t)
	for _, b := range blocks {
		if b != quick && !strings.HasPrefix(b, "// Fragment") {
			t.Errorf("a README Go block neither compiles nor says it is a fragment:\n%s", b)
		}
	}
}

// capture runs f and returns what it printed to standard output.
func capture(t *testing.T, f func() error) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	done := make(chan []byte)
	go func() {
		var b bytes.Buffer
		_, _ = io.Copy(&b, r)
		done <- b.Bytes()
	}()
	start := time.Now()
	ferr := f()
	os.Stdout = stdout
	w.Close()
	out := <-done
	if ferr != nil {
		t.Fatalf("run: %v (after %v)", ferr, time.Since(start))
	}
	return string(out)
}
