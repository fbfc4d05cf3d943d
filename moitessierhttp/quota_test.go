package moitessierhttp_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/memstore"
	"github.com/likestripes/moitessier/moitessierhttp"
)

// TestHandlerListenerTakesDispatchGrant: a token that may only listen to
// room.> cannot make Handler listeners there (each would copy every
// dispatch to room.>); with a dispatch grant covering the scope it can.
func TestHandlerListenerTakesDispatchGrant(t *testing.T) {
	e := newEnvOn(t, memstore.New(), moitessier.Options{}, moitessierhttp.Config{})
	listenOnly := token(t, "mallory", []string{"room.>"}, nil)
	for _, q := range []string{"type=handler&scope=room.1", "type=handler&scope=room.>", "type=handler&scope=room.*&scope=room.1"} {
		code, _, body := do(t, "POST", e.ts.URL+"/v1/listeners?"+q, listenOnly, "")
		if code != http.StatusForbidden || errorCode(t, body) != "forbidden" {
			t.Fatalf("%s with a listen grant only: %d %s, want 403 forbidden", q, code, body)
		}
	}
	id, _ := moitessier.ListenerID(moitessier.Conditions{Person: "mallory", Type: moitessier.Handler, Scope: "room.1"})
	if _, err := e.hub.Info(ctxT(t), id); !errors.Is(err, moitessier.ErrNotFound) {
		t.Fatalf("a refused Handler listener exists: %v", err)
	}
	// The same token may hold Shared and Private listeners there.
	for _, q := range []string{"type=shared&scope=room.1", "type=private&scope=room.>"} {
		if code, _, body := do(t, "POST", e.ts.URL+"/v1/listeners?"+q, listenOnly, ""); code != http.StatusOK {
			t.Fatalf("%s: %d %s", q, code, body)
		}
	}
	// A dispatch grant on room.1 covers room.1 only, not room.>.
	narrow := token(t, "mallory", []string{"room.>"}, []string{"room.1"})
	if code, _, body := do(t, "POST", e.ts.URL+"/v1/listeners?type=handler&scope=room.1", narrow, ""); code != http.StatusOK {
		t.Fatalf("handler on room.1 with dispatch room.1: %d %s", code, body)
	}
	if code, _, body := do(t, "GET", e.ts.URL+"/v1/poll?type=handler&scope=room.>&timeout=1ms", narrow, ""); code != http.StatusForbidden {
		t.Fatalf("poll a handler on room.> with dispatch room.1: %d %s, want 403", code, body)
	}
	// Joining a Handler listener by ID is held to the same rule.
	h, _ := moitessier.ListenerID(moitessier.Conditions{Person: "mallory", Type: moitessier.Handler, Scope: "room.1"})
	if code, _, body := do(t, "GET", e.ts.URL+"/v1/poll?listener="+h+"&timeout=1ms", listenOnly, ""); code != http.StatusForbidden {
		t.Fatalf("poll a handler by id with a listen grant only: %d %s, want 403", code, body)
	}
}

// TestQuotaExceededHTTP: past a quota, a join is 429 quota_exceeded with a
// JSON body, on every endpoint that creates listeners.
func TestQuotaExceededHTTP(t *testing.T) {
	e := newEnvOn(t, memstore.New(), moitessier.Options{Quota: moitessier.Quota{Listeners: 10, Handlers: 1, Subscriptions: 3}}, moitessierhttp.Config{})
	alice := all(t, "alice")
	if code, _, body := do(t, "POST", e.ts.URL+"/v1/listeners?type=handler&scope=q.1", alice, ""); code != http.StatusOK {
		t.Fatalf("first handler: %d %s", code, body)
	}
	check := func(what string, code int, hdr http.Header, body []byte, kind string) {
		t.Helper()
		var eb moitessierhttp.ErrorBody
		if err := json.Unmarshal(body, &eb); err != nil || code != http.StatusTooManyRequests || eb.Status != 429 || eb.Code != "quota_exceeded" {
			t.Fatalf("%s: %d %s, want 429 quota_exceeded", what, code, body)
		}
		if ct := hdr.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%s: Content-Type %q", what, ct)
		}
		if want := `"alice" already holds`; !strings.Contains(eb.Error, want) || !strings.Contains(eb.Error, kind) {
			t.Fatalf("%s: error %q does not say who holds how many %s", what, eb.Error, kind)
		}
	}
	code, hdr, body := do(t, "POST", e.ts.URL+"/v1/listeners?type=handler&scope=q.2", alice, "")
	check("second handler", code, hdr, body, "handler listeners")
	code, hdr, body = do(t, "GET", e.ts.URL+"/v1/poll?type=handler&scope=q.3&timeout=1ms", alice, "")
	check("poll a new handler", code, hdr, body, "handler listeners")
	code, hdr, body = do(t, "GET", e.ts.URL+"/v1/events?type=handler&scope=q.3", alice, "")
	check("SSE on a new handler", code, hdr, body, "handler listeners")
	// Subscriptions: alice holds one; two more fit, the fourth does not.
	for _, q := range []string{"scope=q.a", "scope=q.b"} {
		if code, _, body := do(t, "POST", e.ts.URL+"/v1/listeners?"+q, alice, ""); code != http.StatusOK {
			t.Fatalf("%s: %d %s", q, code, body)
		}
	}
	code, hdr, body = do(t, "POST", e.ts.URL+"/v1/listeners?scope=q.a&client=tab", alice, "")
	check("a fourth subscription", code, hdr, body, "subscriptions")
	// What she holds still works.
	if code, _, body := do(t, "GET", e.ts.URL+"/v1/poll?scope=q.a&timeout=1ms", alice, ""); code != http.StatusOK {
		t.Fatalf("poll a held listener: %d %s", code, body)
	}
}
