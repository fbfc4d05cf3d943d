//go:build !unix

package main

import "time"

// processCPU returns -1: this platform has no getrusage.
func processCPU() time.Duration { return -1 }
