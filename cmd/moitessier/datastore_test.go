package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/likestripes/moitessier/internal/gcpemu"
)

func TestDatastoreSpec(t *testing.T) {
	for _, tc := range []struct {
		spec               string
		project, db, ns    string
		noPubSub, noCreate bool
		bad                bool
	}{
		{spec: "datastore://my-proj", project: "my-proj"},
		{spec: "datastore://my-proj/chat-db", project: "my-proj", db: "chat-db"},
		{spec: "datastore://my-proj?namespace=app1", project: "my-proj", ns: "app1"},
		{spec: "datastore://p/db?namespace=n&pubsub=off&create=false", project: "p", db: "db", ns: "n", noPubSub: true, noCreate: true},
		{spec: "datastore://", bad: true},
		{spec: "datastore://p/a/b", bad: true},
		{spec: "datastore://p?nmespace=x", bad: true},
		{spec: "datastore://p?namespace=a&namespace=b", bad: true},
		{spec: "datastore://user@p", bad: true},
	} {
		cfg, err := datastoreConfig(tc.spec)
		if tc.bad {
			if err == nil {
				t.Errorf("datastoreConfig(%q) = %+v, want an error", tc.spec, cfg)
			}
			continue
		}
		if err != nil || cfg.Project != tc.project || cfg.Database != tc.db || cfg.Namespace != tc.ns || cfg.NoPubSub != tc.noPubSub || cfg.NoCreate != tc.noCreate {
			t.Errorf("datastoreConfig(%q) = %+v, %v", tc.spec, cfg, err)
		}
	}
}

// TestServeDatastore runs the hub on the Datastore emulator (with Pub/Sub
// wake-ups), starting the emulators if DATASTORE_EMULATOR_HOST and
// PUBSUB_EMULATOR_HOST are unset, or skips saying why.
func TestServeDatastore(t *testing.T) {
	gcpemu.Datastore(t)
	gcpemu.PubSub(t)
	ctx := ctxT(t)
	ns := "cmd" + randomHex(4)
	h := startServe(t, "--store", "datastore://test?namespace="+ns)
	if !strings.Contains(h.stdout.String(), "store: datastore") {
		t.Fatalf("%s", h.stdout)
	}
	listened := make(chan string, 1)
	go func() {
		out, errOut, err := runCmd(ctx, t, "", "listen", "--hub", h.url, "--as", "bob", "-n", "1", "room.ds")
		if err != nil {
			out = fmt.Sprintf("error %v: %s", err, errOut)
		}
		listened <- out
	}()
	waitMetric(t, h.url, `moitessier_open_connections{transport="sse"} 1`)
	if out, _, err := runCmd(ctx, t, "", "dispatch", "--hub", h.url, "--as", "alice", "room.ds", "via datastore"); err != nil {
		t.Fatalf("dispatch: %v %s", err, out)
	}
	if out := <-listened; !strings.Contains(out, "alice: via datastore") {
		t.Fatalf("listen: %q", out)
	}
	if code, body := get(t, h.url+"/healthz"); code != 200 || !strings.Contains(body, `"store":"datastore"`) {
		t.Fatalf("%d %s", code, body)
	}
}
