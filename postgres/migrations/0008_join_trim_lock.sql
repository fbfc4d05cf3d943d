-- Moitessier schema, version 8.
--
-- join_listener takes its listener's trim lock shared, when the listener
-- exists, before it reads its head: a transaction-level advisory lock
-- keyed by the oid of the schema's meta table and a hash of the listener's
-- id (never 0, which is the key of must_notify's gate). A listener the
-- join creates is no one else's until it commits, and no sweep takes it
-- for doomed. The sweep's trim of doomed listeners (listeners whose every
-- subscriber's lease has ended) takes the lock exclusively, where it is
-- free, for the listeners it is about to trim, and only then, in a
-- statement of its own, checks that they are still doomed: no join of
-- them is under way, and one that renewed a lease after it read the head
-- has committed, so a message appended after that read is not trimmed. A
-- listener whose lock a join holds is left to the next sweep. Two
-- listeners whose ids hash alike share a lock: a join of one can put off
-- the other's trim, nothing more. The function is otherwise version 5's.
CREATE OR REPLACE FUNCTION {{schema}}.join_listener(
	l_id text, l_type integer, l_person text, l_client text, l_scopes text[], l_wild boolean[], l_created bigint,
	s_person text, s_client text, s_joined bigint, s_lease bigint, s_cursor bigint,
	q_listeners bigint, q_type bigint, q_subscriptions bigint, l_key bigint, s_key bigint,
	OUT created boolean, OUT ltype integer, OUT lperson text, OUT lclient text, OUT lscopes text[],
	OUT lcreated bigint, OUT lhead bigint, OUT cur bigint, OUT joined bigint, OUT lease bigint)
RETURNS SETOF record LANGUAGE plpgsql VOLATILE AS $moitessier$
DECLARE
	locked boolean := false;
	inserted boolean;
BEGIN
	INSERT INTO {{schema}}.listeners AS l (id, type, person, client, scopes, created_ns)
		VALUES (l_id, l_type, l_person, l_client, l_scopes, l_created)
		ON CONFLICT (id) DO NOTHING
		RETURNING l.type, l.person, l.client, l.scopes, l.created_ns, l.head
		INTO ltype, lperson, lclient, lscopes, lcreated, lhead;
	created := FOUND;
	IF created THEN
		INSERT INTO {{schema}}.listener_scopes (listener, scope, wild)
			SELECT l_id, x.s, x.w FROM unnest(l_scopes, l_wild) AS x(s, w);
		IF true = ANY (l_wild) THEN
			UPDATE {{schema}}.meta SET pattern_version = pattern_version + 1;
		END IF;
		IF q_listeners > 0 OR q_type > 0 THEN
			PERFORM pg_advisory_xact_lock(l_key);
			locked := true;
			IF q_listeners > 0 AND (SELECT count(*) FROM (
					SELECT 1 FROM {{schema}}.listeners WHERE person = l_person LIMIT q_listeners + 1) a) > q_listeners THEN
				RAISE EXCEPTION USING ERRCODE = 'MQ001', MESSAGE = 'listeners';
			END IF;
			IF q_type > 0 AND (SELECT count(*) FROM (
					SELECT 1 FROM {{schema}}.listeners WHERE person = l_person AND type = l_type LIMIT q_type + 1) b) > q_type THEN
				RAISE EXCEPTION USING ERRCODE = 'MQ001', MESSAGE = 'type';
			END IF;
		END IF;
	ELSE
		PERFORM pg_advisory_xact_lock_shared(tableoid::integer, coalesce(nullif(hashtext(l_id), 0), 1)) FROM {{schema}}.meta;
		SELECT l.type, l.person, l.client, l.scopes, l.created_ns, l.head
			INTO ltype, lperson, lclient, lscopes, lcreated, lhead
			FROM {{schema}}.listeners l WHERE l.id = l_id;
		IF NOT FOUND THEN
			RETURN; -- deleted since the insert found it
		END IF;
	END IF;
	-- A new subscriber's cursor is the listener's head: it hears what is
	-- written after it joined. An existing one keeps its cursor. If the
	-- listener is deleted after it was read, the foreign key check fails
	-- (23503) and the caller runs the join again.
	INSERT INTO {{schema}}.subscribers AS t (listener, person, client, cursor, joined_ns, lease_ns)
		VALUES (l_id, s_person, s_client, least(lhead, s_cursor), s_joined, s_lease)
		ON CONFLICT (listener, person, client) DO UPDATE
			SET lease_ns = greatest(t.lease_ns, EXCLUDED.lease_ns)
		RETURNING t.cursor, t.joined_ns, t.lease_ns, t.xmax = 0
		INTO cur, joined, lease, inserted;
	IF inserted AND q_subscriptions > 0 THEN
		IF NOT (created AND locked AND l_person = s_person) THEN
			PERFORM pg_advisory_xact_lock(s_key);
		END IF;
		IF (SELECT count(*) FROM (
				SELECT 1 FROM {{schema}}.subscribers WHERE person = s_person LIMIT q_subscriptions + 1) a) > q_subscriptions THEN
			RAISE EXCEPTION USING ERRCODE = 'MQ001', MESSAGE = 'subscriptions';
		END IF;
	END IF;
	RETURN NEXT;
END
$moitessier$;
