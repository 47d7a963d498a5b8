-- See ../migrations/0015_ids_inbox.sql.
CREATE TABLE ids (
    name TEXT PRIMARY KEY,
    next BIGINT NOT NULL
);
INSERT INTO ids (name, next) SELECT 'job', COALESCE(MAX(id), 0) + 1 FROM jobs;
INSERT INTO ids (name, next) SELECT 'node', COALESCE(MAX(id), 0) + 1 FROM nodes;

CREATE TABLE inbox (
    id BIGSERIAL PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    body TEXT NOT NULL,
    answer TEXT,
    answered_ms BIGINT
);
CREATE INDEX inbox_open ON inbox (id) WHERE answered_ms IS NULL;
CREATE INDEX inbox_answered ON inbox (answered_ms) WHERE answered_ms IS NOT NULL;
