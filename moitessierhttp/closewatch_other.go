//go:build !linux

package moitessierhttp

import "net"

// watchClose is not available here: the caller reads conn itself to notice
// that the client left.
func watchClose(conn net.Conn, gone func()) (stop func(), ok bool) { return nil, false }
