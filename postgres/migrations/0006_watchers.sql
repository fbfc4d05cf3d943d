-- Moitessier schema, version 6.
--
-- watchers holds a row for each running Store.Watch: its id, and the
-- backend pid of its LISTEN connection (Sweep, and a Watch that starts,
-- delete the rows whose pid no server process has). must_notify tells an
-- append whether to send its NOTIFY: only when a watcher other than self
-- (the appending store's own Watch, whose hub publishes what it dispatches
-- itself; '' for none) exists. It takes the schema's gate, a shared
-- transaction-level advisory lock keyed by the oid of the schema's meta
-- table (which holds one row), and then
-- looks, in a statement with a snapshot taken after the lock (the function
-- is VOLATILE; at a stricter isolation level, whose snapshot is the
-- transaction's, it always says yes). A Watch that starts writes its
-- row, takes the gate exclusively (so it waits for every append that may
-- have looked before its row was there), and only then reads the heads of
-- the listeners: an append either saw its row and notifies it, or
-- committed before it read the heads.
CREATE TABLE {{schema}}.watchers (
	id  text PRIMARY KEY,
	pid integer NOT NULL
);

CREATE FUNCTION {{schema}}.must_notify(self text) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $moitessier$
BEGIN
	IF current_setting('transaction_isolation') <> 'read committed' THEN
		RETURN true;
	END IF;
	PERFORM pg_advisory_xact_lock_shared(tableoid::integer, 0) FROM {{schema}}.meta;
	RETURN EXISTS (SELECT 1 FROM {{schema}}.watchers WHERE id <> self);
END
$moitessier$;
