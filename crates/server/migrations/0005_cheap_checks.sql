-- The hot tables, rebuilt with the same columns, rows and indexes but
-- cheaper constraints. SQLite evaluates `x IN ('a', 'b', ...)` in a CHECK
-- by building a temporary b-tree of the list for every row written: one
-- start decision (a job update and a task insert) paid ~6 µs for it, half
-- of the loop's commit. The same checks as `=` chains cost nothing.
-- `tasks` becomes WITHOUT ROWID: its primary key is the only way it is
-- addressed, so one b-tree per task instead of two.
--
-- Runs in the migration's transaction. The new children point at the new
-- parents, so dropping the old tables leaves no row without its parent;
-- renaming a parent renames the references to it.

CREATE TABLE jobs_new (
    id            INTEGER PRIMARY KEY,
    tenant_id     INTEGER NOT NULL REFERENCES tenants(id),
    name          TEXT    NOT NULL,
    command       TEXT    NOT NULL,        -- JSON array of strings
    tasks         INTEGER NOT NULL,
    cpu_milli     INTEGER NOT NULL,
    memory_mib    INTEGER NOT NULL,
    num_gpu       INTEGER NOT NULL,
    gpu_milli     INTEGER NOT NULL,
    gpu_models    TEXT    NOT NULL,        -- JSON array; empty = any
    class         TEXT    NOT NULL CHECK (class = 'guaranteed' OR class = 'on-demand' OR class = 'spot'),
    state         TEXT    NOT NULL CHECK (state = 'PENDING' OR state = 'RUNNING' OR state = 'COMPLETED'
                                          OR state = 'FAILED' OR state = 'CANCELLED' OR state = 'PREEMPTED'),
    submitted_ms  INTEGER NOT NULL,
    ended_ms      INTEGER,
    env           TEXT    NOT NULL DEFAULT '{}',
    workdir       TEXT    NOT NULL DEFAULT '',
    max_runtime_s INTEGER,
    retries       INTEGER NOT NULL DEFAULT 0,
    run           INTEGER NOT NULL DEFAULT 0,
    started_ms    INTEGER
);
INSERT INTO jobs_new (id, tenant_id, name, command, tasks, cpu_milli, memory_mib, num_gpu, gpu_milli,
                      gpu_models, class, state, submitted_ms, ended_ms, env, workdir, max_runtime_s,
                      retries, run, started_ms)
    SELECT id, tenant_id, name, command, tasks, cpu_milli, memory_mib, num_gpu, gpu_milli,
           gpu_models, class, state, submitted_ms, ended_ms, env, workdir, max_runtime_s,
           retries, run, started_ms FROM jobs;

CREATE TABLE nodes_new (
    id                 INTEGER PRIMARY KEY,
    name               TEXT    NOT NULL UNIQUE,
    addr               TEXT    NOT NULL DEFAULT '',
    gpu_model          TEXT,                        -- NULL for a CPU-only node
    gpus               INTEGER NOT NULL CHECK (gpus BETWEEN 0 AND 16),
    gpu_memory_mib     INTEGER NOT NULL DEFAULT 0,
    cpu_milli          INTEGER NOT NULL CHECK (cpu_milli >= 0),
    memory_mib         INTEGER NOT NULL CHECK (memory_mib >= 0),
    rack               TEXT    NOT NULL DEFAULT '',
    labels             TEXT    NOT NULL DEFAULT '{}', -- JSON object of strings
    state              TEXT    NOT NULL CHECK (state = 'ready' OR state = 'draining' OR state = 'down'),
    registered_ms      INTEGER NOT NULL,
    last_heartbeat_ms  INTEGER NOT NULL
);
INSERT INTO nodes_new SELECT id, name, addr, gpu_model, gpus, gpu_memory_mib, cpu_milli, memory_mib,
                             rack, labels, state, registered_ms, last_heartbeat_ms FROM nodes;

CREATE TABLE tasks_new (
    job_id      INTEGER NOT NULL REFERENCES jobs_new(id),
    run         INTEGER NOT NULL,
    idx         INTEGER NOT NULL,
    node_id     INTEGER NOT NULL REFERENCES nodes_new(id),
    gpus        INTEGER NOT NULL,  -- device bitmask on the node
    state       TEXT    NOT NULL CHECK (state = 'ASSIGNED' OR state = 'RUNNING' OR state = 'KILLING'
                                        OR state = 'EXITED' OR state = 'KILLED' OR state = 'LOST'),
    started_ms  INTEGER NOT NULL,
    ended_ms    INTEGER,
    exit_code   INTEGER,
    reason      TEXT    NOT NULL DEFAULT '',
    gpu_model   TEXT,
    PRIMARY KEY (job_id, run, idx)
) WITHOUT ROWID;
INSERT INTO tasks_new SELECT job_id, run, idx, node_id, gpus, state, started_ms, ended_ms, exit_code,
                             reason, gpu_model FROM tasks;

CREATE TABLE node_spans_new (
    node_id    INTEGER NOT NULL REFERENCES nodes_new(id),
    start_ms   INTEGER NOT NULL,
    end_ms     INTEGER,
    state      TEXT    NOT NULL CHECK (state = 'ready' OR state = 'draining' OR state = 'down'),
    gpu_model  TEXT,
    gpus       INTEGER NOT NULL,
    PRIMARY KEY (node_id, start_ms),
    CHECK (end_ms IS NULL OR end_ms >= start_ms)
);
INSERT INTO node_spans_new SELECT node_id, start_ms, end_ms, state, gpu_model, gpus FROM node_spans;

-- Unchanged, but it points at `jobs`: rebuilt to point at the new one (a
-- parent dropped with children left is a foreign key violation).
CREATE TABLE job_events_new (
    id       INTEGER PRIMARY KEY,
    job_id   INTEGER NOT NULL REFERENCES jobs_new(id),
    at_ms    INTEGER NOT NULL,
    kind     TEXT    NOT NULL,
    detail   TEXT    NOT NULL DEFAULT ''
);
INSERT INTO job_events_new SELECT id, job_id, at_ms, kind, detail FROM job_events;

DROP TABLE node_spans;
DROP TABLE tasks;
DROP TABLE job_events;
DROP TABLE jobs;
DROP TABLE nodes;
ALTER TABLE jobs_new RENAME TO jobs;
ALTER TABLE nodes_new RENAME TO nodes;
ALTER TABLE tasks_new RENAME TO tasks;
ALTER TABLE node_spans_new RENAME TO node_spans;
ALTER TABLE job_events_new RENAME TO job_events;

CREATE INDEX jobs_by_tenant ON jobs (tenant_id, id);
CREATE INDEX jobs_by_state ON jobs (state, id);
CREATE INDEX job_events_by_job ON job_events (job_id, id);
CREATE INDEX tasks_by_node ON tasks (node_id, state);
CREATE UNIQUE INDEX node_spans_open ON node_spans (node_id) WHERE end_ms IS NULL;
CREATE INDEX node_spans_by_time ON node_spans (start_ms);
