package moitessier_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// The third-party code the library's packages may pull into a program, in
// families named by what they are for. A module that is in no family (a
// small helper such as golang.org/x/sync) is allowed wherever it appears;
// a family is allowed only where the table in TestDependencies says so.
var depFamilies = map[string][]string{
	"sqlite driver":    {"modernc.org/"},
	"postgres driver":  {"github.com/jackc/"},
	"datastore client": {"cloud.google.com/", "google.golang.org/", "go.opentelemetry.io/", "go.opencensus.io"},
	"http transport":   {"github.com/coder/websocket", "github.com/golang-jwt/"},
	"browser driver":   {"github.com/chromedp/"},
	"test helper":      {"go.uber.org/goleak", "github.com/stretchr/"},
}

const modulePath = "github.com/likestripes/moitessier"

// TestDependencies checks what each package of the library pulls into a
// program that imports it (go list -deps, tests excluded): the domain
// package and the memory store nothing outside the standard library, each
// store only its own database's client, the HTTP transport no store, and
// nothing of the library the browser driver of the demo page's test, which
// lives in a module of its own. It also checks that the library module's
// requirements do not name the browser driver, so that a program that
// requires the module does not download it.
func TestDependencies(t *testing.T) {
	gocmd, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH")
	}
	tests := []struct {
		pkg string
		// stdOnly: nothing but the standard library and this module.
		stdOnly bool
		allowed []string // families allowed
	}{
		{pkg: "", stdOnly: true},
		{pkg: "memstore", stdOnly: true},
		{pkg: "storetest", stdOnly: true},
		{pkg: "sqlite", allowed: []string{"sqlite driver"}},
		{pkg: "postgres", allowed: []string{"postgres driver"}},
		{pkg: "clouddatastore", allowed: []string{"datastore client"}},
		{pkg: "moitessierhttp", allowed: []string{"http transport"}},
		{pkg: "cmd/moitessier", allowed: []string{"sqlite driver", "postgres driver", "datastore client", "http transport"}},
	}
	var args []string
	for _, tt := range tests {
		args = append(args, importPath(tt.pkg))
	}

	// One package a line: its import path, its module (empty for the
	// standard library) and the import paths of all its dependencies.
	out := goCmd(t, gocmd, append([]string{"list", "-deps", "-f", "{{.ImportPath}}\t{{with .Module}}{{.Path}}{{end}}\t{{join .Deps \" \"}}"}, args...)...)
	moduleOf := map[string]string{}
	depsOf := map[string][]string{}
	for line := range strings.Lines(out) {
		f := strings.Split(strings.TrimSuffix(line, "\n"), "\t")
		if len(f) != 3 {
			t.Fatalf("go list: unexpected line %q", line)
		}
		moduleOf[f[0]] = f[1]
		depsOf[f[0]] = strings.Fields(f[2])
	}

	for _, tt := range tests {
		pkg := importPath(tt.pkg)
		deps, ok := depsOf[pkg]
		if !ok {
			t.Errorf("go list did not list %s", pkg)
			continue
		}
		mods := map[string][]string{} // module -> the packages of it pkg needs
		for _, d := range deps {
			if m := moduleOf[d]; m != "" && m != modulePath {
				mods[m] = append(mods[m], d)
			}
		}
		for m, ps := range mods {
			fam := familyOf(m)
			switch {
			case tt.stdOnly:
				t.Errorf("%s needs %s (%s), want only the standard library", pkg, m, strings.Join(ps, ", "))
			case fam != "" && !slices.Contains(tt.allowed, fam):
				t.Errorf("%s needs %s, a %s (%s); allowed here: %v", pkg, m, fam, strings.Join(ps, ", "), tt.allowed)
			}
		}
	}

	// The module graph a program that requires this module inherits.
	for line := range strings.Lines(goCmd(t, gocmd, "list", "-m", "all")) {
		if m := strings.Fields(line); len(m) > 0 && familyOf(m[0]) == "browser driver" {
			t.Errorf("the module requires %s; the browser test's module should, not the library's", strings.TrimSpace(line))
		}
	}
}

func importPath(dir string) string {
	if dir == "" {
		return modulePath
	}
	return modulePath + "/" + dir
}

func familyOf(module string) string {
	for fam, prefixes := range depFamilies {
		for _, p := range prefixes {
			if module == strings.TrimSuffix(p, "/") || strings.HasPrefix(module, p) {
				return fam
			}
		}
	}
	return ""
}

// goCmd runs the go command in this module, outside any workspace, and
// returns its standard output.
func goCmd(t *testing.T, gocmd string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, gocmd, args...)
	cmd.Env = append(os.Environ(), "GOWORK=off")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}
