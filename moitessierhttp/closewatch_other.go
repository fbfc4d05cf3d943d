//go:build !linux

package moitessierhttp

import (
	"errors"
	"net"
)

// closeWatcher is not available here: the caller reads conn itself to
// notice that the client left.
type closeWatcher struct{}

func (w *closeWatcher) watch(conn net.Conn, gone func()) (stop func(), ok bool) { return nil, false }

func (w *closeWatcher) close() {}

// readWatch is not available here: see closeWatcher.
type readWatch struct{}

func (w *closeWatcher) watchRead(conn net.Conn, ready func()) (*readWatch, bool) { return nil, false }

func (r *readWatch) arm() error                 { return errWouldBlock }
func (r *readWatch) stop()                      {}
func (r *readWatch) read(p []byte) (int, error) { return 0, errWouldBlock }

var errWouldBlock = errors.New("nothing to read yet")
