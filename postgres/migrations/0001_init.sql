-- Moitessier schema, version 1. {{schema}} is replaced by the quoted schema
-- name. Text columns use the "C" collation: byte order, as Go compares.
-- Times are Unix nanoseconds (bigint), so Go's time.Time round-trips exactly.

-- meta holds one row. pattern_version grows whenever a listener with a
-- wildcard pattern is created or deleted, so that every process can tell in
-- its Match query whether its cached pattern index is current.
CREATE TABLE {{schema}}.meta (
	one             boolean PRIMARY KEY DEFAULT true CHECK (one),
	pattern_version bigint  NOT NULL DEFAULT 0
);
INSERT INTO {{schema}}.meta DEFAULT VALUES;

-- head is the sequence number of the listener's newest message. Append
-- increments it under the row lock, in the transaction that inserts the
-- messages, so the messages of one listener commit in sequence order.
CREATE TABLE {{schema}}.listeners (
	id         text COLLATE "C" PRIMARY KEY,
	type       integer NOT NULL,
	person     text COLLATE "C" NOT NULL,
	client     text COLLATE "C" NOT NULL,
	scopes     text[] COLLATE "C" NOT NULL,
	created_ns bigint NOT NULL,
	head       bigint NOT NULL DEFAULT 0
);

-- listener_scopes indexes each listener's scopes: concrete scopes are found
-- by the partial index, wildcard patterns are loaded into each process.
CREATE TABLE {{schema}}.listener_scopes (
	listener text COLLATE "C" NOT NULL REFERENCES {{schema}}.listeners (id) ON DELETE CASCADE,
	scope    text COLLATE "C" NOT NULL,
	wild     boolean NOT NULL,
	PRIMARY KEY (listener, scope)
);
CREATE INDEX listener_scopes_exact ON {{schema}}.listener_scopes (scope) WHERE NOT wild;
CREATE INDEX listener_scopes_wild ON {{schema}}.listener_scopes (listener) WHERE wild;

CREATE TABLE {{schema}}.subscribers (
	listener  text COLLATE "C" NOT NULL REFERENCES {{schema}}.listeners (id) ON DELETE CASCADE,
	person    text COLLATE "C" NOT NULL,
	client    text COLLATE "C" NOT NULL,
	cursor    bigint NOT NULL,
	joined_ns bigint NOT NULL,
	lease_ns  bigint NOT NULL,
	PRIMARY KEY (listener, person, client)
);
CREATE INDEX subscribers_lease ON {{schema}}.subscribers (lease_ns);

-- messages has no foreign key to listeners: a key check per inserted row
-- would cost a lookup each; the listener's row is locked by Append anyway,
-- and Leave and Sweep delete a listener's messages with it. body is bytea so
-- that any text, NUL bytes included, is kept byte for byte.
CREATE TABLE {{schema}}.messages (
	listener   text COLLATE "C" NOT NULL,
	seq        bigint NOT NULL,
	dispatch   text COLLATE "C" NOT NULL,
	scope      text COLLATE "C" NOT NULL,
	sender     text COLLATE "C" NOT NULL,
	body       bytea NOT NULL,
	created_ns bigint NOT NULL,
	PRIMARY KEY (listener, seq)
);
CREATE INDEX messages_created ON {{schema}}.messages (created_ns);

-- dispatch_keys records idempotency keys with the messages their batch
-- wrote, so that a retried dispatch returns them.
CREATE TABLE {{schema}}.dispatch_keys (
	sender      text COLLATE "C" NOT NULL,
	key         text COLLATE "C" NOT NULL,
	recorded_ns bigint NOT NULL,
	listeners   text[] COLLATE "C" NOT NULL DEFAULT '{}',
	seqs        bigint[] NOT NULL DEFAULT '{}',
	PRIMARY KEY (sender, key)
);
CREATE INDEX dispatch_keys_recorded ON {{schema}}.dispatch_keys (recorded_ns);
