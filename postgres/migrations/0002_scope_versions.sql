-- Moitessier schema, version 2.
--
-- scope_versions records, for each concrete scope of some listener, the last
-- transaction that created a listener on it (its 64-bit transaction id,
-- which is never reused). Match reads it with the listeners, so a process
-- can cache the answer; Append of a batch made from a cached answer checks
-- it, with meta.pattern_version, and writes nothing if a listener was
-- created on the scope since (see Store.MatchCached). A creation updates the
-- row under its lock in the creating transaction. Sweep removes the rows of
-- scopes that no listener has.
CREATE TABLE {{schema}}.scope_versions (
	scope   text COLLATE "C" PRIMARY KEY,
	version bigint NOT NULL
);
