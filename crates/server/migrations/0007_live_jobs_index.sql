-- Recovery reads the live jobs (PENDING, RUNNING) through an index of
-- those alone: a job leaves it when it ends (ended_ms is set) and a start
-- does not touch it. The (state, id) index it replaces was rewritten by
-- every start (PENDING -> RUNNING: an entry deleted and one inserted),
-- ~1.2 µs of the loop's ~7 µs commit per decision, and no query used it:
-- listings page by id, and /metrics counts live jobs from the loop.
--
-- The index relies on `ended_ms IS NULL` for every live job (the loop sets
-- it with each state change); rows that say otherwise are repaired first.

UPDATE jobs SET ended_ms = NULL
WHERE (state = 'PENDING' OR state = 'RUNNING') AND ended_ms IS NOT NULL;

DROP INDEX jobs_by_state;
CREATE INDEX jobs_live ON jobs (id) WHERE ended_ms IS NULL;
