-- Model services (issue 18). A service is a tenant's model server: its
-- replica spec and scaling settings (`spec`, JSON of
-- `suanli_api::ServiceSpec`), the model name callers ask for, and the
-- secret its replicas require (`key`, sent by the router only). A deleted
-- service keeps its row (usage rows name it) with `deleted_ms` set.
CREATE TABLE services (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id INTEGER NOT NULL REFERENCES tenants(id),
    name TEXT NOT NULL,
    model TEXT NOT NULL,
    public INTEGER NOT NULL,
    spec TEXT NOT NULL,
    key TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    deleted_ms INTEGER
);
CREATE UNIQUE INDEX services_name ON services (tenant_id, name) WHERE deleted_ms IS NULL;
CREATE UNIQUE INDEX services_model ON services (tenant_id, model) WHERE deleted_ms IS NULL;
-- A public model name means one service for every caller.
CREATE UNIQUE INDEX services_public_model ON services (model) WHERE deleted_ms IS NULL AND public = 1;

-- Which jobs are a service's replicas: written in the transaction that
-- inserts the job, so a replica is never an ordinary job, even after a
-- crash between the two.
CREATE TABLE replicas (
    job_id INTEGER PRIMARY KEY,
    service_id INTEGER NOT NULL REFERENCES services(id)
);
CREATE INDEX replicas_service ON replicas (service_id, job_id);

-- Tokens sold: one row per answered request, keyed by the router's request
-- id (a retried request is one id, so it is counted once). `tenant_id`
-- pays (the caller); the service's owner pays its replicas' GPU time.
CREATE TABLE token_usage (
    request_id TEXT PRIMARY KEY,
    tenant_id INTEGER NOT NULL,
    service_id INTEGER NOT NULL,
    model TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    estimated INTEGER NOT NULL
);
CREATE INDEX token_usage_tenant ON token_usage (tenant_id, at_ms);
CREATE INDEX token_usage_at ON token_usage (at_ms);

-- Per-tenant rate limits of the model API (absent: none).
CREATE TABLE tenant_limits (
    tenant_id INTEGER PRIMARY KEY REFERENCES tenants(id),
    requests_per_minute INTEGER,
    tokens_per_minute INTEGER
);
