-- Moitessier schema, version 5.
--
-- join_listener is Store.Join in one statement, so in one round trip: it
-- stores the listener unless it exists (with its scopes, raising the
-- pattern version for a wildcard pattern), adds the subscriber unless it
-- exists (or extends its lease), and checks the quota of whatever it
-- created, under the person's transaction-level advisory lock, in
-- statements of their own, each with a snapshot taken after the lock
-- (the function is VOLATILE and runs at READ COMMITTED): every process's
-- joins for one person count in turn, each seeing the ones committed
-- before. A join that creates nothing takes no lock and counts nothing.
--
-- The arguments: the listener (l_*; l_wild tells which of its scopes are
-- patterns), the subscriber (s_*), the quota's limits (0: none; q_type is
-- the limit of the listener's type), and the advisory lock keys of the
-- listener's person (l_key) and the subscriber's (s_key).
--
-- Past a limit it raises SQLSTATE MQ001 with the message 'listeners',
-- 'type' or 'subscriptions', and the statement writes nothing. It returns
-- no row when the listener was deleted between finding it and joining it:
-- nothing is written, and the caller runs it again, which creates it anew.
CREATE FUNCTION {{schema}}.join_listener(
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
