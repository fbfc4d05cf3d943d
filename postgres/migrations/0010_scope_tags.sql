-- Moitessier schema, version 10.
--
-- A listener's rows in listener_scopes carry a tag: a random number other
-- than 0 that the process creating the listener chooses (NULL in the rows
-- of older versions of this package). Adding such a row to a concrete
-- scope, or removing it, changes the scope's version by an exclusive or
-- with the tag. From a scope with no row (version 0) the version is then
-- the exclusive or of its listeners' tags: the process that creates a
-- listener knows what its join does to the versions, and can bring a
-- cached Match answer of the scope up to date itself, or make one for a
-- scope it believes no other listener has (see Store.Join). It only
-- believes: every dispatch from a cached answer checks its stamp, as
-- before, and one that is wrong costs that dispatch a Match.
--
-- A version comes back only with the same listeners, each with the tag of
-- the same creation (a listener made anew gets a new tag), or when the
-- exclusive ors of two sets of 64-bit random tags are equal by chance.
-- As before, a join that a crash of the server loses cannot have its
-- version come back with other listeners. A row without a tag sets the
-- scope's version to a random number, as version 7 did.
--
-- The trigger writes the version in one statement for both kinds of row.
-- Written as two, one for rows without a tag (with random()) and one
-- taking the tag as it is, joins going out together ran slower by half or
-- more in most runs measured, which the one statement did not.
--
-- join_listener and join_listeners take the tag as a last argument, which
-- defaults to NULL, so that the calls of older versions of this package
-- still find them; they are otherwise version 8's and version 9's.
ALTER TABLE {{schema}}.listener_scopes ADD COLUMN tag bigint;

CREATE OR REPLACE FUNCTION {{schema}}.bump_scope_version() RETURNS trigger LANGUAGE plpgsql AS $moitessier$
DECLARE
	s text;
	t bigint;
BEGIN
	IF TG_OP = 'DELETE' THEN
		IF OLD.wild THEN
			RETURN OLD;
		END IF;
		s := OLD.scope;
		t := OLD.tag;
	ELSE
		IF NEW.wild THEN
			RETURN NEW;
		END IF;
		s := NEW.scope;
		t := NEW.tag;
	END IF;
	INSERT INTO {{schema}}.scope_versions AS v (scope, version)
		VALUES (s, coalesce(t, 1 + ((floor(random() * 2147483648)::bigint << 31) | floor(random() * 2147483648)::bigint)))
		ON CONFLICT (scope) DO UPDATE
			SET version = CASE WHEN t IS NULL THEN EXCLUDED.version ELSE v.version # EXCLUDED.version END;
	RETURN NULL;
END
$moitessier$;

DROP FUNCTION {{schema}}.join_listeners(text[], integer[], text[], text[], text[], boolean[], integer[], bigint[],
	text[], text[], bigint[], bigint[], bigint[], bigint[], bigint[], bigint[], bigint[], bigint[], boolean[], text);
DROP FUNCTION {{schema}}.join_listener(text, integer, text, text, text[], boolean[], bigint,
	text, text, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint);

CREATE FUNCTION {{schema}}.join_listener(
	l_id text, l_type integer, l_person text, l_client text, l_scopes text[], l_wild boolean[], l_created bigint,
	s_person text, s_client text, s_joined bigint, s_lease bigint, s_cursor bigint,
	q_listeners bigint, q_type bigint, q_subscriptions bigint, l_key bigint, s_key bigint,
	l_tag bigint DEFAULT NULL,
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
		INSERT INTO {{schema}}.listener_scopes (listener, scope, wild, tag)
			SELECT l_id, x.s, x.w, l_tag FROM unnest(l_scopes, l_wild) AS x(s, w);
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

CREATE FUNCTION {{schema}}.join_listeners(
	l_id text[], l_type integer[], l_person text[], l_client text[], l_scopes text[], l_wild boolean[],
	l_nscopes integer[], l_created bigint[],
	s_person text[], s_client text[], s_joined bigint[], s_lease bigint[], s_cursor bigint[],
	q_listeners bigint[], q_type bigint[], q_subscriptions bigint[], l_key bigint[], s_key bigint[], l_async boolean[],
	lock_wait text, l_tag bigint[] DEFAULT NULL,
	OUT i integer, OUT status text, OUT created boolean, OUT ltype integer, OUT lperson text, OUT lclient text,
	OUT lscopes text[], OUT lcreated bigint, OUT lhead bigint, OUT cur bigint, OUT joined bigint, OUT lease bigint)
RETURNS SETOF record LANGUAGE plpgsql VOLATILE AS $moitessier$
DECLARE
	off integer := 0;
	async boolean := true;
	waited boolean := false;
	n integer;
BEGIN
	PERFORM set_config('lock_timeout', lock_wait, true);
	FOR k IN 1 .. coalesce(array_length(l_id, 1), 0) LOOP
		i := k;
		n := l_nscopes[k];
		status := 'retry';
		IF NOT waited THEN
			BEGIN
				SELECT j.created, j.ltype, j.lperson, j.lclient, j.lscopes, j.lcreated, j.lhead, j.cur, j.joined, j.lease
					INTO created, ltype, lperson, lclient, lscopes, lcreated, lhead, cur, joined, lease
					FROM {{schema}}.join_listener(l_id[k], l_type[k], l_person[k], l_client[k],
						l_scopes[off + 1 : off + n], l_wild[off + 1 : off + n], l_created[k],
						s_person[k], s_client[k], s_joined[k], s_lease[k], s_cursor[k],
						q_listeners[k], q_type[k], q_subscriptions[k], l_key[k], s_key[k], l_tag[k]) j;
				IF FOUND THEN
					status := 'ok';
				END IF;
			EXCEPTION
				WHEN SQLSTATE 'MQ001' THEN
					status := 'quota ' || SQLERRM;
				WHEN lock_not_available THEN
					waited := true;
				WHEN OTHERS THEN
					NULL;
			END;
		END IF;
		off := off + n;
		IF status = 'ok' THEN
			IF NOT (created AND l_async[k]) THEN
				async := false;
			END IF;
		ELSE
			created := false;
			ltype := 0;
			lperson := '';
			lclient := '';
			lscopes := '{}';
			lcreated := 0;
			lhead := 0;
			cur := 0;
			joined := 0;
			lease := 0;
		END IF;
		RETURN NEXT;
	END LOOP;
	IF async THEN
		PERFORM set_config('synchronous_commit', 'off', true);
	END IF;
END
$moitessier$;
