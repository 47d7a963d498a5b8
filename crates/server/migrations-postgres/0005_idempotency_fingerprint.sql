-- See ../migrations/0014_idempotency_fingerprint.sql.
ALTER TABLE jobs ADD COLUMN idem_hash TEXT;
