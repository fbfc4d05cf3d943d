package moitessierhttp

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/golang-jwt/jwt/v5"

	"github.com/likestripes/moitessier"
)

// Claims are what a token says: who the person is and which scopes they
// may listen to and dispatch to, as Mercure's and Centrifugo's tokens do.
//
//	{"sub":"alice","exp":1767225600,"listen":["room.>","user.alice.>"],"dispatch":["room.>"]}
type Claims struct {
	// Subject is the person (JWT "sub"). Required.
	Subject string `json:"sub"`
	// Listen lists the scope patterns the person may listen to. A listener
	// is allowed when every one of its scopes and patterns is covered by one
	// of these (see [Covers]).
	Listen []string `json:"listen,omitempty"`
	// Dispatch lists the scope patterns the person may dispatch to; a
	// dispatch is allowed when its scope matches one (see [moitessier.MatchScope]).
	Dispatch []string `json:"dispatch,omitempty"`
	// ExpiresAt is the JWT "exp", in Unix seconds. Required.
	ExpiresAt int64 `json:"exp"`
	// NotBefore is the JWT "nbf", in Unix seconds; 0 if absent.
	NotBefore int64 `json:"nbf,omitempty"`
	// IssuedAt is the JWT "iat", in Unix seconds; 0 if absent.
	IssuedAt int64 `json:"iat,omitempty"`
}

// CanListen reports whether the claims allow listening to pattern: whether
// some Listen pattern covers it.
func (c *Claims) CanListen(pattern string) bool {
	for _, p := range c.Listen {
		if Covers(p, pattern) {
			return true
		}
	}
	return false
}

// CanDispatch reports whether the claims allow dispatching to the concrete scope.
func (c *Claims) CanDispatch(scope string) bool {
	for _, p := range c.Dispatch {
		if moitessier.MatchScope(p, scope) {
			return true
		}
	}
	return false
}

// Covers reports whether the grant pattern covers the listener pattern: every
// concrete scope that pattern matches, grant matches too. Both use the
// scope syntax of [moitessier.MatchScope]: "*" is any one token, a last ">"
// one or more tokens. A concrete scope is covered exactly when it matches.
func Covers(grant, pattern string) bool {
	for {
		gt, grest, gmore := strings.Cut(grant, ".")
		pt, prest, pmore := strings.Cut(pattern, ".")
		switch {
		case gt == ">" && !gmore:
			// One or more tokens: pattern must have at least one left, which it has.
			return true
		case gt == "*":
			if pt == ">" {
				// ">" stands for one or more tokens; "*" for exactly one.
				return false
			}
		case gt != pt || pt == ">" || pt == "*":
			// A literal grant covers only the same literal.
			return false
		}
		if !gmore || !pmore {
			return gmore == pmore
		}
		grant, pattern = grest, prest
	}
}

// MinSecretBytes is the shortest secret Sign, Verify and Config accept:
// 32 bytes, the size of an HS256 key (RFC 7518 §3.2). A shorter secret,
// a word or a short phrase, is found offline from one token in moments.
const MinSecretBytes = 32

// CheckSecret returns an error wrapping ErrWeakSecret for a secret
// shorter than MinSecretBytes, which says how to make a good one; else nil.
func CheckSecret(secret []byte) error {
	if len(secret) < MinSecretBytes {
		return fmt.Errorf("%w: %d bytes, want at least %d random bytes; make one with: openssl rand -base64 32 (or: moitessier secret)", ErrWeakSecret, len(secret), MinSecretBytes)
	}
	return nil
}

// Sign returns an HS256 JWT of the claims, signed with secret. The secret
// must be at least MinSecretBytes long (else the error wraps ErrWeakSecret
// and moitessier.ErrInvalidArgument).
func Sign(secret []byte, c Claims) (string, error) {
	if err := CheckSecret(secret); err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	if c.Subject == "" {
		return "", fmt.Errorf("sign token: %w: empty subject", moitessier.ErrInvalidArgument)
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwtClaims{&c}).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return tok, nil
}

// maxTokenBytes bounds the tokens Verify reads.
const maxTokenBytes = 16 << 10

// Verify checks an HS256 JWT against secret and the time now, and returns
// its claims. Every error wraps ErrInvalidToken and one of
// ErrTokenMalformed, ErrTokenSignature, ErrTokenExpired or
// ErrTokenNotYetValid.
//
// It reads a token exactly: the three parts in unpadded base64url, each
// canonical (no ignored bits, no line breaks); the header's alg HS256 (any
// other, "none" included, is malformed) with no crit; the payload one JSON
// object whose claim names match exactly ("Sub" or "ſub" is not "sub", and
// is refused rather than ignored), each at most once, with sub a string,
// listen and dispatch arrays of strings, and exp, nbf and iat JSON
// numbers. Other claims (iss, aud, jti…) are ignored. A token without exp
// is refused as expired; a secret shorter than MinSecretBytes verifies
// nothing.
func Verify(secret []byte, token string, now time.Time) (*Claims, error) {
	if len(token) > maxTokenBytes {
		return nil, tokenErr(ErrTokenMalformed, "%d bytes", len(token))
	}
	// base64 decoding skips line breaks even in strict mode: allow only
	// the base64url alphabet and the two dots.
	for i := 0; i < len(token); i++ {
		if b := token[i]; !(b >= 'A' && b <= 'Z' || b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '-' || b == '_' || b == '.') {
			return nil, tokenErr(ErrTokenMalformed, "byte %#x at %d: not base64url", b, i)
		}
	}
	if strings.Count(token, ".") != 2 {
		return nil, tokenErr(ErrTokenMalformed, "not three dot-separated parts")
	}
	c := &Claims{}
	p := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithStrictDecoding(),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(func() time.Time { return now }),
	)
	tok, err := p.ParseWithClaims(token, &jwtClaims{c}, func(t *jwt.Token) (any, error) {
		if typ, ok := t.Header["typ"]; ok {
			if s, _ := typ.(string); !strings.EqualFold(s, "JWT") {
				return nil, fmt.Errorf("typ %v", typ)
			}
		}
		if _, ok := t.Header["crit"]; ok {
			return nil, errors.New("unsupported crit header")
		}
		if CheckSecret(secret) != nil {
			return nil, errWeakVerifySecret
		}
		return secret, nil
	})
	switch {
	case err == nil:
		return c, nil
	case errors.Is(err, jwt.ErrTokenExpired), errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		if c.ExpiresAt == 0 {
			return nil, tokenErr(ErrTokenExpired, "no exp claim")
		}
		return nil, tokenErr(ErrTokenExpired, "expired at %s", time.Unix(c.ExpiresAt, 0).UTC().Format(time.RFC3339))
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return nil, tokenErr(ErrTokenNotYetValid, "valid from %s", time.Unix(c.NotBefore, 0).UTC().Format(time.RFC3339))
	case errors.Is(err, errWeakVerifySecret):
		return nil, tokenErr(ErrTokenSignature, "the server's secret is too short to verify anything")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid) && tok != nil && tok.Method != nil && tok.Method.Alg() == jwt.SigningMethodHS256.Alg():
		return nil, tokenErr(ErrTokenSignature, "")
	}
	// A bad header or an alg other than HS256 (which jwt reports as a bad
	// signature), bad base64 or JSON, bad claims.
	return nil, tokenErr(ErrTokenMalformed, "%v", err)
}

var errWeakVerifySecret = errors.New("weak secret")

// jwtClaims adapts Claims to the jwt package: exact decoding, and the
// registered claims its validator checks.
type jwtClaims struct{ c *Claims }

var _ jwt.Claims = jwtClaims{}

func (j jwtClaims) MarshalJSON() ([]byte, error) { return json.Marshal(j.c) }

func numericDate(v int64) (*jwt.NumericDate, error) {
	if v == 0 {
		return nil, nil
	}
	return jwt.NewNumericDate(time.Unix(v, 0)), nil
}

func (j jwtClaims) GetExpirationTime() (*jwt.NumericDate, error) { return numericDate(j.c.ExpiresAt) }
func (j jwtClaims) GetNotBefore() (*jwt.NumericDate, error)      { return numericDate(j.c.NotBefore) }

// GetIssuedAt returns nil: iat is informative; a clock ahead of ours is no
// reason to refuse a token.
func (j jwtClaims) GetIssuedAt() (*jwt.NumericDate, error) { return nil, nil }
func (j jwtClaims) GetIssuer() (string, error)             { return "", nil }
func (j jwtClaims) GetSubject() (string, error)            { return j.c.Subject, nil }
func (j jwtClaims) GetAudience() (jwt.ClaimStrings, error) { return nil, nil }

// UnmarshalJSON reads the payload exactly. encoding/json alone matches
// field names case-insensitively (with Unicode folding, so "ſub" is
// "sub"), lets a repeated name win silently and reads a quoted number into
// a json.Number; so the payload is walked token by token.
func (j jwtClaims) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return errors.New("payload: not a JSON object")
	}
	seen := map[string]bool{}
	c := Claims{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return fmt.Errorf("payload: %w", err)
		}
		name := t.(string) // object keys are strings
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return fmt.Errorf("payload: claim %.32q: %w", name, err)
		}
		if seen[name] {
			return fmt.Errorf("payload: claim %.32q appears twice", name)
		}
		seen[name] = true
		switch name {
		case "sub":
			err = decodeTyped(raw, '"', &c.Subject)
		case "listen":
			err = decodeStrings(raw, &c.Listen)
		case "dispatch":
			err = decodeStrings(raw, &c.Dispatch)
		case "exp":
			err = decodeTime(raw, &c.ExpiresAt)
		case "nbf":
			err = decodeTime(raw, &c.NotBefore)
		case "iat":
			err = decodeTime(raw, &c.IssuedAt)
		default:
			for _, known := range []string{"sub", "listen", "dispatch", "exp", "nbf", "iat"} {
				if strings.EqualFold(name, known) {
					return fmt.Errorf("payload: claim %.32q: claim names are case-sensitive; want %q", name, known)
				}
			}
		}
		if err != nil {
			return fmt.Errorf("payload: claim %q: %w", name, err)
		}
	}
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("payload: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("payload: data after the JSON object")
	}
	if c.Subject == "" {
		return errors.New("payload: no sub claim")
	}
	*j.c = c
	return nil
}

// decodeTyped decodes raw into v if raw's first byte is first.
func decodeTyped(raw json.RawMessage, first byte, v any) error {
	if len(raw) == 0 || raw[0] != first {
		return fmt.Errorf("want a JSON %s", map[byte]string{'"': "string", '[': "array"}[first])
	}
	return json.Unmarshal(raw, v)
}

func decodeStrings(raw json.RawMessage, v *[]string) error {
	return decodeTyped(raw, '[', v)
}

// decodeTime reads a NumericDate: a JSON number (not a string) of seconds
// since the epoch, fractions dropped, between 0 and 2^53.
func decodeTime(raw json.RawMessage, v *int64) error {
	if len(raw) == 0 || !(raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9') {
		return errors.New("want a JSON number of seconds")
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > 1<<53 {
		return fmt.Errorf("%.32s: want seconds since 1970 as a number", raw)
	}
	*v = int64(f)
	return nil
}

// bearer returns the token of a request: the Authorization header's Bearer
// token, or else the access_token query parameter (for EventSource and
// browser WebSockets, which cannot set headers).
func bearer(r *http.Request) string {
	if a := r.Header.Get("Authorization"); a != "" {
		if len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
			return strings.TrimSpace(a[7:])
		}
		return ""
	}
	return r.URL.Query().Get("access_token")
}

// tokenCache remembers the claims of tokens the Server verified, so that a
// client that sends the same token with every request (a publisher) has
// its signature checked and its payload parsed once, not each time (what
// that saves is in the README's benchmark section). It is keyed
// by the token's SHA-256, so that a hit is the very token verified; a hit
// is still checked against the time (exp, nbf) on every use, and one that
// has expired is verified again, which gives the error. It holds at most
// tokenCacheSize tokens and tokenCacheBytes of their claims, and drops
// tokens at random until a new one fits. The claims it returns are shared
// by every request that sent the token, and by the streams that hold
// them: the Server never changes claims.
type tokenCache struct {
	mu    sync.Mutex
	m     map[[sha256.Size]byte]cachedClaims
	bytes int // the sizes of the claims in m
}

type cachedClaims struct {
	c    *Claims
	size int // see claimsBytes
}

// The bounds of tokenCache. A token's claims are a few hundred bytes when
// it grants a few patterns, but one of maxTokenBytes may grant thousands,
// each a string of its own: counted in tokens alone, the cache could hold
// tens of megabytes.
const (
	tokenCacheSize  = 1024
	tokenCacheBytes = 4 << 20
)

// claimsBytes is the memory c holds, near enough: its strings, their
// headers, and the entry that keeps it.
func claimsBytes(c *Claims) int {
	const str = int(unsafe.Sizeof(""))
	n := int(unsafe.Sizeof(Claims{})+unsafe.Sizeof(cachedClaims{})) + sha256.Size + len(c.Subject)
	for _, p := range c.Listen {
		n += str + len(p)
	}
	for _, p := range c.Dispatch {
		n += str + len(p)
	}
	return n
}

// verify is Verify, remembering tokens that verified.
func (tc *tokenCache) verify(secret []byte, token string, now time.Time) (*Claims, error) {
	if len(token) > maxTokenBytes {
		return Verify(secret, token, now)
	}
	key := sha256.Sum256([]byte(token))
	tc.mu.Lock()
	c := tc.m[key].c
	tc.mu.Unlock()
	if c != nil && now.Before(time.Unix(c.ExpiresAt, 0)) && (c.NotBefore == 0 || !now.Before(time.Unix(c.NotBefore, 0))) {
		return c, nil
	}
	c, err := Verify(secret, token, now)
	if err != nil {
		return nil, err
	}
	size := claimsBytes(c)
	if size > tokenCacheBytes {
		return c, nil
	}
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.m == nil {
		tc.m = make(map[[sha256.Size]byte]cachedClaims)
	}
	if old, ok := tc.m[key]; ok {
		// Verified again (it had expired, or two requests raced): replaced.
		delete(tc.m, key)
		tc.bytes -= old.size
	}
	for k, old := range tc.m {
		if len(tc.m) < tokenCacheSize && tc.bytes+size <= tokenCacheBytes {
			break
		}
		delete(tc.m, k)
		tc.bytes -= old.size
	}
	tc.m[key] = cachedClaims{c: c, size: size}
	tc.bytes += size
	return c, nil
}

// serveWhoami answers GET /v1/whoami: the caller's token claims.
func (s *Server) serveWhoami(w http.ResponseWriter, r *http.Request) {
	c, err := s.authenticate(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeJSON(w, http.StatusOK, c)
}
