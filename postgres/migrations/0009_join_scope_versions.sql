-- Moitessier schema, version 9.
--
-- A scope's row in scope_versions keeps, beside its version, the version
-- it replaced (prev; 0 when the write created the row, as no row reads as
-- version 0), both written under the row's lock.
--
-- join_listener writes the versions of a listener's concrete scopes itself
-- when it creates the listener, in one statement after its insert into
-- listener_scopes, and returns what that statement wrote: the scopes
-- (sscopes), each one's version before and after (sprev, snew; in no
-- particular order, the three arrays in the same one), and the schema's
-- pattern version as the call read or raised it (pver); all NULL when the
-- call created nothing. The rows' locks are held until the transaction
-- ends, so no other creation or deletion on a scope comes between its two
-- versions. A process that has the scope's answer cached at versions pver
-- and sprev, or knows that sprev is 0 and no pattern matches the scope at
-- pver, knows the scope's listeners at pver and snew without asking:
-- those of its answer and the new one.
--
-- The trigger of versions 2 and 7 goes on writing the versions for every
-- other insert or delete on listener_scopes, whoever makes it. It leaves
-- out the rows of the listener whose id join_listener names, for its own
-- transaction, in the setting moitessier.join (the listener is new, and no
-- one else's until the transaction commits). The function is otherwise
-- version 8's.
ALTER TABLE {{schema}}.scope_versions ADD COLUMN prev bigint NOT NULL DEFAULT 0;

CREATE OR REPLACE FUNCTION {{schema}}.bump_scope_version() RETURNS trigger LANGUAGE plpgsql AS $moitessier$
DECLARE
	s text;
BEGIN
	IF TG_OP = 'DELETE' THEN
		IF OLD.wild THEN
			RETURN OLD;
		END IF;
		s := OLD.scope;
	ELSE
		IF NEW.wild OR NEW.listener = current_setting('moitessier.join', true) THEN
			RETURN NEW;
		END IF;
		s := NEW.scope;
	END IF;
	INSERT INTO {{schema}}.scope_versions AS v (scope, version, prev)
		VALUES (s, 1 + ((floor(random() * 2147483648)::bigint << 31) | floor(random() * 2147483648)::bigint), 0)
		ON CONFLICT (scope) DO UPDATE SET prev = v.version, version = EXCLUDED.version;
	RETURN NULL;
END
$moitessier$;

DROP FUNCTION {{schema}}.join_listener(text, integer, text, text, text[], boolean[], bigint, text, text, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint);

CREATE FUNCTION {{schema}}.join_listener(
	l_id text, l_type integer, l_person text, l_client text, l_scopes text[], l_wild boolean[], l_created bigint,
	s_person text, s_client text, s_joined bigint, s_lease bigint, s_cursor bigint,
	q_listeners bigint, q_type bigint, q_subscriptions bigint, l_key bigint, s_key bigint,
	OUT created boolean, OUT ltype integer, OUT lperson text, OUT lclient text, OUT lscopes text[],
	OUT lcreated bigint, OUT lhead bigint, OUT cur bigint, OUT joined bigint, OUT lease bigint,
	OUT sscopes text[], OUT sprev bigint[], OUT snew bigint[], OUT pver bigint)
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
		PERFORM set_config('moitessier.join', l_id, true);
		INSERT INTO {{schema}}.listener_scopes (listener, scope, wild)
			SELECT l_id, x.s, x.w FROM unnest(l_scopes, l_wild) AS x(s, w);
		IF cardinality(l_scopes) = 1 AND NOT l_wild[1] THEN
			-- The usual listener, of one scope: the cheaper statement.
			INSERT INTO {{schema}}.scope_versions AS sv (scope, version, prev)
				VALUES (l_scopes[1], 1 + ((floor(random() * 2147483648)::bigint << 31) | floor(random() * 2147483648)::bigint), 0)
				ON CONFLICT (scope) DO UPDATE SET prev = sv.version, version = EXCLUDED.version
				RETURNING ARRAY[sv.scope], ARRAY[sv.prev], ARRAY[sv.version] INTO sscopes, sprev, snew;
		ELSE
			WITH u AS (
				INSERT INTO {{schema}}.scope_versions AS sv (scope, version, prev)
					SELECT x.s, 1 + ((floor(random() * 2147483648)::bigint << 31) | floor(random() * 2147483648)::bigint), 0
					FROM unnest(l_scopes, l_wild) AS x(s, w) WHERE NOT x.w
					ON CONFLICT (scope) DO UPDATE SET prev = sv.version, version = EXCLUDED.version
					RETURNING sv.scope, sv.prev, sv.version)
			SELECT array_agg(u.scope), array_agg(u.prev), array_agg(u.version) INTO sscopes, sprev, snew FROM u;
		END IF;
		IF true = ANY (l_wild) THEN
			UPDATE {{schema}}.meta SET pattern_version = pattern_version + 1 RETURNING pattern_version INTO pver;
		ELSE
			SELECT m.pattern_version INTO pver FROM {{schema}}.meta m;
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
