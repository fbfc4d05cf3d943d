//go:build !unix

package postgres_test

import (
	"testing"
	"time"
)

// benchCPU is not measured here.
func benchCPU() time.Duration { return 0 }

// reportCPU reports nothing where benchCPU is not measured.
func reportCPU(*testing.B, time.Duration) {}
