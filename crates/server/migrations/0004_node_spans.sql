-- Capacity history, and the GPU model of each task.
--
-- One row per stretch of time a node spent in one state
-- with one inventory. The open span (end_ms NULL) is the current one. Spans
-- of a node never overlap; they are written in the same transaction as the
-- node change that causes them (register, drain, undrain, lease expiry,
-- return). The economics report reads capacity from here.
CREATE TABLE node_spans (
    node_id    INTEGER NOT NULL REFERENCES nodes(id),
    start_ms   INTEGER NOT NULL,
    end_ms     INTEGER,
    state      TEXT    NOT NULL CHECK (state IN ('ready', 'draining', 'down')),
    gpu_model  TEXT,
    gpus       INTEGER NOT NULL,
    PRIMARY KEY (node_id, start_ms),
    CHECK (end_ms IS NULL OR end_ms >= start_ms)
);
CREATE UNIQUE INDEX node_spans_open ON node_spans (node_id) WHERE end_ms IS NULL;
CREATE INDEX node_spans_by_time ON node_spans (start_ms);

-- Nodes of a store created before this migration: their current state, from
-- their last heartbeat (history before that was not recorded).
INSERT INTO node_spans (node_id, start_ms, end_ms, state, gpu_model, gpus)
    SELECT id, last_heartbeat_ms, NULL, state, gpu_model, gpus FROM nodes;

-- The GPU model a task ran on, fixed at its start: bills stay right when a
-- node later re-registers with other GPUs.
ALTER TABLE tasks ADD COLUMN gpu_model TEXT;
UPDATE tasks SET gpu_model = (SELECT gpu_model FROM nodes WHERE nodes.id = tasks.node_id);
