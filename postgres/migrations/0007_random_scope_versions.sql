-- Moitessier schema, version 7.
--
-- A scope's version becomes a random number instead of the writing
-- transaction's id. Joins of listeners with concrete scopes only commit
-- asynchronously (see Config.DurableJoins): a crash of the server can lose
-- such a join after a hub read the scope's new version, and PostgreSQL then
-- hands the lost transaction's id out again, so a later join on the scope
-- could write the very version the hub cached, with another listener set.
-- A random version (62 bits: random() has 52 of precision, so two versions
-- of a scope are equal by chance with probability 2^-52) does not come back
-- with the transaction id. Versions are only ever compared for equality, and
-- 0 stays what a scope with no row reads as: a version is at least 1.
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
		IF NEW.wild THEN
			RETURN NEW;
		END IF;
		s := NEW.scope;
	END IF;
	INSERT INTO {{schema}}.scope_versions AS v (scope, version)
		VALUES (s, 1 + floor(random() * 4611686018427387903)::bigint)
		ON CONFLICT (scope) DO UPDATE SET version = EXCLUDED.version;
	RETURN NULL;
END
$moitessier$;
