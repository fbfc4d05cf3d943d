-- Listeners, their scopes and subscribers, messages and idempotency keys.
-- Times are unix nanoseconds; the zero time.Time is stored as the smallest
-- INTEGER (-9223372036854775808).

CREATE TABLE listeners (
	id      TEXT    NOT NULL PRIMARY KEY,
	type    INTEGER NOT NULL,
	person  TEXT    NOT NULL,
	client  TEXT    NOT NULL,
	created INTEGER NOT NULL,
	-- head is the sequence number of the newest message written (0: none).
	head    INTEGER NOT NULL DEFAULT 0
) STRICT, WITHOUT ROWID;

CREATE TABLE listener_scopes (
	listener_id TEXT    NOT NULL REFERENCES listeners (id) ON DELETE CASCADE,
	ord         INTEGER NOT NULL,
	scope       TEXT    NOT NULL,
	PRIMARY KEY (listener_id, ord)
) STRICT, WITHOUT ROWID;

CREATE TABLE subscribers (
	listener_id   TEXT    NOT NULL REFERENCES listeners (id) ON DELETE CASCADE,
	person        TEXT    NOT NULL,
	client        TEXT    NOT NULL,
	cursor        INTEGER NOT NULL,
	joined        INTEGER NOT NULL,
	lease_expires INTEGER NOT NULL,
	PRIMARY KEY (listener_id, person, client)
) STRICT, WITHOUT ROWID;

CREATE INDEX subscribers_lease_expires ON subscribers (lease_expires);

CREATE TABLE messages (
	listener_id TEXT    NOT NULL REFERENCES listeners (id) ON DELETE CASCADE,
	seq         INTEGER NOT NULL,
	dispatch    TEXT    NOT NULL,
	scope       TEXT    NOT NULL,
	sender      TEXT    NOT NULL,
	text        TEXT    NOT NULL,
	created     INTEGER NOT NULL,
	PRIMARY KEY (listener_id, seq)
) STRICT, WITHOUT ROWID;

-- A message's seq is its listener's head plus one; this keeps the head in
-- step, in the transaction of the insert.
CREATE TRIGGER messages_head AFTER INSERT ON messages BEGIN
	UPDATE listeners SET head = NEW.seq WHERE id = NEW.listener_id AND head < NEW.seq;
END;

-- refs lists the (listener_id, seq) of the messages a keyed batch wrote, in
-- entry order, encoded by the store (see encodeRefs).
CREATE TABLE idempotency_keys (
	sender   TEXT    NOT NULL,
	key      TEXT    NOT NULL,
	dispatch TEXT    NOT NULL,
	created  INTEGER NOT NULL,
	refs     BLOB    NOT NULL,
	PRIMARY KEY (sender, key)
) STRICT, WITHOUT ROWID;

CREATE INDEX idempotency_keys_created ON idempotency_keys (created);
