//go:build !linux

package moitessierhttp

import "net"

// tcpConn would ask the kernel about a TCP connection; here it cannot, so
// SSE streams take their evidence of receipt from the client's next
// request only.
type tcpConn struct{}

func newTCPConn(conn net.Conn) (tcpConn, bool) { return tcpConn{}, false }
func (tcpConn) unacked() (int, error)          { return 0, nil }
func (tcpConn) finished() bool                 { return false }
