package moitessierhttp_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/moitessierhttp"
)

// TestSlowBody sends request bodies that never finish, over real sockets:
// each connection is answered or closed within the body timeout, whether
// the request has a token or not.
func TestSlowBody(t *testing.T) {
	const timeout = 300 * time.Millisecond
	e := newEnv(t, moitessierhttp.Config{BodyTimeout: timeout})
	tok := all(t, "alice")
	for _, tc := range []struct {
		name, head string
		want       string // the status line's code, or "" for a closed connection
	}{
		{"NoToken", "POST /v1/dispatch?scope=slow.1 HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n", "401"},
		{"BadToken", "POST /v1/dispatch?scope=slow.1 HTTP/1.1\r\nAuthorization: Bearer x.y.z\r\nContent-Length: 1000\r\n", "401"},
		{"Text", "POST /v1/dispatch?scope=slow.1 HTTP/1.1\r\nAuthorization: Bearer " + tok + "\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n", "408"},
		{"JSON", "POST /v1/dispatch HTTP/1.1\r\nAuthorization: Bearer " + tok + "\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n", "408"},
		{"Chunked", "POST /v1/dispatch?scope=slow.1 HTTP/1.1\r\nAuthorization: Bearer " + tok + "\r\nTransfer-Encoding: chunked\r\n", "408"},
		{"Join", "POST /v1/listeners HTTP/1.1\r\nAuthorization: Bearer " + tok + "\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n", "408"},
		{"NotFound", "POST /v1/nothing HTTP/1.1\r\nContent-Length: 1000\r\n", "404"},
		{"GETWithBody", "GET /v1/poll?scope=slow.1&timeout=0.01 HTTP/1.1\r\nAuthorization: Bearer " + tok + "\r\nContent-Length: 1000\r\n", "408"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conn := e.dial(t)
			start := time.Now()
			first := `{"scope":"slow.1","te`
			if strings.Contains(tc.head, "chunked") {
				first = "5\r\nhello\r\n"
			}
			fmt.Fprintf(conn, "%sHost: x\r\n\r\n%s", tc.head, first)
			// Then nothing more. Read everything the server sends until it
			// closes the connection, allowing it twice the body timeout
			// and some slack for a loaded machine.
			_ = conn.SetReadDeadline(time.Now().Add(timeout*2 + 2*time.Second))
			got, err := io.ReadAll(bufio.NewReader(conn))
			if err != nil {
				t.Fatalf("after %v: %v; read %q: the connection was neither answered nor closed", time.Since(start), err, got)
			}
			// net/http lingers up to 500 ms after an answer before it
			// closes, so that the client reads it.
			if el := time.Since(start); el > timeout+1500*time.Millisecond {
				t.Fatalf("closed after %v, want within the body timeout %v (and the close's linger)", el, timeout)
			}
			if !strings.HasPrefix(string(got), "HTTP/1.1 "+tc.want) {
				t.Fatalf("answer %q, want %s", got, tc.want)
			}
		})
	}
}

// TestTokenBeforeBody: a request without a valid token is answered at
// once, before its body arrives: the server checks the token before it
// reads (or waits for) the body, so a client without one cannot hold a
// connection for the body timeout.
func TestTokenBeforeBody(t *testing.T) {
	const timeout = 30 * time.Second
	e := newEnv(t, moitessierhttp.Config{BodyTimeout: timeout})
	for _, tc := range []struct{ name, head string }{
		{"Dispatch", "POST /v1/dispatch?scope=slow.1 HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n"},
		{"DispatchJSON", "POST /v1/dispatch HTTP/1.1\r\nAuthorization: Bearer x.y.z\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n"},
		{"Join", "POST /v1/listeners HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conn := e.dial(t)
			start := time.Now()
			fmt.Fprintf(conn, "%sHost: x\r\n\r\n", tc.head)
			// No body byte is ever sent: the answer must come well
			// before the body timeout.
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			line, err := bufio.NewReader(conn).ReadString('\n')
			if err != nil {
				t.Fatalf("after %v: %v: no answer before the body", time.Since(start), err)
			}
			if !strings.HasPrefix(line, "HTTP/1.1 401") {
				t.Fatalf("answer %q, want 401", line)
			}
		})
	}
}

// TestRateLimitBeforeBody: a person over the dispatch rate gets 429 before
// the server reads the body, so that bodies costly to decode (a JSON array
// of many names) cost nothing past the limit.
func TestRateLimitBeforeBody(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{DispatchRate: 1, DispatchBurst: 1, BodyTimeout: 30 * time.Second})
	tok := all(t, "alice")
	if code, _, body := do(t, "POST", e.ts.URL+"/v1/dispatch?scope=r.1", tok, "first"); code != 200 {
		t.Fatalf("first dispatch: %d %s", code, body)
	}
	conn := e.dial(t)
	fmt.Fprintf(conn, "POST /v1/dispatch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n", tok)
	// No body byte is ever sent.
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 429") {
		t.Fatalf("over the rate, before the body: %q, %v; want 429 at once", line, err)
	}
	if got := e.srv.Metrics().Snapshot().RateLimited; got != 1 {
		t.Fatalf("rate limited %d, want 1", got)
	}
}

// TestJSONInput: a JSON body of invalid UTF-8 or with data after the value
// is 400, and stores nothing.
func TestJSONInput(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{})
	tok := all(t, "alice")
	ctx := ctxT(t)
	if _, err := e.client(tok).Join(ctx, moitessierhttp.Query{Scopes: []string{">"}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, path, body string }{
		{"InvalidUTF8Scope", "/v1/dispatch", "{\"scope\":\"\xff\xfe\",\"text\":\"x\"}"},
		{"InvalidUTF8Text", "/v1/dispatch", "{\"scope\":\"a\",\"text\":\"\xff\"}"},
		{"TrailingGarbage", "/v1/dispatch", `{"scope":"a","text":"x"} garbage`},
		{"TwoValues", "/v1/dispatch", `{"scope":"a","text":"x"}{"scope":"b","text":"y"}`},
		{"JoinInvalidUTF8", "/v1/listeners", "{\"scopes\":[\"\xff\"]}"},
		{"JoinTrailing", "/v1/listeners", `{"scopes":["b"]}]`},
		{"LoneLowSurrogateScope", "/v1/dispatch", `{"scope":"\udcff","text":"x"}`},
		{"LoneHighSurrogateText", "/v1/dispatch", `{"scope":"a","text":"\ud83d!"}`},
		{"HighSurrogateThenOther", "/v1/dispatch", `{"scope":"a","text":"\ud83d\u0041"}`},
		{"JoinLoneSurrogate", "/v1/listeners", `{"scopes":["\udfff"]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, body := do(t, "POST", e.ts.URL+tc.path, tok, tc.body, "Content-Type", "application/json")
			if code != 400 || errorCode(t, body) != "bad_request" {
				t.Fatalf("%d %s, want 400 bad_request", code, body)
			}
		})
	}
	id := mustID(t, moitessier.Conditions{Person: "x", Type: moitessier.Shared, Scope: ">"})
	if info, err := e.hub.Info(ctx, id); err != nil || info.Head != 0 {
		t.Fatalf("head %d, %v: a refused dispatch stored something", info.Head, err)
	}
	// A surrogate pair is a character, and an escaped backslash before a
	// u is no escape of a surrogate.
	for _, body := range []string{`{"scope":"a","text":"\ud83d\ude00"}`, `{"scope":"a","text":"\\udcff"}`} {
		if code, _, b := do(t, "POST", e.ts.URL+"/v1/dispatch", tok, body, "Content-Type", "application/json"); code != 200 {
			t.Fatalf("%s: %d %s", body, code, b)
		}
	}
	// Trailing white space is no garbage.
	if code, _, body := do(t, "POST", e.ts.URL+"/v1/dispatch", tok, "{\"scope\":\"a\",\"text\":\"x\"}\r\n\n", "Content-Type", "application/json"); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
}

// TestQueryInput: a query that does not parse, as one with more than
// 10 000 parameters, is 400 with the parser's error, not a missing scope.
func TestQueryInput(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{})
	tok := all(t, "alice")
	many := "scope=a" + strings.Repeat("&x=1", 10_000)
	for _, path := range []string{"/v1/events?" + many, "/v1/poll?" + many, "/v1/listeners?" + many, "/v1/events?scope=a;b", "/v1/events?scope=%zz"} {
		code, _, body := do(t, "GET", e.ts.URL+path, tok, "")
		if path[len(path)-1] == '1' && !strings.Contains(string(body), "number of URL query parameters exceeded limit") {
			t.Fatalf("%.40s…: %d %s", path, code, body)
		}
		if code != 400 || errorCode(t, body) != "bad_request" {
			t.Fatalf("%.40s…: %d %s", path, code, body)
		}
	}
}

// TestMethodNotAllowed: a path served with other methods is 405 with Allow.
func TestMethodNotAllowed(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{})
	for path, allow := range map[string]string{
		"/v1/events":                  "GET, HEAD",
		"/v1/dispatch":                "POST",
		"/v1/listeners/x":             "GET, HEAD, DELETE",
		"/v1/listeners/x/subscribers": "GET, HEAD",
	} {
		code, h, body := do(t, "PUT", e.ts.URL+path, "", "")
		if code != http.StatusMethodNotAllowed || h.Get("Allow") != allow || errorCode(t, body) != "method_not_allowed" {
			t.Fatalf("PUT %s: %d Allow %q %s, want 405 Allow %q", path, code, h.Get("Allow"), body, allow)
		}
	}
	if code, _, _ := do(t, "GET", e.ts.URL+"/v1/nothing", "", ""); code != 404 {
		t.Fatalf("unknown path: %d", code)
	}
}
