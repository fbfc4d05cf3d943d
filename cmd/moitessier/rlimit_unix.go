//go:build unix

package main

import "syscall"

// raiseOpenFiles raises the soft limit on open files (RLIMIT_NOFILE) to the
// hard limit, so that a hub, or the bench's clients, can hold many
// connections. It returns the limit in force.
func raiseOpenFiles() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, err
		}
	}
	return lim.Cur, nil
}
