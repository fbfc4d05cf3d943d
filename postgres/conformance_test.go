package postgres_test

import (
	"testing"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/postgres"
	"github.com/likestripes/moitessier/storetest"
)

func TestConformance(t *testing.T) {
	needPostgres(t)
	storetest.Run(t, storetest.Harness{
		New: func(tb testing.TB) moitessier.Store { return mustStore(tb) },
		Reopen: func(tb testing.TB, s moitessier.Store) moitessier.Store {
			ps := s.(*postgres.Store)
			_ = ps.Close()
			return openStore(tb, ps.Schema())
		},
		Share: func(tb testing.TB, s moitessier.Store) moitessier.Store {
			return openStore(tb, s.(*postgres.Store).Schema())
		},
	})
}
