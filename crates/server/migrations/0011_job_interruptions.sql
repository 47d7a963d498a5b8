-- Attempts of a job that ended by no fault of its own: its node was lost,
-- or it was preempted. They do not use up the job's `retries` (which count
-- its own failures only); a job is requeued after an interruption up to a
-- fixed bound (the server's MAX_INTERRUPTIONS).
ALTER TABLE jobs ADD COLUMN interrupted INTEGER NOT NULL DEFAULT 0;
