package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/memstore"
	"github.com/likestripes/moitessier/postgres"
	"github.com/likestripes/moitessier/sqlite"
)

const storeHelp = `the store: a SQLite file path (or sqlite:PATH), a postgres:// or postgresql:// URL, or "memory" (env MOITESSIER_STORE)`

// openedStore is a store with its kind and how to release it.
type openedStore struct {
	moitessier.Store
	kind  string // "sqlite", "postgres" or "memory"
	where string // the file, the database host, or ""
}

func (s *openedStore) Close() error {
	if c, ok := s.Store.(moitessier.Closer); ok {
		return c.Close()
	}
	return nil
}

// isPostgres reports whether a store spec names PostgreSQL.
func isPostgres(spec string) bool {
	return strings.HasPrefix(spec, "postgres://") || strings.HasPrefix(spec, "postgresql://")
}

// openStore opens the store a spec names. schema, if not "", is the
// PostgreSQL schema.
func openStore(ctx context.Context, spec, schema string) (*openedStore, error) {
	switch {
	case spec == "memory" || spec == "mem":
		return &openedStore{Store: memstore.New(), kind: "memory"}, nil
	case isPostgres(spec):
		s, err := postgres.New(ctx, postgres.Config{DSN: spec, Schema: schema})
		if err != nil {
			return nil, err
		}
		return &openedStore{Store: s, kind: "postgres", where: redactDSN(spec)}, nil
	case spec == "":
		return nil, errors.New("no store: pass --store or set MOITESSIER_STORE")
	}
	path := strings.TrimPrefix(spec, "sqlite:")
	s, err := sqlite.Open(ctx, path)
	if err != nil {
		if errors.Is(err, sqlite.ErrLocked) {
			return nil, fmt.Errorf("%w\n(a running hub holds %s; talk to it over HTTP with dispatch and listen, or stop it first)", err, path)
		}
		return nil, err
	}
	return &openedStore{Store: s, kind: "sqlite", where: s.Path()}, nil
}

// redactDSN hides the password of a connection URL.
func redactDSN(dsn string) string {
	at := strings.LastIndex(dsn, "@")
	scheme := strings.Index(dsn, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return dsn
	}
	userinfo := dsn[scheme+3 : at]
	if user, _, ok := strings.Cut(userinfo, ":"); ok {
		return dsn[:scheme+3] + user + ":***" + dsn[at:]
	}
	return dsn
}
