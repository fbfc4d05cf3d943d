-- The fingerprint of the request an idempotency key was given for (see
-- moitessier.Fingerprint). Keys recorded before this migration have an
-- empty one, which matches any request.
ALTER TABLE idempotency_keys ADD COLUMN fingerprint BLOB NOT NULL DEFAULT x'';
