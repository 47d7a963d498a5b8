-- Nodes, tasks (one row per task per attempt), and the job fields the
-- scheduling loop and agents need.
ALTER TABLE jobs ADD COLUMN env TEXT NOT NULL DEFAULT '{}';     -- JSON object of strings
ALTER TABLE jobs ADD COLUMN workdir TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN max_runtime_s INTEGER;              -- NULL = no limit
ALTER TABLE jobs ADD COLUMN retries INTEGER NOT NULL DEFAULT 0; -- attempts allowed after the first fails
ALTER TABLE jobs ADD COLUMN run INTEGER NOT NULL DEFAULT 0;     -- attempts started so far
ALTER TABLE jobs ADD COLUMN started_ms INTEGER;                 -- start of the current attempt

CREATE TABLE nodes (
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
    state              TEXT    NOT NULL CHECK (state IN ('ready', 'draining', 'down')),
    registered_ms      INTEGER NOT NULL,
    last_heartbeat_ms  INTEGER NOT NULL
);

-- A task of one attempt (run) of a job. ASSIGNED: committed, not yet
-- confirmed by the agent; RUNNING: the agent runs it; KILLING: the agent
-- must stop it (cancel, preemption, a failed gang member); EXITED, KILLED,
-- LOST: over. Only ASSIGNED and RUNNING tasks of a RUNNING job's current
-- run hold resources.
CREATE TABLE tasks (
    job_id      INTEGER NOT NULL REFERENCES jobs(id),
    run         INTEGER NOT NULL,
    idx         INTEGER NOT NULL,
    node_id     INTEGER NOT NULL REFERENCES nodes(id),
    gpus        INTEGER NOT NULL,  -- device bitmask on the node
    state       TEXT    NOT NULL CHECK (state IN ('ASSIGNED', 'RUNNING', 'KILLING', 'EXITED', 'KILLED', 'LOST')),
    started_ms  INTEGER NOT NULL,
    ended_ms    INTEGER,
    exit_code   INTEGER,
    reason      TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (job_id, run, idx)
);
CREATE INDEX tasks_by_node ON tasks (node_id, state);
