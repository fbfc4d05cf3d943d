package moitessierhttp

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// tcpConn asks the kernel about a TCP connection the hub writes to.
type tcpConn struct{ rc syscall.RawConn }

// newTCPConn returns conn's kernel view, if conn is a TCP socket.
func newTCPConn(conn net.Conn) (tcpConn, bool) {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return tcpConn{}, false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return tcpConn{}, false
	}
	c := tcpConn{rc}
	if _, err := c.unacked(); err != nil {
		return tcpConn{}, false
	}
	return c, true
}

// unacked returns how many of the bytes written to the socket the peer has
// not acknowledged yet.
func (c tcpConn) unacked() (int, error) {
	var (
		n    int
		ierr error
	)
	if err := c.rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); err != nil {
		return 0, err
	}
	return n, ierr
}

// finished reports whether the peer closed its side cleanly, with a FIN
// and no reset: the connection waits for the hub's close (CLOSE_WAIT).
func (c tcpConn) finished() bool {
	var (
		info *unix.TCPInfo
		ierr error
	)
	if err := c.rc.Control(func(fd uintptr) { info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil || ierr != nil {
		return false
	}
	return info.State == tcpCloseWait
}

// tcpCloseWait is the kernel's TCP_CLOSE_WAIT state.
const tcpCloseWait = 8
