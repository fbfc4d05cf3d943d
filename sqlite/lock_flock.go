//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package sqlite

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// vfs is the SQLite VFS of every connection. The store is alone with its
// file (lockFile makes sure), so SQLite's own locks need not be seen by
// other processes: unix-excl takes one exclusive lock on the database for
// the process, at its first transaction, and keeps the WAL index in memory
// shared by the process's connections, where the default VFS calls fcntl
// several times in each transaction.
const vfs = "unix-excl"

// lockFile takes an exclusive, non-blocking advisory lock on path, creating
// the file if needed. The lock belongs to the open file: it is released when
// the returned file is closed, or when the process ends.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s is held: %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}
