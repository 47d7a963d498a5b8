-- Suanli control-plane store, version 1.
CREATE TABLE tenants (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    weight      REAL    NOT NULL DEFAULT 1.0,
    created_ms  INTEGER NOT NULL
);

CREATE TABLE tokens (
    id          INTEGER PRIMARY KEY,
    hash        TEXT    NOT NULL UNIQUE,   -- SHA-256 of the secret, hex; the secret is never stored
    scope       TEXT    NOT NULL CHECK (scope IN ('admin', 'tenant', 'agent')),
    tenant_id   INTEGER REFERENCES tenants(id),
    name        TEXT    NOT NULL DEFAULT '',
    created_ms  INTEGER NOT NULL,
    revoked_ms  INTEGER,
    CHECK ((scope = 'tenant') = (tenant_id IS NOT NULL))
);

CREATE TABLE jobs (
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
    class         TEXT    NOT NULL CHECK (class IN ('guaranteed', 'on-demand', 'spot')),
    state         TEXT    NOT NULL CHECK (state IN ('PENDING', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED', 'PREEMPTED')),
    submitted_ms  INTEGER NOT NULL,
    ended_ms      INTEGER
);
CREATE INDEX jobs_by_tenant ON jobs (tenant_id, id);
CREATE INDEX jobs_by_state ON jobs (state, id);

CREATE TABLE job_events (
    id       INTEGER PRIMARY KEY,
    job_id   INTEGER NOT NULL REFERENCES jobs(id),
    at_ms    INTEGER NOT NULL,
    kind     TEXT    NOT NULL,
    detail   TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX job_events_by_job ON job_events (job_id, id);
