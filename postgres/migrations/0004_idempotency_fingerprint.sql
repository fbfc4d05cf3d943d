-- The fingerprint of the request an idempotency key was given for (see
-- moitessier.Fingerprint). Keys recorded before this migration have an
-- empty one, which matches any request. A constant default adds the column
-- without rewriting the table.
ALTER TABLE {{schema}}.dispatch_keys ADD COLUMN fingerprint bytea NOT NULL DEFAULT '\x'::bytea;
