-- A submission may carry an idempotency key (the `Idempotency-Key` header;
-- the CLI makes one per command): the same key from the same tenant within
-- a day answers the job it already made instead of making another, so a
-- client that retries, or fails over to another server replica mid-request,
-- creates each job once. The loop keeps the last day's keys in memory (read
-- back from here at recovery); the index serves that read.
ALTER TABLE jobs ADD COLUMN idem_key TEXT;
CREATE INDEX jobs_idem ON jobs (submitted_ms) WHERE idem_key IS NOT NULL;
