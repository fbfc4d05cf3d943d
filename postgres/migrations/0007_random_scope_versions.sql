-- Moitessier schema, version 7.
--
-- A scope's version becomes a random number instead of the writing
-- transaction's id. A join that creates a listener with concrete scopes
-- commits asynchronously (see Config.DurableJoins): a crash of the server
-- can lose it after a hub read the scope's new version, and PostgreSQL then
-- hands the lost transaction's id out again, so a later join on the scope
-- could write the very version the hub cached, with another listener set.
-- A random version does not come back with the transaction id: 62 bits,
-- from two calls of random() of 31 bits each (every version of PostgreSQL
-- gives random() at least that precision), so that two versions of a scope
-- are equal by chance with probability about 2^-62. Versions are only ever
-- compared for equality, and 0 stays what a scope with no row reads as: a
-- version is at least 1.
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
		VALUES (s, 1 + ((floor(random() * 2147483648)::bigint << 31) | floor(random() * 2147483648)::bigint))
		ON CONFLICT (scope) DO UPDATE SET version = EXCLUDED.version;
	RETURN NULL;
END
$moitessier$;
