package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/likestripes/moitessier"
	"github.com/likestripes/moitessier/clouddatastore"
	"github.com/likestripes/moitessier/memstore"
	"github.com/likestripes/moitessier/postgres"
	"github.com/likestripes/moitessier/sqlite"
)

const storeHelp = `the store: a SQLite file path (or sqlite:PATH), a postgres:// or postgresql:// URL, datastore://PROJECT[/DATABASE][?namespace=NS] (Firestore in Datastore mode), or "memory" (env MOITESSIER_STORE)`

// openedStore is a store with its kind and how to release it. Give a hub
// its Store, not the openedStore: the wrapper has only the Store methods
// and hides the store's optional interfaces, moitessier.MatchCacher among
// them, without which a hub on Postgres matches every dispatch's scope
// with a query of its own, one more round trip.
type openedStore struct {
	moitessier.Store
	kind  string // "sqlite", "postgres", "datastore" or "memory"
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

// isDatastore reports whether a store spec names Firestore in Datastore mode.
func isDatastore(spec string) bool { return strings.HasPrefix(spec, "datastore://") }

// isShared reports whether a store spec names a database server or
// service, shared by processes, rather than a local file or memory.
func isShared(spec string) bool { return isPostgres(spec) || isDatastore(spec) }

// datastoreConfig parses datastore://PROJECT[/DATABASE][?namespace=NS]
// [&pubsub=off][&create=false]. Credentials are Application Default
// Credentials, or the emulators named by DATASTORE_EMULATOR_HOST and
// PUBSUB_EMULATOR_HOST.
func datastoreConfig(spec string) (clouddatastore.Config, error) {
	u, err := url.Parse(spec)
	if err != nil || u.Scheme != "datastore" || u.Host == "" || u.User != nil || u.Fragment != "" {
		return clouddatastore.Config{}, fmt.Errorf("store %q: want datastore://PROJECT[/DATABASE][?namespace=NS]", spec)
	}
	cfg := clouddatastore.Config{Project: u.Host, Database: strings.Trim(u.Path, "/")}
	if strings.Contains(cfg.Database, "/") {
		return cfg, fmt.Errorf("store %q: the path is one database ID", spec)
	}
	for k, v := range u.Query() {
		switch {
		case k == "namespace" && len(v) == 1:
			cfg.Namespace = v[0]
		case k == "pubsub" && len(v) == 1 && (v[0] == "off" || v[0] == "on"):
			cfg.NoPubSub = v[0] == "off"
		case k == "create" && len(v) == 1 && (v[0] == "false" || v[0] == "true"):
			cfg.NoCreate = v[0] == "false"
		default:
			return cfg, fmt.Errorf("store %q: unknown or repeated parameter %q (want namespace, pubsub=off or create=false)", spec, k)
		}
	}
	return cfg, nil
}

// openStore opens the store a spec names. schema, if not "", is the
// PostgreSQL schema, or for Datastore the namespace when the spec names
// none. durableJoins is postgres.Config.DurableJoins.
func openStore(ctx context.Context, spec, schema string, durableJoins bool) (*openedStore, error) {
	switch {
	case spec == "memory" || spec == "mem":
		return &openedStore{Store: memstore.New(), kind: "memory"}, nil
	case isDatastore(spec):
		cfg, err := datastoreConfig(spec)
		if err != nil {
			return nil, err
		}
		if cfg.Namespace == "" {
			cfg.Namespace = schema
		}
		s, err := clouddatastore.New(ctx, cfg)
		if err != nil {
			return nil, err
		}
		where := cfg.Project
		if cfg.Database != "" {
			where += "/" + cfg.Database
		}
		if cfg.Namespace != "" {
			where += " namespace " + cfg.Namespace
		}
		return &openedStore{Store: s, kind: "datastore", where: where}, nil
	case isPostgres(spec):
		s, err := postgres.New(ctx, postgresConfig(spec, schema, durableJoins))
		if err != nil {
			return nil, redactErr(err, spec)
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

// postgresConfig is the configuration of a Postgres store opened from the
// command line.
func postgresConfig(dsn, schema string, durableJoins bool) postgres.Config {
	return postgres.Config{DSN: dsn, Schema: schema, DurableJoins: durableJoins}
}

// redactDSN hides the passwords of a connection string: the user:pass@
// of a URL, and password= or sslpassword= in its query or in the
// keyword=value form ("host=db password=x").
func redactDSN(dsn string) string {
	dsn = passwordParam.ReplaceAllString(dsn, "${1}xxxxx")
	scheme := strings.Index(dsn, "://")
	if scheme < 0 {
		return dsn
	}
	rest := dsn[scheme+3:]
	authority, _, _ := strings.Cut(rest, "?")
	at := strings.LastIndex(authority, "@")
	if at < 0 {
		return dsn
	}
	if user, _, ok := strings.Cut(authority[:at], ":"); ok {
		return dsn[:scheme+3] + user + ":xxxxx" + rest[at:]
	}
	return dsn
}

// passwordParam matches a password parameter and its value (quoted or not).
var passwordParam = regexp.MustCompile(`(?i)((?:^|[?&\s])(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|[^&\s]*)`)

// redactedError is an error whose text has the store's password hidden,
// and which still wraps the original for errors.Is.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// redactErr hides the passwords of dsn in err's text.
func redactErr(err error, dsn string) error {
	if err == nil {
		return nil
	}
	msg := redactDSN(err.Error())
	if u, uerr := url.Parse(dsn); uerr == nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
			msg = strings.ReplaceAll(msg, url.QueryEscape(pw), "xxxxx")
		}
		for _, k := range []string{"password", "sslpassword"} {
			if pw := u.Query().Get(k); pw != "" {
				msg = strings.ReplaceAll(msg, pw, "xxxxx")
			}
		}
	}
	return &redactedError{msg: msg, err: err}
}
