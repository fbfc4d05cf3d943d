package clouddatastore_test

import (
	"testing"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/clouddatastore"
	"github.com/likestripes/moitessier/storetest"
)

func TestConformance(t *testing.T) {
	needDatastore(t)
	storetest.Run(t, storetest.Harness{
		New: func(tb testing.TB) moitessier.Store { return mustStore(tb) },
		Reopen: func(tb testing.TB, s moitessier.Store) moitessier.Store {
			ds := s.(*clouddatastore.Store)
			_ = ds.Close()
			return openStore(tb, ds.Namespace())
		},
		Share: func(tb testing.TB, s moitessier.Store) moitessier.Store {
			return openStore(tb, s.(*clouddatastore.Store).Namespace())
		},
	})
}
