-- Each event names the attempt (`run`) it belongs to, and an attempt's
-- STARTED event is no longer stored: it is read from the attempt's task
-- rows (same time, nodes and devices), which the start writes anyway. One
-- row less per placement decision; the loop's commit was a fifth events.
--
-- A job's history reads in (run, STARTED first, id) order: SUBMITTED and
-- whatever happens while pending belong to the attempt before (0 for
-- none), and everything an attempt causes is written after its start.
--
-- Existing rows: the run is the number of STARTED events up to and
-- including the row; a stored STARTED event whose attempt has task rows is
-- dropped (it would be read twice), the others are kept as they are.

ALTER TABLE job_events ADD COLUMN run INTEGER NOT NULL DEFAULT 0;

UPDATE job_events SET run = (
    SELECT COUNT(*) FROM job_events s
    WHERE s.job_id = job_events.job_id AND s.kind = 'STARTED' AND s.id <= job_events.id
);

DELETE FROM job_events
WHERE kind = 'STARTED'
  AND EXISTS (SELECT 1 FROM tasks t WHERE t.job_id = job_events.job_id AND t.run = job_events.run);
