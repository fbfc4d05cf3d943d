package moitessier_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/memstore"
)

func newHub() *moitessier.Hub {
	hub, err := moitessier.New(memstore.New(), moitessier.Options{})
	if err != nil {
		panic(err)
	}
	return hub
}

// A chat room: a Shared listener, a dispatch, and what it wrote.
func ExampleHub_Dispatch() {
	ctx := context.Background()
	hub := newHub()
	defer hub.Close()

	room, _ := hub.NewListener(ctx, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "room.lobby"})
	d, err := hub.Dispatch(ctx, "bob", "room.lobby", "hello, lobby")
	if err != nil {
		panic(err)
	}
	fmt.Println(len(d.Messages), d.Messages[0].Text, d.Messages[0].Seq, d.Messages[0].Listener == room.ID())

	_, err = hub.Dispatch(ctx, "bob", "room.*", "wildcards are for listeners")
	fmt.Println(errors.Is(err, moitessier.ErrInvalidScope))
	// Output:
	// 1 hello, lobby 1 true
	// true
}

// A Handler listener: the handler's result is that listener's message.
func ExampleHandlerFunc() {
	ctx := context.Background()
	hub := newHub()
	defer hub.Close()

	hub.NewListener(ctx, moitessier.Conditions{Person: "alice", Type: moitessier.Handler, Scope: "jobs.>"})
	shout := moitessier.HandlerFunc(func(ctx context.Context, listenerID string, m moitessier.Message) (string, error) {
		return strings.ToUpper(m.Text) + "!", nil
	})
	d, _ := hub.Dispatch(ctx, "worker", "jobs.7", "done", shout)
	fmt.Println(d.Messages[0].Text)
	// Output: DONE!
}

// A person's notifications: a Private listener hears what is addressed to
// its owner.
func ExampleTo() {
	ctx := context.Background()
	hub := newHub()
	defer hub.Close()

	inbox, _ := hub.NewListener(ctx, moitessier.Conditions{Person: "alice", Type: moitessier.Private, Scope: "notify"})
	hub.Dispatch(ctx, "bob", "notify", "for carol", moitessier.To("carol"))
	hub.Dispatch(ctx, "bob", "notify", "for alice", moitessier.To("alice"))
	msgs, _ := inbox.Messages(ctx, 0, 10)
	for _, m := range msgs {
		fmt.Println(m.Seq, m.Sender, m.Text)
	}
	// Output: 1 bob for alice
}

// ListenUntil pushes messages to the responder as they are stored and
// returns the cursor to resume from.
func ExampleListener_ListenUntil() {
	ctx := context.Background()
	hub := newHub()
	defer hub.Close()

	room, _ := hub.NewListener(ctx, moitessier.Conditions{Person: "alice", Type: moitessier.Shared, Scope: "room.1"})
	go func() {
		for _, text := range []string{"one", "two", "three"} {
			hub.Dispatch(ctx, "bob", "room.1", text)
		}
	}()

	listenCtx, stop := context.WithCancel(ctx)
	seen := 0
	respond := func(ctx context.Context, msgs []moitessier.Message) error {
		for _, m := range msgs {
			fmt.Println(m.Seq, m.Text) // e.g. write to a websocket
			seen++
		}
		if seen == 3 {
			stop()
		}
		return nil // acknowledged: alice's server-held cursor moves on
	}
	stillThere := func(ctx context.Context) error { return nil } // e.g. is the websocket open?
	cur, err := room.ListenUntil(listenCtx, stillThere, respond, 0, time.Second, time.Minute)
	fmt.Println(cur, errors.Is(err, context.Canceled))

	// Later, from any process: resume where alice left off.
	hub.Dispatch(ctx, "bob", "room.1", "four")
	msgs, _ := room.Messages(ctx, moitessier.Resume, 0)
	fmt.Println(len(msgs), msgs[0].Seq, msgs[0].Text)
	// Output:
	// 1 one
	// 2 two
	// 3 three
	// 3 true
	// 1 4 four
}
