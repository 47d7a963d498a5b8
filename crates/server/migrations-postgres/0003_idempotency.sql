-- Idempotency keys of submissions; see ../migrations/0013_idempotency.sql.
ALTER TABLE jobs ADD COLUMN idem_key TEXT;
CREATE INDEX jobs_idem ON jobs (submitted_ms) WHERE idem_key IS NOT NULL;
