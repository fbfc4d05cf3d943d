-- Moitessier schema, version 8.
--
-- join_listener writes the versions of a new listener's concrete scopes
-- itself, in one statement after it inserted the scopes, as random numbers
-- drawn as bump_scope_version draws them (migration 7), instead of having
-- the row trigger on listener_scopes write them one by one, a call of the
-- trigger's PL/pgSQL function for each scope.
--
-- The trigger still runs for every other change of listener_scopes: for
-- every delete, and for every insert but join_listener's, so that a process
-- running an earlier version of this package, which may insert a
-- listener's scopes itself, still changes their versions. join_listener
-- marks its own insert by setting moitessier.scope_versions to 'written'
-- for the insert's duration only (transaction-local, set back to '' right
-- after it, so that nothing later in a caller's transaction escapes the
-- trigger); the insert trigger's WHEN condition skips the call then. A
-- pattern scope (wild) has no version, and its rows no longer call the
-- function to learn it.
DROP TRIGGER listener_scopes_version ON {{schema}}.listener_scopes;

CREATE TRIGGER listener_scopes_version AFTER INSERT ON {{schema}}.listener_scopes
	FOR EACH ROW WHEN (NOT NEW.wild AND current_setting('moitessier.scope_versions', true) IS DISTINCT FROM 'written')
	EXECUTE FUNCTION {{schema}}.bump_scope_version();

CREATE TRIGGER listener_scopes_version_deleted AFTER DELETE ON {{schema}}.listener_scopes
	FOR EACH ROW WHEN (NOT OLD.wild)
	EXECUTE FUNCTION {{schema}}.bump_scope_version();

-- join_listener as in migration 5, but for the versions.
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
		PERFORM set_config('moitessier.scope_versions', 'written', true);
		INSERT INTO {{schema}}.listener_scopes (listener, scope, wild)
			SELECT l_id, x.s, x.w FROM unnest(l_scopes, l_wild) AS x(s, w);
		PERFORM set_config('moitessier.scope_versions', '', true);
		INSERT INTO {{schema}}.scope_versions AS v (scope, version)
			SELECT x.s, 1 + ((floor(random() * 2147483648)::bigint << 31) | floor(random() * 2147483648)::bigint)
			FROM unnest(l_scopes, l_wild) AS x(s, w) WHERE NOT x.w
			ON CONFLICT (scope) DO UPDATE SET version = EXCLUDED.version;
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
