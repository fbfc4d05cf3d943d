package moitessierhttp_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/memstore"
	"github.com/likestripes/moitessier/moitessierhttp"
)

func TestToken(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	claims := moitessierhttp.Claims{Subject: "alice", Listen: []string{"room.>"}, Dispatch: []string{"room.*"}, ExpiresAt: now.Add(time.Hour).Unix(), IssuedAt: now.Unix()}
	tok, err := moitessierhttp.Sign(secret, claims)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding
	parts := strings.Split(tok, ".")
	withHeader := func(h string) string { return b64.EncodeToString([]byte(h)) + "." + parts[1] + "." + parts[2] }

	t.Run("OK", func(t *testing.T) {
		c, err := moitessierhttp.Verify(secret, tok, now)
		if err != nil {
			t.Fatal(err)
		}
		if c.Subject != "alice" || c.ExpiresAt != claims.ExpiresAt || c.Listen[0] != "room.>" || c.Dispatch[0] != "room.*" {
			t.Fatalf("%+v", c)
		}
		if !c.CanDispatch("room.1") || c.CanDispatch("room.1.2") || !c.CanListen("room.1.2") || c.CanListen("lobby") {
			t.Fatal("grants")
		}
	})

	for _, tc := range []struct {
		name   string
		tok    string
		at     time.Time
		reason error
	}{
		{"Expired", tok, now.Add(2 * time.Hour), moitessierhttp.ErrTokenExpired},
		{"ExpiresNow", tok, time.Unix(claims.ExpiresAt, 0), moitessierhttp.ErrTokenExpired},
		{"Forged", tok[:len(tok)-2] + "AA", now, moitessierhttp.ErrTokenSignature},
		{"AlgNone", withHeader(`{"alg":"none"}`), now, moitessierhttp.ErrTokenMalformed},
		{"AlgNoneNoSig", b64.EncodeToString([]byte(`{"alg":"none"}`)) + "." + parts[1] + ".", now, moitessierhttp.ErrTokenMalformed},
		{"AlgHS512", withHeader(`{"alg":"HS512"}`), now, moitessierhttp.ErrTokenMalformed},
		{"HeaderChanged", withHeader(`{"alg":"HS256"}`), now, moitessierhttp.ErrTokenSignature},
		{"TwoParts", parts[0] + "." + parts[1], now, moitessierhttp.ErrTokenMalformed},
		{"Empty", "", now, moitessierhttp.ErrTokenMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := moitessierhttp.Verify(secret, tc.tok, tc.at)
			if !errors.Is(err, moitessierhttp.ErrInvalidToken) || !errors.Is(err, tc.reason) {
				t.Fatalf("err %v, want %v and ErrInvalidToken", err, tc.reason)
			}
		})
	}

	t.Run("NotYetValid", func(t *testing.T) {
		c := claims
		c.NotBefore = now.Add(time.Minute).Unix()
		tok, _ := moitessierhttp.Sign(secret, c)
		if _, err := moitessierhttp.Verify(secret, tok, now); !errors.Is(err, moitessierhttp.ErrTokenNotYetValid) {
			t.Fatalf("err %v", err)
		}
	})

	t.Run("OtherSecret", func(t *testing.T) {
		if _, err := moitessierhttp.Verify([]byte("other"), tok, now); !errors.Is(err, moitessierhttp.ErrTokenSignature) {
			t.Fatalf("err %v", err)
		}
	})

	t.Run("SignErrors", func(t *testing.T) {
		if _, err := moitessierhttp.Sign(nil, claims); !errors.Is(err, moitessier.ErrInvalidArgument) {
			t.Fatalf("empty secret: %v", err)
		}
		if _, err := moitessierhttp.Sign(secret, moitessierhttp.Claims{}); !errors.Is(err, moitessier.ErrInvalidArgument) {
			t.Fatalf("no subject: %v", err)
		}
	})
}

func TestCovers(t *testing.T) {
	for _, tc := range []struct {
		grant, pattern string
		want           bool
	}{
		{">", "a", true},
		{">", "a.b.>", true},
		{">", "*", true},
		{"a.>", "a", false},
		{"a.>", "a.b", true},
		{"a.>", "a.*", true},
		{"a.>", "a.>", true},
		{"a.>", "a.*.c", true},
		{"a.>", "b.c", false},
		{"a.*", "a.b", true},
		{"a.*", "a.*", true},
		{"a.*", "a.>", false},
		{"a.*", "a.b.c", false},
		{"a.*", "a", false},
		{"a.b", "a.b", true},
		{"a.b", "a.*", false},
		{"a.b", "a.c", false},
		{"*.b", "a.b", true},
		{"*.b", "*.b", true},
		{"*.>", "a", false},
		{"*.>", "a.b", true},
		{"*", ">", false},
		{"a.b.c", "a.b", false},
	} {
		if got := moitessierhttp.Covers(tc.grant, tc.pattern); got != tc.want {
			t.Errorf("Covers(%q, %q)=%v, want %v", tc.grant, tc.pattern, got, tc.want)
		}
	}
}

// FuzzCovers checks Covers against MatchScope: a grant that covers a
// pattern matches every scope the pattern matches.
func FuzzCovers(f *testing.F) {
	f.Add("a.>", "a.*", "a.b")
	f.Add("a.*", "a.b", "a.b")
	f.Add(">", "*.>", "x.y.z")
	f.Fuzz(func(t *testing.T, grant, pattern, scope string) {
		if moitessier.ValidatePattern(grant) != nil || moitessier.ValidatePattern(pattern) != nil || moitessier.ValidateScope(scope) != nil {
			return
		}
		if moitessierhttp.Covers(grant, pattern) && moitessier.MatchScope(pattern, scope) && !moitessier.MatchScope(grant, scope) {
			t.Fatalf("Covers(%q, %q) but %q matches the pattern and not the grant", grant, pattern, scope)
		}
		if !moitessier.IsPattern(pattern) && moitessierhttp.Covers(grant, pattern) != moitessier.MatchScope(grant, pattern) {
			t.Fatalf("concrete %q: Covers and MatchScope disagree for %q", pattern, grant)
		}
	})
}

// FuzzVerify feeds arbitrary tokens to Verify: no panic, and every error
// wraps ErrInvalidToken.
func FuzzVerify(f *testing.F) {
	tok, _ := moitessierhttp.Sign(secret, moitessierhttp.Claims{Subject: "a", ExpiresAt: 2_000_000_000})
	f.Add(tok)
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := moitessierhttp.Verify(secret, tok, time.Unix(1_800_000_000, 0))
		if err != nil {
			if !errors.Is(err, moitessierhttp.ErrInvalidToken) {
				t.Fatalf("error %v does not wrap ErrInvalidToken", err)
			}
			return
		}
		if c.Subject == "" || c.ExpiresAt <= 1_800_000_000 {
			t.Fatalf("accepted %+v", c)
		}
	})
}

// FuzzParseCursor feeds arbitrary Last-Event-ID values to ParseCursor.
func FuzzParseCursor(f *testing.F) {
	for _, s := range []string{"", "0", "12", "resume", "head", "-1", "18446744073709551615", "1e3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := moitessierhttp.ParseCursor(s)
		if err != nil {
			if !errors.Is(err, moitessierhttp.ErrBadRequest) {
				t.Fatalf("error %v does not wrap ErrBadRequest", err)
			}
			return
		}
		if c == moitessier.Resume && s != "" && s != "resume" {
			t.Fatalf("%q parsed as Resume", s)
		}
	})
}

// FuzzDispatchBody posts arbitrary bodies to the dispatch endpoint: the
// answer is never an internal error, and always JSON.
func FuzzDispatchBody(f *testing.F) {
	e := newEnv(f, moitessierhttp.Config{MaxMessageBytes: 1 << 10})
	tok := all(f, "fuzz")
	f.Add([]byte(`{"scope":"f.x","text":"hi"}`), true)
	f.Add([]byte(`{"scope":"f.*","text":"hi","to":["a"],"handlers":["nope"]}`), true)
	f.Add([]byte(`{"scope":"f.x","text":"\u0000"}`), true)
	f.Add([]byte("plain text"), false)
	f.Fuzz(func(t *testing.T, body []byte, asJSON bool) {
		req := httptest.NewRequest("POST", "/v1/dispatch?scope=f.y", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		if asJSON {
			req.Header.Set("Content-Type", "application/json")
		}
		rec := httptest.NewRecorder()
		e.srv.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body)
		}
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("answer %q is not JSON", rec.Body)
		}
	})
}

// signRaw signs a hand-written header and payload, as a token minted by
// another library (or an attacker who holds the secret's grants) might.
func signRaw(header, payload string) string {
	b64 := base64.RawURLEncoding
	s := b64.EncodeToString([]byte(header)) + "." + b64.EncodeToString([]byte(payload))
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(s))
	return s + "." + b64.EncodeToString(m.Sum(nil))
}

// TestVerifyStrict checks that Verify reads a token exactly: claim names as
// spelled, each claim once, numeric times, canonical base64url.
func TestVerifyStrict(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	const hdr = `{"alg":"HS256","typ":"JWT"}`
	exp := "1800003600"
	good := signRaw(hdr, `{"sub":"alice","exp":`+exp+`,"listen":["room.>"]}`)
	if c, err := moitessierhttp.Verify(secret, good, now); err != nil || c.Subject != "alice" {
		t.Fatalf("hand-signed token: %+v %v", c, err)
	}
	// The signature is 32 bytes, 43 base64url characters: the last one
	// carries 4 bits of padding, which non-strict decoding ignores.
	sigBits := func(tok string) string {
		last := tok[len(tok)-1]
		alphabet := "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
		i := strings.IndexByte(alphabet, last)
		return tok[:len(tok)-1] + string(alphabet[i^1])
	}
	parts := strings.Split(good, ".")
	for _, tc := range []struct {
		name, tok string
	}{
		{"LongS", signRaw(hdr, `{"ſub":"alice","exp":`+exp+`}`)},
		{"CaseFolded", signRaw(hdr, `{"SUB":"alice","exp":`+exp+`}`)},
		{"CaseFoldedExp", signRaw(hdr, `{"sub":"alice","Exp":`+exp+`}`)},
		{"DuplicateSub", signRaw(hdr, `{"sub":"bob","sub":"alice","exp":`+exp+`}`)},
		{"DuplicateListen", signRaw(hdr, `{"sub":"alice","listen":["a"],"listen":[">"],"exp":`+exp+`}`)},
		{"StringExp", signRaw(hdr, `{"sub":"alice","exp":"`+exp+`"}`)},
		{"StringNbf", signRaw(hdr, `{"sub":"alice","exp":`+exp+`,"nbf":"1"}`)},
		{"NullListen", signRaw(hdr, `{"sub":"alice","exp":`+exp+`,"listen":null}`)},
		{"NumberSub", signRaw(hdr, `{"sub":7,"exp":`+exp+`}`)},
		{"TrailingData", signRaw(hdr, `{"sub":"alice","exp":`+exp+`}{"sub":"bob"}`)},
		{"NotAnObject", signRaw(hdr, `["sub","alice"]`)},
		{"NonCanonicalSignature", sigBits(good)},
		{"NewlineInPayload", parts[0] + "." + parts[1][:10] + "\n" + parts[1][10:] + "." + parts[2]},
		{"Padded", parts[0] + "." + parts[1] + "." + parts[2] + "="},
		{"StdAlphabet", strings.NewReplacer("-", "+", "_", "/").Replace(good)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.tok == good {
				t.Skip("no character to change")
			}
			c, err := moitessierhttp.Verify(secret, tc.tok, now)
			if !errors.Is(err, moitessierhttp.ErrInvalidToken) || !errors.Is(err, moitessierhttp.ErrTokenMalformed) {
				t.Fatalf("accepted as %+v (err %v), want ErrTokenMalformed", c, err)
			}
		})
	}
	t.Run("UnknownClaimsIgnored", func(t *testing.T) {
		tok := signRaw(hdr, `{"iss":"app","aud":["x"],"jti":"1","sub":"alice","exp":`+exp+`,"nbf":1799999999.5}`)
		if c, err := moitessierhttp.Verify(secret, tok, now); err != nil || c.Subject != "alice" || c.NotBefore != 1799999999 {
			t.Fatalf("%+v %v", c, err)
		}
	})
}

// TestSignShortSecret checks that a secret too short to resist an offline
// guess is refused, with a word on how to make a good one.
func TestSignShortSecret(t *testing.T) {
	_, err := moitessierhttp.Sign([]byte("k"), moitessierhttp.Claims{Subject: "a", ExpiresAt: 2_000_000_000})
	if !errors.Is(err, moitessierhttp.ErrWeakSecret) || !strings.Contains(err.Error(), "openssl rand") {
		t.Fatalf("err %v, want ErrWeakSecret saying how to make one", err)
	}
	if _, err := moitessierhttp.New(newHub(t), moitessierhttp.Config{Secret: []byte("0123456789012345678901234567890")}); !errors.Is(err, moitessierhttp.ErrWeakSecret) || !errors.Is(err, moitessier.ErrInvalidArgument) {
		t.Fatalf("New with a 31-byte secret: %v", err)
	}
	if _, err := moitessierhttp.New(newHub(t), moitessierhttp.Config{Secret: []byte("01234567890123456789012345678901")}); err != nil {
		t.Fatalf("New with a 32-byte secret: %v", err)
	}
}

func newHub(tb testing.TB) *moitessier.Hub {
	tb.Helper()
	hub, err := moitessier.New(memstore.New(), moitessier.Options{GCInterval: -1})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = hub.Close() })
	return hub
}

// BenchmarkVerify measures checking one token, as every request does.
func BenchmarkVerify(b *testing.B) {
	now := time.Unix(1_800_000_000, 0)
	tok, err := moitessierhttp.Sign(secret, moitessierhttp.Claims{Subject: "alice", Listen: []string{"room.>", "user.alice.>"}, Dispatch: []string{"room.>"}, ExpiresAt: now.Add(time.Hour).Unix()})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := moitessierhttp.Verify(secret, tok, now); err != nil {
			b.Fatal(err)
		}
	}
}

// TestTokenReused: a token the server has verified before is held to its
// time and to its exact bytes on every request: it expires, it is not
// valid before its nbf, and a token whose signature differs is refused
// though its claims are those of one that verified.
func TestTokenReused(t *testing.T) {
	var now atomic.Int64
	now.Store(1_800_000_000)
	clock := func() time.Time { return time.Unix(now.Load(), 0) }
	e := newEnv(t, moitessierhttp.Config{Now: clock})
	post := func(tok string) (int, string) {
		t.Helper()
		code, _, body := do(t, "POST", e.ts.URL+"/v1/dispatch?scope=reuse", tok, "x")
		if code == http.StatusOK {
			return code, ""
		}
		return code, errorCode(t, body)
	}
	start := time.Unix(now.Load(), 0)
	tok, err := moitessierhttp.Sign(secret, moitessierhttp.Claims{Subject: "alice", Dispatch: []string{">"}, ExpiresAt: start.Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if code, ec := post(tok); code != http.StatusOK {
			t.Fatalf("request %d: %d %s", i, code, ec)
		}
	}
	// One character of the signature changed: same claims, another token.
	sub := "A"
	if tok[len(tok)-2] == 'A' {
		sub = "B"
	}
	forged := tok[:len(tok)-2] + sub + tok[len(tok)-1:]
	if code, ec := post(forged); code != http.StatusUnauthorized {
		t.Fatalf("forged signature: %d %s, want 401", code, ec)
	}
	now.Store(start.Add(time.Hour).Unix())
	if code, ec := post(tok); code != http.StatusUnauthorized || ec != "token_expired" {
		t.Fatalf("at exp: %d %s, want 401 token_expired", code, ec)
	}

	later, err := moitessierhttp.Sign(secret, moitessierhttp.Claims{Subject: "alice", Dispatch: []string{">"}, NotBefore: start.Add(2 * time.Hour).Unix(), ExpiresAt: start.Add(3 * time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	now.Store(start.Add(2 * time.Hour).Unix())
	if code, ec := post(later); code != http.StatusOK {
		t.Fatalf("at nbf: %d %s", code, ec)
	}
	now.Store(start.Add(2*time.Hour - time.Second).Unix())
	if code, ec := post(later); code != http.StatusUnauthorized || ec != "invalid_token" {
		t.Fatalf("before nbf, verified before: %d %s, want 401 invalid_token (not yet valid)", code, ec)
	}
}

// BenchmarkAuthenticateReused: a request whose token the server verified
// before (a publisher sends the same token every time), end to end through
// the handler; compare BenchmarkVerify for what the check itself costs.
func BenchmarkAuthenticateReused(b *testing.B) {
	e := newEnv(b, moitessierhttp.Config{DispatchRate: -1})
	tok := all(b, "alice")
	req := httptest.NewRequest("GET", "/v1/listeners/nosuch", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		e.srv.ServeHTTP(w, req)
		if w.Code != http.StatusNotFound {
			b.Fatalf("%d %s", w.Code, w.Body)
		}
	}
}
