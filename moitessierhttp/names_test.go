package moitessierhttp_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/moitessierhttp"
)

// TestNameAndScopeBytes: the README's limits on names (a token's sub, a
// client, an idempotency key, a recipient: moitessier.MaxNameBytes) and
// on scopes (moitessier.MaxScopeBytes) hold over HTTP, with the statuses
// and codes it states, at the limit and one byte past it.
func TestNameAndScopeBytes(t *testing.T) {
	e := newEnv(t, moitessierhttp.Config{})
	name := strings.Repeat("n", moitessier.MaxNameBytes)
	scope := strings.Repeat("s", moitessier.MaxScopeBytes)
	for _, tc := range []struct {
		what   string
		person string
		path   string
		hdr    []string
		code   string
	}{
		{"person", name, "/v1/listeners?scope=n.1", nil, ""},
		{"person", name + "n", "/v1/listeners?scope=n.1", nil, "invalid_argument"},
		{"client", "alice", "/v1/listeners?scope=n.1&client=" + name, nil, ""},
		{"client", "alice", "/v1/listeners?scope=n.1&client=" + name + "n", nil, "invalid_argument"},
		{"scope", "alice", "/v1/listeners?scope=" + scope, nil, ""},
		{"scope", "alice", "/v1/listeners?scope=" + scope + "s", nil, "invalid_scope"},
		{"idempotency key", "alice", "/v1/dispatch?scope=n.1", []string{"Idempotency-Key", name}, ""},
		{"idempotency key", "alice", "/v1/dispatch?scope=n.1", []string{"Idempotency-Key", name + "n"}, "invalid_argument"},
		{"recipient", "alice", "/v1/dispatch?scope=n.1&to=" + url.QueryEscape(name), nil, ""},
		{"recipient", "alice", "/v1/dispatch?scope=n.1&to=" + url.QueryEscape(name+"n"), nil, "invalid_argument"},
		{"dispatch scope", "alice", "/v1/dispatch?scope=" + scope, nil, ""},
		{"dispatch scope", "alice", "/v1/dispatch?scope=" + scope + "s", nil, "invalid_scope"},
	} {
		status, _, body := do(t, "POST", e.ts.URL+tc.path, all(t, tc.person), "x", tc.hdr...)
		switch {
		case tc.code == "" && status != http.StatusOK:
			t.Errorf("a %s at the limit: %d %s", tc.what, status, body)
		case tc.code != "" && (status != http.StatusBadRequest || errorCode(t, body) != tc.code):
			t.Errorf("a %s past the limit: %d %s, want 400 %s", tc.what, status, body, tc.code)
		}
	}
}
