-- Moitessier schema, version 2.
--
-- scope_versions records, for each concrete scope of some listener, the last
-- transaction that created or deleted a listener on it (its transaction
-- id, which is never reused). Match reads it with the listeners, so a
-- process can cache the answer; Append of a batch made from a cached answer
-- checks it, with meta.pattern_version, and writes nothing if a listener
-- was created or deleted on the scope since (see Store.MatchCached).
--
-- A trigger on listener_scopes writes it, under the row's lock, in the
-- transaction that adds or removes the listener's scopes, so that every
-- writer keeps it, whatever version of this package it runs. Sweep removes
-- the rows of scopes that no listener has.
CREATE TABLE {{schema}}.scope_versions (
	scope   text COLLATE "C" PRIMARY KEY,
	version bigint NOT NULL
);

CREATE FUNCTION {{schema}}.bump_scope_version() RETURNS trigger LANGUAGE plpgsql AS $moitessier$
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
	INSERT INTO {{schema}}.scope_versions AS v (scope, version) VALUES (s, txid_current())
		ON CONFLICT (scope) DO UPDATE SET version = EXCLUDED.version;
	RETURN NULL;
END
$moitessier$;

CREATE TRIGGER listener_scopes_version AFTER INSERT OR DELETE ON {{schema}}.listener_scopes
	FOR EACH ROW EXECUTE FUNCTION {{schema}}.bump_scope_version();
