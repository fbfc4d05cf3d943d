-- Moitessier schema, version 6.
--
-- watchers holds a row for each running Store.Watch: its id, and the backend
-- pid of its LISTEN connection (Sweep, and a Watch that starts, delete the
-- rows whose pid no server process has).
--
-- must_notify tells an append whether to send its NOTIFY: only when a
-- watcher other than self exists (self is the Watch of the hub whose
-- Dispatch made the append, which publishes it itself, or '-' for none). It
-- takes the schema's gate, a shared transaction-level advisory lock keyed by
-- the oid of the schema's meta table (which holds one row), and then looks,
-- in a statement with a snapshot taken after the lock (the function is
-- VOLATILE). A Watch that starts writes its row, takes the gate exclusively
-- (so it waits for every append that may have looked before its row was
-- there), and only then reads the heads of the listeners: an append either
-- saw its row and notifies it, or committed before it read the heads. The
-- appends that hold the gate lock their listeners before they take it, and
-- wait for nothing after: they pass, as locked, the count of the rows their
-- UPDATE wrote, which the server computes, and so finishes the UPDATE,
-- before it calls the function.
--
-- It says yes without looking when self is '' (an append in a transaction
-- that spans round trips, which could hold the gate for long and wait for
-- other locks while it does) or at a stricter isolation level than READ
-- COMMITTED, where the statement's snapshot would be the transaction's.
CREATE TABLE {{schema}}.watchers (
	id  text PRIMARY KEY,
	pid integer NOT NULL
);

CREATE FUNCTION {{schema}}.must_notify(self text, locked bigint) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $moitessier$
BEGIN
	IF self = '' OR current_setting('transaction_isolation') <> 'read committed' THEN
		RETURN true;
	END IF;
	PERFORM pg_advisory_xact_lock_shared(tableoid::integer, 0) FROM {{schema}}.meta;
	RETURN EXISTS (SELECT 1 FROM {{schema}}.watchers WHERE id <> self);
END
$moitessier$;
