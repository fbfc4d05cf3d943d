package moitessier_test

import (
	"testing"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/memstore"
)

// TestDefaultOptions: DefaultOptions is what New uses for zero fields, and
// a hub made with it works.
func TestDefaultOptions(t *testing.T) {
	d := moitessier.DefaultOptions()
	if d.AckInterval != moitessier.DefaultAckInterval || moitessier.DefaultAckInterval != time.Second {
		t.Fatalf("AckInterval %v, want 1s", d.AckInterval)
	}
	if d.MaxMessageBytes != 64<<10 || d.Lease != 24*time.Hour || d.Retention.MaxAge != 7*24*time.Hour || d.GCInterval != time.Minute {
		t.Fatalf("DefaultOptions = %+v", d)
	}
	if d.Logger != nil || d.Now != nil {
		t.Fatal("DefaultOptions sets Logger or Now")
	}
	hub, err := moitessier.New(memstore.New(), d)
	if err != nil {
		t.Fatal(err)
	}
	if err := hub.Close(); err != nil {
		t.Fatal(err)
	}
}
