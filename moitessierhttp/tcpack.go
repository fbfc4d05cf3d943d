package moitessierhttp

import (
	"net/http"
	"sync"
	"time"

	"github.com/likestripes/moitessier"
)

// An SSE stream gives the client nothing to answer with, so it takes its
// evidence of receipt from the client's TCP stack: a message is
// acknowledged once the kernel reports that the peer acknowledged every
// byte up to the message's end, and the connection then stayed open for
// one more Config.TCPAckInterval (a client that reads its socket has by
// then read them), or once the client closed the connection cleanly (a
// FIN, no reset: a client that closes its socket with bytes unread sends
// a reset instead, so everything acknowledged before a clean close was
// read).
//
// The stream counts what it writes; the kernel's count of bytes not yet
// acknowledged (SIOCOUTQ) gives how far the peer has acknowledged. The
// streams with messages not yet acknowledged are polled together, once per
// interval, by one goroutine: one system call per such stream and
// interval, none for idle streams.

// sseAck is one SSE stream's record of what it wrote and what the client's
// TCP stack acknowledged.
type sseAck struct {
	l    *moitessier.Listener
	conn tcpConn

	mu       sync.Mutex
	written  int64        // bytes written to the socket since the stream took it
	pending  []pendingAck // messages written and not yet acknowledged, in order
	observed int64        // the peer's acknowledged offset at the last poll
	queued   bool         // in tcpAcks.streams, or being polled
	busy     bool         // a write to the socket is under way
	gone     bool         // the client closed or reset the connection
	final    bool         // gone during a write: closed's work waits for its end
	acks     *tcpAcks     // the server's poller
	_        [0]func()    // not comparable by value
}

// pendingAck is where a message ended in the stream.
type pendingAck struct {
	end int64
	seq moitessier.Cursor
}

// maxPending bounds a stream's pending list: when it is full, a message
// written joins the newest entry (and is acknowledged with what comes
// after it), so that the oldest, the next to be acknowledged, stay.
const maxPending = 64

// writing is called before each write to the socket, wrote after it.
func (a *sseAck) writing() {
	a.mu.Lock()
	a.busy = true
	a.mu.Unlock()
}

// wrote records n more bytes written; seq, if not 0, is the message that
// ends with them.
func (a *sseAck) wrote(n int, seq moitessier.Cursor) {
	a.mu.Lock()
	a.written += int64(n)
	a.busy = false
	if a.gone {
		if a.final {
			if seq != 0 {
				a.pending = append(a.pending, pendingAck{a.written, seq})
			}
			a.final = false
			a.finish()
		}
		a.mu.Unlock()
		return
	}
	enqueue := false
	if seq != 0 {
		if n := len(a.pending); n == maxPending {
			a.pending[n-1] = pendingAck{a.written, seq}
		} else {
			a.pending = append(a.pending, pendingAck{a.written, seq})
		}
		enqueue = !a.queued && !a.gone
		a.queued = a.queued || enqueue
	}
	a.mu.Unlock()
	if enqueue {
		a.acks.add(a)
	}
}

// take removes the messages that end at or before off and returns the
// newest of them (0 if none).
func (a *sseAck) take(off int64) moitessier.Cursor {
	var seq moitessier.Cursor
	i := 0
	for ; i < len(a.pending) && a.pending[i].end <= off; i++ {
		seq = a.pending[i].seq
	}
	a.pending = append(a.pending[:0], a.pending[i:]...)
	return seq
}

// poll acknowledges what the peer had acknowledged at the previous poll,
// the connection being still open, and notes how far it has now. It
// reports whether the stream still has messages to acknowledge.
func (a *sseAck) poll() bool {
	a.mu.Lock()
	if a.gone || len(a.pending) == 0 {
		a.queued = false
		a.mu.Unlock()
		return false
	}
	outq, err := a.conn.unacked()
	if err != nil {
		a.queued = false
		a.pending = nil
		a.mu.Unlock()
		return false
	}
	seq := a.take(a.observed)
	a.observed = max(a.observed, a.written-int64(outq))
	keep := len(a.pending) > 0
	a.queued = keep
	if seq != 0 {
		// Under a.mu, so that closed, which the stream's end waits for,
		// comes after it: the stream's last save includes it.
		_ = a.l.AckDelivered(seq)
	}
	a.mu.Unlock()
	return keep
}

// closed is called when the client closed or reset the connection, before
// the stream ends. After a clean close, everything the peer acknowledged
// was read: it is acknowledged at once, or, if a write is under way (its
// bytes may be among them, and are not counted yet), when it ends: the
// stream's ListenUntil is still running then, inside respond.
func (a *sseAck) closed() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.gone = true
	if a.busy {
		a.final = true
		return
	}
	a.finish()
}

// finish acknowledges, once the client has closed the connection, what it
// acknowledged if it closed cleanly, and forgets the rest. a.mu is held.
func (a *sseAck) finish() {
	var seq moitessier.Cursor
	if a.conn.finished() {
		if outq, err := a.conn.unacked(); err == nil {
			seq = a.take(a.written - int64(outq))
		}
	}
	a.pending = nil
	if seq != 0 {
		_ = a.l.AckDelivered(seq)
	}
}

// tcpAcks polls the SSE streams that have messages their client's TCP
// stack has not acknowledged, every interval, on one goroutine that runs
// only while there are some.
type tcpAcks struct {
	every time.Duration
	done  <-chan struct{} // the Server's end
	group *streamGroup    // the Server's streams

	mu      sync.Mutex
	streams []*sseAck
	running bool
}

func (p *tcpAcks) add(a *sseAck) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.streams = append(p.streams, a)
	if !p.running {
		p.running = true
		p.group.add() // the caller is a stream, so the count is not zero
		go p.loop()
	}
}

func (p *tcpAcks) loop() {
	defer p.group.done()
	t := time.NewTicker(p.every)
	defer t.Stop()
	var batch []*sseAck
	for {
		select {
		case <-p.done:
			p.mu.Lock()
			p.running = false
			p.streams = nil
			p.mu.Unlock()
			return
		case <-t.C:
		}
		p.mu.Lock()
		batch, p.streams = p.streams, batch[:0]
		p.mu.Unlock()
		var keep []*sseAck
		for _, a := range batch {
			if a.poll() {
				keep = append(keep, a)
			}
		}
		clear(batch)
		p.mu.Lock()
		p.streams = append(p.streams, keep...)
		if len(p.streams) == 0 {
			p.running = false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
	}
}

// viaProxy reports whether a request says it came through a proxy, whose
// TCP stack, not the client's, acknowledges what the hub writes.
func viaProxy(r *http.Request) bool {
	h := r.Header
	return h.Get("Forwarded") != "" || h.Get("X-Forwarded-For") != "" || h.Get("X-Real-Ip") != "" || h.Get("Via") != ""
}
