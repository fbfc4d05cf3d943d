package browsertest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/cmd/moitessier/demo"
	"github.com/likestripes/moitessier/memstore"
	"github.com/likestripes/moitessier/moitessierhttp"
)

// TestPage drives the demo page in headless Chromium, as two persons in two
// tabs of one browser, against a real hub on 127.0.0.1.
//
// Set MOITESSIER_DEMO_SCREENSHOTS to a directory to get a PNG of each
// person's page there.
func TestPage(t *testing.T) {
	h := startHub(t)
	ctx, cancel := context.WithTimeout(newBrowser(t), 60*time.Second)
	defer cancel()
	alice := openPage(t, ctx, "alice", h.url+"/?name=alice")
	bob := openPage(t, ctx, "bob", h.url+"/?name=bob")

	const chat = "chat-log"
	var sent []string // what the room got, in order
	t.Run("Chat", func(t *testing.T) {
		do(t, alice,
			chromedp.SendKeys(chromedp.ID("chat-text"), "hello from alice"),
			chromedp.Click(chromedp.ID("chat-send")))
		sent = append(sent, "hello from alice")
		waitFor(t, bob, chat, "hello from alice")

		// Text is shown as text: markup in a message stays inert.
		const markup = `<img src=x onerror="document.title='pwned'"> <b>bold</b> & co`
		h.dispatch(t, "carol", moitessierhttp.DispatchRequest{Scope: "room.lobby", Text: markup})
		sent = append(sent, markup)
		waitFor(t, bob, chat, markup)
		if n := run(t, bob, chromedp.Evaluate[int](`document.querySelectorAll("#chat-log img, #chat-log b").length`)); n != 0 {
			t.Errorf("%d elements made from message text, want 0", n)
		}
		checkLog(t, bob, chat, sent)
		checkLog(t, alice, chat, sent)
	})

	t.Run("ReloadLosesNothing", func(t *testing.T) {
		// Away: the page is gone while three messages are sent.
		do(t, bob, chromedp.Navigate("about:blank"))
		h.waitListening(t, 3) // alice's three panels
		for i := 1; i <= 3; i++ {
			text := fmt.Sprintf("while bob was away %d", i)
			h.dispatch(t, "alice", moitessierhttp.DispatchRequest{Scope: "room.lobby", Text: text})
			sent = append(sent, text)
		}
		do(t, bob, chromedp.Navigate(h.url+"/?name=bob"))
		waitLive(t, bob)
		waitFor(t, bob, chat, sent[len(sent)-1])
		checkLog(t, bob, chat, sent)

		// Reloading: messages keep coming while the page goes and comes back.
		var during []string
		for i := 1; i <= 12; i++ {
			during = append(during, fmt.Sprintf("during reload %d", i))
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			for _, text := range during {
				if err := h.post("alice", moitessierhttp.DispatchRequest{Scope: "room.lobby", Text: text}); err != nil {
					t.Error(err)
					return
				}
				time.Sleep(15 * time.Millisecond)
			}
		})
		do(t, bob, chromedp.Reload())
		wg.Wait()
		sent = append(sent, during...)
		waitLive(t, bob)
		do(t, alice,
			chromedp.SendKeys(chromedp.ID("chat-text"), "after the reload"),
			chromedp.Click(chromedp.ID("chat-send")))
		sent = append(sent, "after the reload")
		waitFor(t, bob, chat, "after the reload")
		waitFor(t, alice, chat, "after the reload") // her own, back over her stream
		checkLog(t, bob, chat, sent)
		checkLog(t, alice, chat, sent)

		// A browser that remembers nothing resumes from the cursor the hub
		// holds for bob: it shows only what came after.
		run(t, bob, chromedp.Evaluate[chromedp.Void](`localStorage.clear()`))
		do(t, bob, chromedp.Navigate("about:blank"))
		// The hub acknowledges what bob's browser received (its TCP stack's
		// evidence, or its next request's Last-Event-ID) and saves that
		// when the stream ends, so it must have seen bob's stream end.
		h.waitListening(t, 3)
		h.dispatch(t, "alice", moitessierhttp.DispatchRequest{Scope: "room.lobby", Text: "after bob forgot"})
		sent = append(sent, "after bob forgot")
		do(t, bob, chromedp.Navigate(h.url+"/?name=bob"))
		waitLive(t, bob)
		waitFor(t, bob, chat, "after bob forgot")
		checkLog(t, bob, chat, []string{"after bob forgot"})
	})

	t.Run("Notifications", func(t *testing.T) {
		const notes = "notes-log"
		do(t, alice,
			chromedp.SendKeys(chromedp.ID("notes-to"), "bob"),
			chromedp.SendKeys(chromedp.ID("notes-text"), "psst, bob"),
			chromedp.Click(chromedp.ID("notes-send")))
		waitFor(t, alice, notes, "psst, bob")
		h.dispatch(t, "carol", moitessierhttp.DispatchRequest{Scope: "notify", Text: "for bob from carol", To: []string{"bob"}})
		h.dispatch(t, "carol", moitessierhttp.DispatchRequest{Scope: "notify", Text: "for alice from carol", To: []string{"alice"}})
		waitFor(t, bob, notes, "for bob from carol")
		waitFor(t, alice, notes, "for alice from carol")
		// The sender keeps a copy of what she sent in her own Private listener.
		checkLog(t, bob, notes, []string{"psst, bob", "for bob from carol"})
		checkLog(t, alice, notes, []string{"psst, bob", "for alice from carol"})
		if got := texts(t, bob, chat); slices.Contains(got, "psst, bob") {
			t.Errorf("a notification reached the chat room: %q", got)
		}
	})

	t.Run("Handler", func(t *testing.T) {
		const hello = "handled-log"
		do(t, bob,
			chromedp.SendKeys(chromedp.ID("handled-text"), "hi all"),
			chromedp.Click(chromedp.ID("handled-send")))
		waitFor(t, alice, hello, "Hello alice! bob says: hi all")
		waitFor(t, bob, hello, "Hello bob! bob says: hi all")
		do(t, alice,
			chromedp.SetValue(chromedp.ID("handled-handler"), "upper"),
			chromedp.SendKeys(chromedp.ID("handled-text"), "quiet please"),
			chromedp.Click(chromedp.ID("handled-send")))
		waitFor(t, bob, hello, "QUIET PLEASE")
		waitFor(t, alice, hello, "QUIET PLEASE")
		checkLog(t, bob, hello, []string{"Hello bob! bob says: hi all", "QUIET PLEASE"})
		checkLog(t, alice, hello, []string{"Hello alice! bob says: hi all", "QUIET PLEASE"})
	})

	t.Run("GivenToken", func(t *testing.T) {
		// A token minted elsewhere, as on a hub without development tokens:
		// the page takes it from the URL's fragment and asks the hub whose it is.
		tok, err := h.token("carol")
		if err != nil {
			t.Fatal(err)
		}
		carol := openPage(t, ctx, "carol", h.url+"/#token="+tok)
		if got := run(t, carol, chromedp.Value(chromedp.ID("name"))); got != "carol" {
			t.Errorf("name field %q, want carol", got)
		}
		h.dispatch(t, "alice", moitessierhttp.DispatchRequest{Scope: "room.lobby", Text: "welcome, carol"})
		sent = append(sent, "welcome, carol")
		// New to the room, carol sees its history first.
		waitFor(t, carol, chat, "welcome, carol")
		checkLog(t, carol, chat, sent)
	})

	t.Run("HubRestart", func(t *testing.T) {
		// The hub shuts down under open pages and a new one takes its
		// place: each page reconnects, resumes where it was, and does not
		// show the shutdown as an error.
		pages := []*page{alice, bob}
		chats := make([][]string, len(pages))
		handled := make([][]string, len(pages))
		for i, p := range pages {
			chats[i] = texts(t, p, chat)
			handled[i] = texts(t, p, "handled-log")
		}
		notes, aliceNotes := texts(t, bob, "notes-log"), texts(t, alice, "notes-log")
		h.restart(t)
		h.waitListening(t, 6) // the pages' panels, on the new hub
		for _, p := range pages {
			waitLive(t, p)
		}
		h.dispatch(t, "carol", moitessierhttp.DispatchRequest{Scope: "room.lobby", Text: "after the restart"})
		h.dispatch(t, "carol", moitessierhttp.DispatchRequest{Scope: "notify", Text: "for bob, after the restart", To: []string{"bob"}})
		waitFor(t, bob, "notes-log", "for bob, after the restart")
		checkLog(t, bob, "notes-log", append(notes, "for bob, after the restart"))
		checkLog(t, alice, "notes-log", aliceNotes)
		for i, p := range pages {
			waitFor(t, p, chat, "after the restart")
			checkLog(t, p, chat, append(chats[i], "after the restart"))
			checkLog(t, p, "handled-log", handled[i])
			if status := run(t, p, chromedp.Evaluate[string](`document.getElementById("status").classList.contains("error") ? document.getElementById("status").textContent : ""`)); status != "" {
				t.Errorf("%s's page shows an error after the restart: %q", p.name, status)
			}
		}
	})

	if dir := os.Getenv("MOITESSIER_DEMO_SCREENSHOTS"); dir != "" {
		for _, p := range []*page{alice, bob} {
			png := run(t, p, chromedp.FullScreenshot(100))
			if err := os.WriteFile(filepath.Join(dir, p.name+".png"), png, 0o644); err != nil {
				t.Error(err)
			}
		}
	}
	if got := run(t, bob, chromedp.Title()); got != "bob · Moitessier demo" {
		t.Errorf("title %q, want %q", got, "bob · Moitessier demo")
	}
}

// testHub is a hub served over HTTP as `moitessier serve` serves it: the API
// at /v1/, development tokens at /dev/token, the demo page at /. restart
// puts a new hub, on the same store, behind the same URL.
type testHub struct {
	t      *testing.T // the test whose cleanups stop the hubs
	store  moitessier.Store
	hub    *moitessier.Hub
	api    atomic.Pointer[moitessierhttp.Server]
	url    string
	secret []byte
}

func startHub(t *testing.T) *testHub {
	t.Helper()
	h := &testHub{t: t, store: memstore.New(), secret: []byte("demo page test secret, 32 bytes or more")}
	mux := http.NewServeMux()
	mux.Handle("/v1/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.api.Load().ServeHTTP(w, r) }))
	mux.HandleFunc("POST /dev/token", func(w http.ResponseWriter, r *http.Request) {
		tok, err := h.token(r.URL.Query().Get("sub"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"token": tok})
	})
	mux.Handle("/", demo.Handler())
	srv := httptest.NewServer(mux)
	h.url = srv.URL
	// Cleanups run last first: the APIs and hubs that serve registers
	// stop before the server closes.
	t.Cleanup(srv.Close)
	h.serve(t)
	return h
}

// serve starts a hub on h's store and its API, and makes them h's. They
// stop when h's test ends, even when a subtest started them.
func (h *testHub) serve(t *testing.T) {
	t.Helper()
	hub, err := moitessier.New(h.store, moitessier.Options{})
	if err != nil {
		t.Fatal(err)
	}
	api, err := moitessierhttp.New(hub, moitessierhttp.Config{
		Secret:   h.secret,
		Handlers: demo.Handlers(hub),
	})
	if err != nil {
		t.Fatal(err)
	}
	h.hub = hub
	h.api.Store(api)
	h.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := api.Shutdown(ctx); err != nil {
			t.Errorf("api shutdown: %v", err)
		}
		if err := hub.Close(); err != nil {
			t.Errorf("hub close: %v", err)
		}
	})
}

// restart shuts the hub down before its API, as a program that stops its
// hub first does (its streams end with shutting_down), and serves a new
// hub on the same store at the same URL.
func (h *testHub) restart(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.hub.Shutdown(ctx); err != nil {
		t.Fatalf("hub shutdown: %v", err)
	}
	h.serve(t)
}

// token mints a token for person granting every scope, as the hub's
// development mode does.
func (h *testHub) token(person string) (string, error) {
	now := time.Now()
	return moitessierhttp.Sign(h.secret, moitessierhttp.Claims{
		Subject: person, Listen: []string{">"}, Dispatch: []string{">"},
		IssuedAt: now.Unix(), ExpiresAt: now.Add(time.Hour).Unix(),
	})
}

// post dispatches as person through the HTTP API.
func (h *testHub) post(person string, req moitessierhttp.DispatchRequest) error {
	tok, err := h.token(person)
	if err != nil {
		return err
	}
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	r, err := http.NewRequest(http.MethodPost, h.url+"/v1/dispatch", bytes.NewReader(body))
	if err != nil {
		return err
	}
	r.Header.Set("Authorization", "Bearer "+tok)
	r.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return fmt.Errorf("dispatch %q as %s: %s: %s", req.Text, person, resp.Status, b.String())
	}
	return nil
}

func (h *testHub) dispatch(t *testing.T, person string, req moitessierhttp.DispatchRequest) {
	t.Helper()
	if err := h.post(person, req); err != nil {
		t.Fatal(err)
	}
}

// waitListening waits until n streams listen to the hub.
func (h *testHub) waitListening(t *testing.T, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for h.hub.Stats().Listening != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d streams listen, want %d", h.hub.Stats().Listening, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// chromium returns the path of a Chromium binary, or "".
func chromium() string {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// newBrowser starts headless Chromium with a fresh profile and returns its
// context, or skips the test when there is no Chromium.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	path := chromium()
	if path == "" {
		t.Skip("no Chromium: install it (Debian: apt-get install -y chromium) or set CHROMIUM to its path")
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 860),
	)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	return ctx
}

// page is one tab of the browser, with the script errors seen in it.
type page struct {
	ctx  context.Context
	name string

	mu     sync.Mutex
	errors []string
}

// openPage opens the demo page at url in a new tab and waits until it
// listens.
func openPage(t *testing.T, browser context.Context, name, url string) *page {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	p := &page{ctx: ctx, name: name}
	t.Cleanup(func() {
		cancel()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, e := range p.errors {
			t.Errorf("%s's page: %s", p.name, e)
		}
	})
	err := chromedp.Listen(ctx, func(ev any) {
		var msg string
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			msg = "uncaught: " + ev.ExceptionDetails.Text
			if ev.ExceptionDetails.Exception != nil {
				msg += " " + ev.ExceptionDetails.Exception.Description
			}
		case *runtime.EventConsoleAPICalled:
			if ev.Type != runtime.ConsoleAPICalledTypeError {
				return
			}
			msg = "console.error:"
			for _, a := range ev.Args {
				msg += " " + string(a.Value) + a.Description
			}
		default:
			return
		}
		p.mu.Lock()
		p.errors = append(p.errors, msg)
		p.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	do(t, p, chromedp.Navigate(url))
	waitLive(t, p)
	return p
}

func do(t *testing.T, p *page, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(p.ctx, steps...); err != nil {
		t.Fatalf("%s's page: %v", p.name, err)
	}
}

func run[T any](t *testing.T, p *page, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(p.ctx, a)
	if err != nil {
		t.Fatalf("%s's page: %v", p.name, err)
	}
	return v
}

// poll waits until the expression is truthy, and returns an error if it
// is not within 15 s. It polls on a timer, not on animation frames, which a
// tab in the background does not get; and polls again in the new document
// when a navigation replaced the one it started in.
func poll(p *page, expr string) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := chromedp.Run(p.ctx, chromedp.Poll[chromedp.Void](expr,
			chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(time.Until(deadline))))
		if err == nil || time.Now().After(deadline) || !navigated(err) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// navigated reports whether err says that the document went away.
func navigated(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "Cannot find context with specified id") ||
		strings.Contains(msg, "Execution context was destroyed")
}

// waitLive waits until every panel of the page listens.
func waitLive(t *testing.T, p *page) {
	t.Helper()
	err := poll(p, `["chat-state", "ws-state", "handled-state"].every(id => document.getElementById(id)?.dataset.state === "live")`)
	if err != nil {
		t.Fatalf("%s's page: waiting for the panels to be live: %v", p.name, err)
	}
}

func textsJS(list string) string {
	return fmt.Sprintf(`Array.from(document.querySelectorAll("#%s .text"), e => e.textContent)`, list)
}

// waitFor waits until the list shows a message with the text.
func waitFor(t *testing.T, p *page, list, text string) {
	t.Helper()
	js, _ := json.Marshal(text)
	if err := poll(p, textsJS(list)+".includes("+string(js)+")"); err != nil {
		got, _ := chromedp.Run(p.ctx, chromedp.Evaluate[[]string](textsJS(list)))
		t.Fatalf("%s's page: waiting for %q in #%s: %v; it shows %q", p.name, text, list, err, got)
	}
}

func texts(t *testing.T, p *page, list string) []string {
	t.Helper()
	return run(t, p, chromedp.Evaluate[[]string](textsJS(list)))
}

// checkLog checks that the list shows exactly want, in order, each message
// once, with growing seqs.
func checkLog(t *testing.T, p *page, list string, want []string) {
	t.Helper()
	if got := texts(t, p, list); !slices.Equal(got, want) {
		t.Errorf("%s's #%s:\n got %q\nwant %q", p.name, list, got, want)
	}
	seqs := run(t, p, chromedp.Evaluate[[]int](fmt.Sprintf(`Array.from(document.querySelectorAll("#%s li[data-seq]"), e => +e.dataset.seq)`, list)))
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Errorf("%s's #%s: seqs %v do not grow", p.name, list, seqs)
			break
		}
	}
}
