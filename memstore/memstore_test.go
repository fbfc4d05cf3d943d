package memstore_test

import (
	"testing"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/memstore"
	"github.com/likestripes/moitessier/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		New: func(testing.TB) moitessier.Store { return memstore.New() },
	})
}

func BenchmarkWorkloads(b *testing.B) {
	storetest.Benchmark(b, storetest.Harness{
		New: func(testing.TB) moitessier.Store { return memstore.New() },
	})
}
