package moitessier_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/likestripes/moitessier"
)

func TestMatchScope(t *testing.T) {
	for _, tt := range []struct {
		pattern, scope string
		want           bool
	}{
		{"a", "a", true},
		{"a", "b", false},
		{"a.b", "a.b", true},
		{"a.b", "a", false},
		{"a", "a.b", false},
		{"a.*", "a.b", true},
		{"a.*", "a", false},
		{"a.*", "a.b.c", false},
		{"*.b", "a.b", true},
		{"*", "a", true},
		{"*", "a.b", false},
		{">", "a", true},
		{">", "a.b.c", true},
		{"a.>", "a", false},
		{"a.>", "a.b", true},
		{"a.>", "a.b.c", true},
		{"a.*.>", "a.b", false},
		{"a.*.>", "a.b.c", true},
		{"a..b", "a..b", true},
		{"a.*.b", "a..b", true},
		{"scoped string", "scoped string", true},
		{"a*", "ab", false},
		{"a*", "a*", true},
	} {
		if got := moitessier.MatchScope(tt.pattern, tt.scope); got != tt.want {
			t.Errorf("MatchScope(%q, %q) = %v, want %v", tt.pattern, tt.scope, got, tt.want)
		}
	}
}

func TestValidate(t *testing.T) {
	good := []string{"a", "room.1", "scoped string", "é.ü", strings.Repeat("x", moitessier.MaxScopeBytes), "a..b", "a*"}
	for _, s := range good {
		if err := moitessier.ValidateScope(s); err != nil {
			t.Errorf("ValidateScope(%q): %v", s, err)
		}
		if err := moitessier.ValidatePattern(s); err != nil {
			t.Errorf("ValidatePattern(%q): %v", s, err)
		}
	}
	for _, s := range []string{"a.*", "*", ">", "a.>"} {
		if err := moitessier.ValidatePattern(s); err != nil {
			t.Errorf("ValidatePattern(%q): %v", s, err)
		}
		if err := moitessier.ValidateScope(s); !errors.Is(err, moitessier.ErrInvalidScope) {
			t.Errorf("ValidateScope(%q) = %v, want ErrInvalidScope", s, err)
		}
	}
	bad := []string{"", strings.Repeat("x", moitessier.MaxScopeBytes+1), "\xff", "a\x00b", "a\nb", "a\u0085b", "a\u007f", ">.a", "a.>.b"}
	for _, s := range bad {
		if err := moitessier.ValidatePattern(s); !errors.Is(err, moitessier.ErrInvalidScope) {
			t.Errorf("ValidatePattern(%q) = %v, want ErrInvalidScope", s, err)
		}
	}
}

func TestListenerIDUnambiguous(t *testing.T) {
	ids := map[string]moitessier.Conditions{}
	for _, c := range []moitessier.Conditions{
		{Person: "a", Client: "b.c", Type: moitessier.Private, Scope: "x"},
		{Person: "a.b", Client: "c", Type: moitessier.Private, Scope: "x"},
		{Person: "ab", Type: moitessier.Private, Scope: "x"},
		{Person: "a", Type: moitessier.Private, Scopes: []string{"x", "y"}},
		{Person: "a", Type: moitessier.Private, Scope: "x y"},
		{Person: "a", Type: moitessier.Handler, Scope: "x"},
		{Person: "a", Type: moitessier.Shared, Scope: "x"},
	} {
		id, err := moitessier.ListenerID(c)
		if err != nil {
			t.Fatal(err)
		}
		if prev, dup := ids[id]; dup {
			t.Fatalf("%+v and %+v share id %s", prev, c, id)
		}
		ids[id] = c
	}
}
