package moitessierhttp

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
)

// closeWatcher tells hijacked SSE streams that their client closed the
// connection, and WebSockets that their client sent something, for all of
// them at once: one epoll instance and one goroutine, rather than a
// goroutine per connection blocked in a read (its stack was a fifth of an
// idle stream's memory). The hub's own poller is not involved: a socket
// may be in several epoll sets. Each Server owns one, started with its
// first hijacked connection and stopped once the Server is closed and its
// streams have ended.
type closeWatcher struct {
	once sync.Once
	epfd int
	wake [2]int // a pipe whose read end is watch 0: a byte on it stops loop
	done chan struct{}

	mu      sync.Mutex
	err     error // the watcher cannot watch (failed, or stopped)
	next    uint64
	gone    map[uint64]watchFunc // by watch
	started bool
}

// watchFunc is what a watch calls when its event comes.
type watchFunc struct {
	f    func()
	keep bool // a read watch, armed again by its owner; else called once
}

var errWatcherClosed = errors.New("close watcher stopped")

// watch arranges for gone to be called, on another goroutine, when the
// client of conn closes or resets the connection. It returns a function
// that ends the watch, to be called before conn is closed, and false if conn
// cannot be watched so (not a TCP socket, or the watcher is stopped): the
// caller then reads conn itself.
func (w *closeWatcher) watch(conn net.Conn, gone func()) (stop func(), ok bool) {
	rc, ok := w.rawConn(conn)
	if !ok {
		return nil, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return nil, false
	}
	w.next++
	id := w.next
	// The event carries the watch's number, never reused, rather than the
	// descriptor, which a later connection may get once this one is closed.
	ev := syscall.EpollEvent{
		Events: syscall.EPOLLRDHUP | syscall.EPOLLHUP | syscall.EPOLLERR | syscall.EPOLLONESHOT,
		Fd:     int32(uint32(id)),
		Pad:    int32(uint32(id >> 32)),
	}
	var addErr error
	if err := rc.Control(func(fd uintptr) { addErr = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev) }); err != nil || addErr != nil {
		return nil, false
	}
	w.gone[id] = watchFunc{f: gone}
	return func() { w.unwatch(id, rc) }, true
}

// rawConn returns conn's raw connection, starting the watcher if it has
// not started; false if conn has none (not a socket).
func (w *closeWatcher) rawConn(conn net.Conn) (syscall.RawConn, bool) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, false
	}
	w.once.Do(w.start)
	return rc, true
}

// unwatch ends the watch id of rc.
func (w *closeWatcher) unwatch(id uint64, rc syscall.RawConn) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.gone, id)
	if w.err == nil { // else the epoll descriptor is closed, or closing
		_ = rc.Control(func(fd uintptr) { _ = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil) })
	}
}

// readWatch is a watch for something to read on a connection: armed, it
// calls its function once, when the connection has bytes to read, or its
// client closed it or reset it; then its owner reads (see read), and arms
// it again. The function runs on the watcher's goroutine: it must not block.
type readWatch struct {
	w     *closeWatcher
	id    uint64
	rc    syscall.RawConn
	added bool // in the epoll set
}

// watchRead returns a read watch of conn, not armed yet, that calls ready;
// false if conn cannot be watched so (not a TCP socket, or the watcher is
// stopped): the caller then reads conn itself.
func (w *closeWatcher) watchRead(conn net.Conn, ready func()) (*readWatch, bool) {
	rc, ok := w.rawConn(conn)
	if !ok {
		return nil, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return nil, false
	}
	w.next++
	w.gone[w.next] = watchFunc{f: ready, keep: true}
	return &readWatch{w: w, id: w.next, rc: rc}, true
}

// arm has the watch call its function once more, at once if there is
// something to read already. Its owner must not read after it.
func (r *readWatch) arm() error {
	w := r.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	if _, ok := w.gone[r.id]; !ok {
		return errWatcherClosed
	}
	ev := syscall.EpollEvent{
		Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT,
		Fd:     int32(uint32(r.id)),
		Pad:    int32(uint32(r.id >> 32)),
	}
	op := syscall.EPOLL_CTL_MOD
	if !r.added {
		op = syscall.EPOLL_CTL_ADD
	}
	var ctlErr error
	if err := r.rc.Control(func(fd uintptr) { ctlErr = syscall.EpollCtl(w.epfd, op, int(fd), &ev) }); err != nil {
		return err
	}
	if ctlErr != nil {
		return ctlErr
	}
	r.added = true
	return nil
}

// stop ends the watch; to be called before the connection is closed.
func (r *readWatch) stop() { r.w.unwatch(r.id, r.rc) }

// errWouldBlock is a read that found nothing to read.
var errWouldBlock = errors.New("nothing to read yet")

// read reads what the connection holds into p, without waiting:
// errWouldBlock if nothing, io.EOF once the client closed its side. It
// fails, as the connection's Read does, past the read deadline.
func (r *readWatch) read(p []byte) (int, error) {
	var (
		n   int
		err error
	)
	if cerr := r.rc.Read(func(fd uintptr) bool {
		for {
			n, err = syscall.Read(int(fd), p)
			if err != syscall.EINTR {
				return true
			}
		}
	}); cerr != nil {
		return 0, cerr
	}
	switch {
	case err == syscall.EAGAIN:
		return 0, errWouldBlock
	case err != nil:
		return 0, err
	case n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	return n, nil
}

func (w *closeWatcher) start() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return // stopped before it started
	}
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		w.err = err
		return
	}
	if err := syscall.Pipe2(w.wake[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		syscall.Close(epfd)
		w.err = err
		return
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN} // watch 0
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, w.wake[0], &ev); err != nil {
		syscall.Close(epfd)
		syscall.Close(w.wake[0])
		syscall.Close(w.wake[1])
		w.err = err
		return
	}
	w.epfd = epfd
	w.gone = map[uint64]watchFunc{}
	w.done = make(chan struct{})
	w.started = true
	go w.loop()
}

// close stops the watcher's goroutine and closes its descriptors. Watches
// still open are forgotten: their streams end with the Server.
func (w *closeWatcher) close() {
	w.once.Do(func() {}) // a watcher not yet started never starts
	w.mu.Lock()
	started := w.started && w.err == nil
	if w.err == nil {
		w.err = errWatcherClosed
	}
	w.mu.Unlock()
	if !started {
		return
	}
	_, _ = syscall.Write(w.wake[1], []byte{0})
	<-w.done
	w.mu.Lock()
	syscall.Close(w.epfd)
	syscall.Close(w.wake[0])
	syscall.Close(w.wake[1])
	w.gone = nil
	w.mu.Unlock()
}

func (w *closeWatcher) loop() {
	defer close(w.done)
	events := make([]syscall.EpollEvent, 256)
	for {
		n, err := syscall.EpollWait(w.epfd, events, -1)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			// Not expected; streams still end when a write fails.
			w.mu.Lock()
			if w.err == nil {
				w.err = err
			}
			w.mu.Unlock()
			return
		}
		for _, ev := range events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if id == 0 {
				return // close
			}
			w.mu.Lock()
			wf := w.gone[id]
			if !wf.keep {
				delete(w.gone, id)
			}
			w.mu.Unlock()
			if wf.f != nil {
				wf.f()
			}
		}
	}
}
