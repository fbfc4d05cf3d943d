-- Moitessier schema, version 11.
--
-- leave_listener is Store.Leave in one call, so in one round trip and one
-- transaction, where it was four or five statements, with BEGIN and
-- COMMIT, sent one after the other. It runs the same statements, in the
-- same order, each with a snapshot of its own (read committed):
--
--   1. the subscriber's row is deleted, if the listener is the
--      incarnation l_created (its created_ns; NULL: any); without one,
--      subscribed is false and nothing else is done;
--   2. the listener's row is locked, so that a join under way, whose
--      foreign key check holds a KEY SHARE lock on it, either commits
--      first, and the next statement sees its subscriber, or fails its
--      check after the deletion (and its caller runs it again);
--   3. the listener is deleted if no subscriber is left, and its rows in
--      listener_scopes with it (which changes its concrete scopes'
--      versions: see version 10);
--   4. its messages are deleted, and the pattern version raised if one of
--      its scopes is a pattern.
--
-- It returns whether the subscriber was there, whether the listener was
-- deleted, and then its scopes, its creation time, whether one of its
-- scopes is a pattern, and the tag of its concrete scopes' rows (0 for
-- none, or for rows made before version 10), which its caller's process
-- uses to bring its cached Match answers up to date.
CREATE FUNCTION {{schema}}.leave_listener(l_id text, s_person text, s_client text, l_created bigint,
	OUT subscribed boolean, OUT deleted boolean, OUT lscopes text[], OUT lcreated bigint, OUT wild boolean,
	OUT tag bigint)
RETURNS record LANGUAGE plpgsql VOLATILE AS $moitessier$
BEGIN
	deleted := false;
	wild := false;
	tag := 0;
	DELETE FROM {{schema}}.subscribers WHERE listener = l_id AND person = s_person AND client = s_client
		AND (l_created IS NULL OR EXISTS (SELECT 1 FROM {{schema}}.listeners WHERE id = l_id AND created_ns = l_created));
	subscribed := FOUND;
	IF NOT subscribed THEN
		RETURN;
	END IF;
	PERFORM 1 FROM {{schema}}.listeners WHERE id = l_id FOR UPDATE;
	DELETE FROM {{schema}}.listeners l WHERE l.id = l_id
			AND NOT EXISTS (SELECT 1 FROM {{schema}}.subscribers s WHERE s.listener = l.id)
		RETURNING l.scopes, l.created_ns,
			EXISTS (SELECT 1 FROM {{schema}}.listener_scopes x WHERE x.listener = l.id AND x.wild),
			coalesce((SELECT x.tag FROM {{schema}}.listener_scopes x WHERE x.listener = l.id AND NOT x.wild LIMIT 1), 0)
		INTO lscopes, lcreated, wild, tag;
	deleted := FOUND;
	IF NOT deleted THEN
		wild := false;
		tag := 0;
		RETURN;
	END IF;
	DELETE FROM {{schema}}.messages WHERE listener = l_id;
	IF wild THEN
		UPDATE {{schema}}.meta SET pattern_version = pattern_version + 1;
	END IF;
END
$moitessier$;
