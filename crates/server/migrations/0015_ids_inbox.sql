-- IDs come from the database, not from a process's counter: the leader
-- reserves a block of job (or node) ids with one conditional UPDATE
-- (`UPDATE ids SET next = next + n ... RETURNING`), so two leaders, even a
-- deposed one still running, never hand out the same id.
CREATE TABLE ids (
    name TEXT PRIMARY KEY,
    next INTEGER NOT NULL
);
INSERT INTO ids (name, next) SELECT 'job', COALESCE(MAX(id), 0) + 1 FROM jobs;
INSERT INTO ids (name, next) SELECT 'node', COALESCE(MAX(id), 0) + 1 FROM nodes;

-- Requests a follower replica took for the scheduling loop (submissions,
-- cancels, agents' heartbeats, ...): durable here first, then applied by
-- the leader, which writes `answer` in the same transaction as the
-- request's effects (so a request is applied once, whoever leads).
CREATE TABLE inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    body TEXT NOT NULL,
    answer TEXT,
    answered_ms INTEGER
);
CREATE INDEX inbox_open ON inbox (id) WHERE answered_ms IS NULL;
CREATE INDEX inbox_answered ON inbox (answered_ms) WHERE answered_ms IS NOT NULL;
