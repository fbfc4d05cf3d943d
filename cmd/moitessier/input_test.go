package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDevSecretKept: in development mode the secret is kept beside the
// SQLite file, readable only by its owner, so that a token minted before a
// restart still works after it.
func TestDevSecretKept(t *testing.T) {
	ctx := ctxT(t)
	db := filepath.Join(t.TempDir(), "hub.db")
	h1 := startServe(t, "--store", db)
	tok, err := fetchDevToken(ctx, h1.url, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(h1.stdout.String(), db+".dev-secret") {
		t.Fatalf("serve does not say where the secret is: %s", h1.stdout)
	}
	h1.shutdown(t)
	fi, err := os.Stat(db + ".dev-secret")
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file: %v %v", fi, err)
	}
	h2 := startServe(t, "--store", db)
	req, _ := http.NewRequest("GET", h2.url+"/v1/whoami", nil)
	req.Header.Set("Authorization", "Bearer "+tok.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var who struct {
		Sub string `json:"sub"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(b, &who) != nil || who.Sub != "alice" {
		t.Fatalf("a token from before the restart: %d %s", resp.StatusCode, b)
	}
}

// TestHealthzMethods: the hub's own endpoints answer other methods 405
// with Allow, rather than falling through to the demo page's 404.
func TestHealthzMethods(t *testing.T) {
	h := startServe(t, "--store", "memory")
	for _, path := range []string{"/healthz", "/metrics"} {
		resp, err := http.Post(h.url+path, "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
			t.Fatalf("POST %s: %d Allow %q, want 405 Allow \"GET, HEAD\"", path, resp.StatusCode, resp.Header.Get("Allow"))
		}
	}
	if code, _ := get(t, h.url+"/healthz"); code != 200 {
		t.Fatalf("GET /healthz: %d", code)
	}
}

// TestSlowBodyServe: a body that never finishes, to the hub's own paths as
// to the API, without a token, gets the connection answered and closed
// within --body-timeout.
func TestSlowBodyServe(t *testing.T) {
	const timeout = 300 * time.Millisecond
	h := startServe(t, "--store", "memory", "--body-timeout", timeout.String())
	for _, path := range []string{"/dev/token", "/healthz", "/", "/v1/dispatch?scope=a"} {
		t.Run(path, func(t *testing.T) {
			conn, err := net.Dial("tcp", strings.TrimPrefix(h.url, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			start := time.Now()
			fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"sub\":", path)
			_ = conn.SetReadDeadline(time.Now().Add(timeout*2 + 2*time.Second))
			got, err := io.ReadAll(bufio.NewReader(conn))
			if err != nil {
				t.Fatalf("after %v: %v (read %q): neither answered nor closed", time.Since(start), err, got)
			}
			if el := time.Since(start); el > timeout+1500*time.Millisecond {
				t.Fatalf("closed after %v, want within %v and the close's linger", el, timeout)
			}
		})
	}
}
