//go:build !linux

package moitessierhttp

import "net"

// closeWatcher is not available here: the caller reads conn itself to
// notice that the client left.
type closeWatcher struct{}

func (w *closeWatcher) watch(conn net.Conn, gone func()) (stop func(), ok bool) { return nil, false }

func (w *closeWatcher) close() {}
