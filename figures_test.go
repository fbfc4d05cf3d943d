package moitessier_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// measuredFigure matches a measured speed in a comment: "about 13 µs",
// "about 20%", "2 300 appends/s". Limits and defaults ("at most 150 ms",
// "Default 64 KiB") are not matched: they are what the code does, not what
// it was measured doing.
var measuredFigure = regexp.MustCompile(`about [0-9][0-9.,]* ?(µs|ms|ns|%)|[0-9]% |[0-9] ?(appends|msgs|dispatches|deliveries)/s`)

// TestNoMeasuredFiguresInComments: measured figures belong in the README's
// benchmark tables, where they are rerun, not in doc comments, where they
// go stale.
func TestNoMeasuredFiguresInComments(t *testing.T) {
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || d.Name() == "demo" || strings.HasPrefix(d.Name(), ".")) && path != "." {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(b), "\n") {
			_, comment, ok := strings.Cut(line, "//")
			if ok && measuredFigure.MatchString(comment) {
				t.Errorf("%s:%d: a measured figure in a comment (move it to the README's benchmarks): %s", path, i+1, strings.TrimSpace(line))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
