//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package sqlite

import "os"

// vfs is the SQLite VFS of every connection: the platform's default.
const vfs = ""

// lockFile creates the lock file but takes no lock: this platform has no
// flock, so keeping to one process is left to the caller.
func lockFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
}
