package moitessierhttp

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/likestripes/moitessier"
)

// readme returns the README's section under heading (up to the next
// heading of the same or a higher level).
func readme(tb testing.TB, heading string) string {
	tb.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		tb.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(b), "\n"+heading+"\n")
	if !ok {
		tb.Fatalf("the README has no %q", heading)
	}
	level := heading[:strings.IndexByte(heading, ' ')+1]
	for i := 0; ; {
		j := strings.Index(sec[i:], "\n#")
		if j < 0 {
			return sec
		}
		i += j + 1
		if h := sec[i:]; strings.HasPrefix(h, "## ") || strings.HasPrefix(h, level) {
			return sec[:i]
		}
	}
}

// TestReadmeLimits: the README's "Limits and quotas" table states the
// server's defaults as Config and the package have them.
func TestReadmeLimits(t *testing.T) {
	sec := readme(t, "## Limits and quotas")
	cfg := Config{}.withDefaults()
	secs := func(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + " s" }
	for _, tc := range []struct{ names, want string }{
		{"`Config.PollTimeout`", secs(cfg.PollTimeout)},
		{"`Config.MaxPollTimeout`", secs(cfg.MaxPollTimeout)},
		{"`Config.MaxListenersPerConn`", strconv.Itoa(cfg.MaxListenersPerConn)},
		{"`Config.MaxStreamsPerPerson`", strconv.Itoa(cfg.MaxStreamsPerPerson)},
		{"`Config.BodyTimeout`", secs(cfg.BodyTimeout)},
		{"`Config.WriteTimeout`", secs(cfg.WriteTimeout)},
		{"`Config.ResponseTimeout`", secs(cfg.ResponseTimeout)},
		{"`Config.MaxPollBytes`", strconv.Itoa(cfg.MaxPollBytes>>20) + " MiB"},
		{"bytes of a token", strconv.Itoa(maxTokenBytes>>10) + " KiB"},
		{"bytes of the HS256 secret", strconv.Itoa(MinSecretBytes)},
		{"`moitessierhttp.MaxRefBytes`", strconv.Itoa(MaxRefBytes)},
		{"subscribers per page", strconv.Itoa(DefaultReadStateLimit)},
		{"`moitessier.MaxScopeBytes`", strconv.Itoa(moitessier.MaxScopeBytes>>10) + " KiB"},
		{"`moitessier.MaxNameBytes`", strconv.Itoa(moitessier.MaxNameBytes)},
		{"keeps encoded as JSON", strconv.Itoa(encCacheBytes>>20) + " MiB"},
		{"remembers as verified", fmt.Sprintf("%d %03d, and %d MiB", tokenCacheSize/1000, tokenCacheSize%1000, tokenCacheBytes>>20)},
		{"keeps encoded as JSON", fmt.Sprintf("%d %03d messages", encCacheSlots/1000, encCacheSlots%1000)},
	} {
		var row string
		for _, line := range strings.Split(sec, "\n") {
			if strings.HasPrefix(line, "| ") && strings.Contains(line, tc.names) {
				row = line
			}
		}
		if cols := strings.Split(row, " | "); len(cols) < 3 || !strings.Contains(cols[1], tc.want) {
			t.Errorf("README limits: the row of %s is %q, want %q in its default", tc.names, row, tc.want)
		}
	}
	if want := fmt.Sprintf("JSON is over %d MiB is not kept", encCacheMaxEntry>>20); !strings.Contains(sec, want) {
		t.Errorf("README limits: the encoding cache's row does not say %q", want)
	}
}

// TestReadmeWebSocketProtocol: the README documents the WebSocket protocol
// a client writer needs: every op the server takes, every frame it sends,
// and its close codes.
func TestReadmeWebSocketProtocol(t *testing.T) {
	sec := readme(t, "### WebSocket protocol")
	for _, want := range []string{
		`"op":"listen"`, `"op":"ack"`, `"op":"unlisten"`, `"op":"dispatch"`, `"leave":true`,
		`"type":"listening"`, `"type":"messages"`, `"type":"unlistened"`, `"type":"dispatched"`, `"type":"error"`,
		`"ref"`, `"since":"resume"`, `"head"`, "1001", strconv.Itoa(int(StatusTokenExpired)), "1009",
		strconv.Itoa(Config{}.withDefaults().MaxListenersPerConn) + " listens per connection",
	} {
		if !strings.Contains(sec, want) {
			t.Errorf("the README's WebSocket protocol does not say %s", want)
		}
	}
}
