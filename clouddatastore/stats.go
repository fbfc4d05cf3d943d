package clouddatastore

import (
	"context"
	"sync/atomic"

	pb "cloud.google.com/go/datastore/apiv1/datastorepb"
	"google.golang.org/grpc"
)

// Stats counts what a store asked of Datastore since it was opened: the
// RPCs, and the entity reads, writes and deletes that Datastore bills. They
// are counted from the requests and responses themselves (a gRPC
// interceptor on the store's own client), so they include every retry;
// with Config.Client they stay zero but for Transactions, Aborts and
// Retries.
type Stats struct {
	// RPCs counts every Datastore RPC sent (Lookup, RunQuery, Commit,
	// BeginTransaction, Rollback…), including failed ones.
	RPCs int64
	// Lookups, Queries and Commits count those RPCs.
	Lookups, Queries, Commits int64
	// Found and Missing count the entities lookups found and did not find.
	Found, Missing int64
	// Entities counts the full entities queries returned; Keys the keys
	// that keys-only queries returned (billed as free small operations).
	Entities, Keys int64
	// Writes and Deletes count the entities committed (put, deleted).
	Writes, Deletes int64
	// Transactions counts transactions begun; Aborts those that conflicted
	// with another and were run again or given up; Retries the runs again.
	Transactions, Aborts, Retries int64

	emptyOrKeys int64 // queries billed one read: keys-only, or full and empty
}

// Reads is the number of entity reads Datastore bills for these counts:
// every entity a lookup found or did not find (a conservative count:
// missing entities may be free), every entity a query returned, and one
// for each query that returned no entity or only keys.
func (s Stats) Reads() int64 { return s.Found + s.Missing + s.Entities + s.emptyOrKeys }

// Sub returns the counts of s less those of o: what happened between two
// readings.
func (s Stats) Sub(o Stats) Stats {
	return Stats{
		RPCs: s.RPCs - o.RPCs, Lookups: s.Lookups - o.Lookups, Queries: s.Queries - o.Queries, Commits: s.Commits - o.Commits,
		Found: s.Found - o.Found, Missing: s.Missing - o.Missing, Entities: s.Entities - o.Entities, Keys: s.Keys - o.Keys,
		Writes: s.Writes - o.Writes, Deletes: s.Deletes - o.Deletes,
		Transactions: s.Transactions - o.Transactions, Aborts: s.Aborts - o.Aborts, Retries: s.Retries - o.Retries,
		emptyOrKeys: s.emptyOrKeys - o.emptyOrKeys,
	}
}

type counters struct {
	rpcs, lookups, queries, commits atomic.Int64
	found, missing, entities, keys  atomic.Int64
	emptyOrKeys                     atomic.Int64
	writes, deletes                 atomic.Int64
	txns, aborts, retries           atomic.Int64
}

// Stats returns the store's counts so far.
func (s *Store) Stats() Stats {
	c := &s.stats
	return Stats{
		RPCs: c.rpcs.Load(), Lookups: c.lookups.Load(), Queries: c.queries.Load(), Commits: c.commits.Load(),
		Found: c.found.Load(), Missing: c.missing.Load(), Entities: c.entities.Load(), Keys: c.keys.Load(),
		Writes: c.writes.Load(), Deletes: c.deletes.Load(),
		Transactions: c.txns.Load(), Aborts: c.aborts.Load(), Retries: c.retries.Load(),
		emptyOrKeys: c.emptyOrKeys.Load(),
	}
}

// intercept counts one unary RPC of the Datastore client.
func (c *counters) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	c.rpcs.Add(1)
	err := invoker(ctx, method, req, reply, cc, opts...)
	switch r := reply.(type) {
	case *pb.LookupResponse:
		c.lookups.Add(1)
		if err == nil {
			c.found.Add(int64(len(r.GetFound())))
			c.missing.Add(int64(len(r.GetMissing())))
		}
	case *pb.RunQueryResponse:
		c.queries.Add(1)
		if err == nil {
			b := r.GetBatch()
			n := int64(len(b.GetEntityResults()))
			if b.GetEntityResultType() == pb.EntityResult_FULL {
				c.entities.Add(n)
				if n == 0 {
					c.emptyOrKeys.Add(1)
				}
			} else {
				c.keys.Add(n)
				c.emptyOrKeys.Add(1)
			}
		}
	case *pb.CommitResponse:
		c.commits.Add(1)
		if q, ok := req.(*pb.CommitRequest); ok && err == nil {
			for _, m := range q.GetMutations() {
				if m.GetDelete() != nil {
					c.deletes.Add(1)
				} else {
					c.writes.Add(1)
				}
			}
		}
	}
	return err
}
