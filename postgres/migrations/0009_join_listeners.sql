-- Moitessier schema, version 9.
--
-- join_listeners runs several joins in one transaction, so in one commit:
-- the store sends the joins that queue while others are under way (see
-- Store.Join). Each is a call of join_listener in a block of its own (a
-- subtransaction), so that what fails one join undoes that join alone:
-- past a quota its row says 'quota' and the limit's name, as the message
-- of join_listener's MQ001 does; after any other error, or when the
-- listener was deleted under it, 'retry', and the store runs that join
-- again alone, which reports the error, if it persists, as a join alone
-- does. The rows come in the joins' order, numbered from 1 (i); a row
-- that is not 'ok' holds no listener. The scopes of every join are in one
-- array, l_scopes (with l_wild), each join's count of them in l_nscopes.
-- The transaction commits asynchronously when every join that succeeded
-- created its listener and may (l_async), as join_listener's caller does
-- for one join. It waits at most lock_wait for a lock (its
-- lock_timeout): a join that would wait longer fails so, and it and the
-- joins after it are not tried ('retry'), to run again alone, rather than
-- hold up the batch.
CREATE FUNCTION {{schema}}.join_listeners(
	l_id text[], l_type integer[], l_person text[], l_client text[], l_scopes text[], l_wild boolean[],
	l_nscopes integer[], l_created bigint[],
	s_person text[], s_client text[], s_joined bigint[], s_lease bigint[], s_cursor bigint[],
	q_listeners bigint[], q_type bigint[], q_subscriptions bigint[], l_key bigint[], s_key bigint[], l_async boolean[],
	lock_wait text,
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
						q_listeners[k], q_type[k], q_subscriptions[k], l_key[k], s_key[k]) j;
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
