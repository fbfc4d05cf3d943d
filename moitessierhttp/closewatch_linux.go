package moitessierhttp

import (
	"errors"
	"net"
	"sync"
	"syscall"
)

// closeWatcher tells hijacked SSE streams that their client closed the
// connection, for all of them at once: one epoll instance and one
// goroutine, rather than a goroutine per stream blocked in a read (its
// stack was a fifth of an idle stream's memory). The hub's own poller is
// not involved: a socket may be in several epoll sets.
type closeWatcher struct {
	once sync.Once
	epfd int
	err  error

	mu   sync.Mutex
	next uint64
	gone map[uint64]func() // by watch: called once, when the client leaves
}

var closes closeWatcher

// watchClose arranges for gone to be called, on another goroutine, when the
// client of conn closes or resets the connection. It returns a function
// that ends the watch, to be called before conn is closed, and false if conn
// cannot be watched so (not a TCP socket, say): the caller then reads conn
// itself.
func watchClose(conn net.Conn, gone func()) (stop func(), ok bool) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, false
	}
	w := &closes
	w.once.Do(w.start)
	w.mu.Lock()
	if w.err != nil {
		w.mu.Unlock()
		return nil, false
	}
	w.next++
	id := w.next
	w.gone[id] = gone
	w.mu.Unlock()
	forget := func() {
		w.mu.Lock()
		delete(w.gone, id)
		w.mu.Unlock()
	}
	// The event carries the watch's number, never reused, rather than the
	// descriptor, which a later connection may get once this one is closed.
	ev := syscall.EpollEvent{
		Events: syscall.EPOLLRDHUP | syscall.EPOLLHUP | syscall.EPOLLERR | syscall.EPOLLONESHOT,
		Fd:     int32(uint32(id)),
		Pad:    int32(uint32(id >> 32)),
	}
	var addErr error
	if err := rc.Control(func(fd uintptr) { addErr = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev) }); err != nil || addErr != nil {
		forget()
		return nil, false
	}
	return func() {
		forget()
		_ = rc.Control(func(fd uintptr) { _ = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil) })
	}, true
}

func (w *closeWatcher) start() {
	w.epfd, w.err = syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if w.err != nil {
		return
	}
	w.gone = map[uint64]func(){}
	go w.loop()
}

func (w *closeWatcher) loop() {
	events := make([]syscall.EpollEvent, 256)
	for {
		n, err := syscall.EpollWait(w.epfd, events, -1)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			// Not expected; streams still end when a write fails.
			w.mu.Lock()
			w.err = err
			w.mu.Unlock()
			return
		}
		for _, ev := range events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			w.mu.Lock()
			gone := w.gone[id]
			delete(w.gone, id)
			w.mu.Unlock()
			if gone != nil {
				gone()
			}
		}
	}
}
