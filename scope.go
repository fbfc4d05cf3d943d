package moitessier

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on the size of names.
const (
	// MaxScopeBytes is the largest scope or scope pattern, in bytes.
	MaxScopeBytes = 1024
	// MaxNameBytes is the largest person, client or idempotency key, in bytes.
	MaxNameBytes = 256
	// MaxScopesPerListener is the default of Options.MaxScopesPerListener:
	// the most scopes and patterns one listener may name. A dispatch is
	// matched against every listener's patterns, so this bounds what one
	// listener adds to the pattern index.
	MaxScopesPerListener = 64
)

// ValidateScope checks a concrete scope, the kind a dispatch names: not empty,
// at most MaxScopeBytes, valid UTF-8, no control characters, and no wildcard
// token ("*" or ">"). The error wraps ErrInvalidScope.
func ValidateScope(scope string) error {
	if err := checkText(scope); err != nil {
		return fmt.Errorf("scope %.64q: %w: %s", scope, ErrInvalidScope, err)
	}
	for tok := range strings.SplitSeq(scope, ".") {
		if tok == "*" || tok == ">" {
			return fmt.Errorf("scope %.64q: %w: a dispatch scope cannot hold the wildcard %q", scope, ErrInvalidScope, tok)
		}
	}
	return nil
}

// ValidatePattern checks a listener's scope or pattern: the rules of
// ValidateScope, except that a token "*" matches any one token and a last
// token ">" matches one or more tokens. ">" anywhere but last is an error.
// The error wraps ErrInvalidScope.
func ValidatePattern(pattern string) error {
	if err := checkText(pattern); err != nil {
		return fmt.Errorf("scope pattern %.64q: %w: %s", pattern, ErrInvalidScope, err)
	}
	if i := strings.Index(pattern, ">"); i >= 0 {
		toks := strings.Split(pattern, ".")
		for j, tok := range toks {
			if tok == ">" && j != len(toks)-1 {
				return fmt.Errorf("scope pattern %.64q: %w: \">\" must be the last token", pattern, ErrInvalidScope)
			}
		}
	}
	return nil
}

// IsPattern reports whether a valid scope pattern holds a wildcard token.
func IsPattern(pattern string) bool {
	for tok := range strings.SplitSeq(pattern, ".") {
		if tok == "*" || tok == ">" {
			return true
		}
	}
	return false
}

// MatchScope reports whether a concrete scope matches a pattern: token by
// token, "*" matching any one token and a last ">" one or more.
func MatchScope(pattern, scope string) bool {
	for {
		pt, prest, pmore := strings.Cut(pattern, ".")
		st, srest, smore := strings.Cut(scope, ".")
		switch {
		case pt == ">" && !pmore:
			return true
		case pt != "*" && pt != st:
			return false
		case !pmore || !smore:
			return pmore == smore
		}
		pattern, scope = prest, srest
	}
}

func checkText(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("empty")
	case len(s) > MaxScopeBytes:
		return fmt.Errorf("%d bytes, more than %d", len(s), MaxScopeBytes)
	case !utf8.ValidString(s):
		return fmt.Errorf("not valid UTF-8")
	}
	if hasControl(s) {
		return fmt.Errorf("holds a control character")
	}
	return nil
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return true
		}
		if s[i] >= utf8.RuneSelf {
			for _, r := range s[i:] {
				if unicode.IsControl(r) {
					return true
				}
			}
			return false
		}
	}
	return false
}

// checkName validates a person, client or key: at most MaxNameBytes of UTF-8
// without control characters; empty only if allowEmpty.
func checkName(what, s string, allowEmpty bool) error {
	switch {
	case s == "" && !allowEmpty:
		return fmt.Errorf("%s: %w: empty", what, ErrInvalidArgument)
	case len(s) > MaxNameBytes:
		return fmt.Errorf("%s: %w: %d bytes, more than %d", what, ErrInvalidArgument, len(s), MaxNameBytes)
	case !utf8.ValidString(s):
		return fmt.Errorf("%s: %w: not valid UTF-8", what, ErrInvalidArgument)
	case hasControl(s):
		return fmt.Errorf("%s: %w: holds a control character", what, ErrInvalidArgument)
	}
	return nil
}

// normalize validates conditions and returns their sorted, deduplicated
// scopes; more than maxScopes of them (if it is above 0) is ErrInvalidScope.
func (c Conditions) normalize(maxScopes int) ([]string, error) {
	if !c.Type.Valid() {
		return nil, fmt.Errorf("listener type %d: %w", int(c.Type), ErrUnknownType)
	}
	if err := checkName("person", c.Person, false); err != nil {
		return nil, err
	}
	if err := checkName("client", c.Client, true); err != nil {
		return nil, err
	}
	if c.Lease < 0 {
		return nil, fmt.Errorf("lease %v: %w: negative", c.Lease, ErrInvalidArgument)
	}
	scopes := make([]string, 0, 1+len(c.Scopes))
	if c.Scope != "" {
		scopes = append(scopes, c.Scope)
	}
	scopes = append(scopes, c.Scopes...)
	if len(scopes) == 0 {
		return nil, fmt.Errorf("conditions: %w: no scope", ErrInvalidScope)
	}
	if maxScopes > 0 && len(scopes) > maxScopes {
		return nil, fmt.Errorf("conditions: %w: %d scopes, more than %d", ErrInvalidScope, len(scopes), maxScopes)
	}
	for _, s := range scopes {
		if err := ValidatePattern(s); err != nil {
			return nil, err
		}
	}
	slices.Sort(scopes)
	return slices.Compact(scopes), nil
}

// ListenerID returns the ID of the listener that the conditions name. It is
// deterministic, as in 0.1: a Shared listener's ID depends only on its scopes
// (one listener per scope, whoever opens it); a Private or Handler listener's
// also on its owner and client. IDs are 32 lowercase hex digits prefixed by
// "s", "p" or "h". It returns the validation error of the conditions; the
// number of scopes, a hub option (Options.MaxScopesPerListener), it does
// not check.
func ListenerID(c Conditions) (string, error) {
	scopes, err := c.normalize(0)
	if err != nil {
		return "", err
	}
	return listenerID(c.Type, c.Person, c.Client, scopes), nil
}

// wellFormedID reports whether id has the form listenerID gives: a type
// letter and 32 lowercase hexadecimal digits. No listener has another: an
// id of another form is ErrNotFound without asking the store, which might
// refuse it with an error of its own (invalid UTF-8, say).
func wellFormedID(id string) bool {
	if len(id) != 33 || strings.IndexByte("sph", id[0]) < 0 {
		return false
	}
	for i := 1; i < len(id); i++ {
		if c := id[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// checkID returns an error wrapping ErrNotFound for an id no listener can
// have (see wellFormedID).
func checkID(id string) error {
	if !wellFormedID(id) {
		return fmt.Errorf("%w: no listener has the ID %q", ErrNotFound, id)
	}
	return nil
}

func listenerID(t ListenerType, person, client string, scopes []string) string {
	h := sha256.New()
	// Every part is free of control characters, so \x00 and \x01 separate
	// them unambiguously.
	fmt.Fprintf(h, "%d\x00", int(t))
	if t != Shared {
		fmt.Fprintf(h, "%s\x00%s\x00", person, client)
	}
	for _, s := range scopes {
		h.Write([]byte(s))
		h.Write([]byte{1})
	}
	sum := h.Sum(nil)
	prefix := map[ListenerType]string{Shared: "s", Private: "p", Handler: "h"}[t]
	return prefix + hex.EncodeToString(sum[:16])
}
