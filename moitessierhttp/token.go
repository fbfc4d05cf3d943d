package moitessierhttp

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

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

var b64 = base64.RawURLEncoding

// jwtHeader is the only header Sign writes and Verify accepts (typ optional).
var jwtHeader = b64.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))

// Sign returns an HS256 JWT of the claims, signed with secret.
func Sign(secret []byte, c Claims) (string, error) {
	if len(secret) == 0 {
		return "", fmt.Errorf("sign token: %w: empty secret", moitessier.ErrInvalidArgument)
	}
	if c.Subject == "" {
		return "", fmt.Errorf("sign token: %w: empty subject", moitessier.ErrInvalidArgument)
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	signing := jwtHeader + "." + b64.EncodeToString(payload)
	return signing + "." + b64.EncodeToString(mac(secret, signing)), nil
}

func mac(secret []byte, s string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(s))
	return m.Sum(nil)
}

// maxTokenBytes bounds the tokens Verify reads.
const maxTokenBytes = 16 << 10

// Verify checks an HS256 JWT against secret and the time now, and returns
// its claims. Every error wraps ErrInvalidToken and one of
// ErrTokenMalformed, ErrTokenSignature, ErrTokenExpired or
// ErrTokenNotYetValid. A token without exp is refused as expired; any alg
// other than HS256 (including "none") is refused as malformed.
func Verify(secret []byte, token string, now time.Time) (*Claims, error) {
	if len(token) > maxTokenBytes {
		return nil, tokenErr(ErrTokenMalformed, "%d bytes", len(token))
	}
	h, rest, ok1 := strings.Cut(token, ".")
	p, sig, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(sig, ".") {
		return nil, tokenErr(ErrTokenMalformed, "not three dot-separated parts")
	}
	hb, err := b64.DecodeString(h)
	if err != nil {
		return nil, tokenErr(ErrTokenMalformed, "header: %v", err)
	}
	var hdr struct {
		Alg  string   `json:"alg"`
		Typ  string   `json:"typ"`
		Crit []string `json:"crit"`
	}
	if err := json.Unmarshal(hb, &hdr); err != nil {
		return nil, tokenErr(ErrTokenMalformed, "header: %v", err)
	}
	if hdr.Alg != "HS256" {
		return nil, tokenErr(ErrTokenMalformed, "alg %q: only HS256 is accepted", hdr.Alg)
	}
	if hdr.Typ != "" && !strings.EqualFold(hdr.Typ, "JWT") {
		return nil, tokenErr(ErrTokenMalformed, "typ %q", hdr.Typ)
	}
	if len(hdr.Crit) > 0 {
		return nil, tokenErr(ErrTokenMalformed, "unsupported crit header")
	}
	sb, err := b64.DecodeString(sig)
	if err != nil {
		return nil, tokenErr(ErrTokenMalformed, "signature: %v", err)
	}
	if len(secret) == 0 || !hmac.Equal(sb, mac(secret, token[:len(h)+1+len(p)])) {
		return nil, tokenErr(ErrTokenSignature, "")
	}
	pb, err := b64.DecodeString(p)
	if err != nil {
		return nil, tokenErr(ErrTokenMalformed, "payload: %v", err)
	}
	var raw struct {
		Sub      string      `json:"sub"`
		Listen   []string    `json:"listen"`
		Dispatch []string    `json:"dispatch"`
		Exp      json.Number `json:"exp"`
		Nbf      json.Number `json:"nbf"`
		Iat      json.Number `json:"iat"`
	}
	dec := json.NewDecoder(bytes.NewReader(pb))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return nil, tokenErr(ErrTokenMalformed, "payload: %v", err)
	}
	c := &Claims{Subject: raw.Sub, Listen: raw.Listen, Dispatch: raw.Dispatch}
	for _, f := range []struct {
		name string
		n    json.Number
		dst  *int64
	}{{"exp", raw.Exp, &c.ExpiresAt}, {"nbf", raw.Nbf, &c.NotBefore}, {"iat", raw.Iat, &c.IssuedAt}} {
		if f.n == "" {
			continue
		}
		v, err := f.n.Float64()
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || v > 1<<53 {
			return nil, tokenErr(ErrTokenMalformed, "%s %q", f.name, f.n)
		}
		*f.dst = int64(v)
	}
	if c.Subject == "" {
		return nil, tokenErr(ErrTokenMalformed, "no sub claim")
	}
	if c.ExpiresAt == 0 {
		return nil, tokenErr(ErrTokenExpired, "no exp claim")
	}
	if now.Unix() >= c.ExpiresAt {
		return nil, tokenErr(ErrTokenExpired, "expired at %s", time.Unix(c.ExpiresAt, 0).UTC().Format(time.RFC3339))
	}
	if c.NotBefore != 0 && now.Unix() < c.NotBefore {
		return nil, tokenErr(ErrTokenNotYetValid, "valid from %s", time.Unix(c.NotBefore, 0).UTC().Format(time.RFC3339))
	}
	return c, nil
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
