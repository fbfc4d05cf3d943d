package sqlite_test

import (
	"testing"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/sqlite"
	"github.com/likestripes/moitessier/storetest"
)

var harness = storetest.Harness{
	New: func(tb testing.TB) moitessier.Store { return mustOpen(tb, dbPath(tb)) },
	Reopen: func(tb testing.TB, s moitessier.Store) moitessier.Store {
		return reopen(tb, s.(*sqlite.Store))
	},
}

func TestConformance(t *testing.T) { storetest.Run(t, harness) }

// BenchmarkWorkloads runs the standard workloads through a hub.
func BenchmarkWorkloads(b *testing.B) { storetest.Benchmark(b, harness) }
