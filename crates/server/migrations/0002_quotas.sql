-- Per-tenant quotas per GPU model, in GPU milli (1000 = one GPU).
CREATE TABLE quotas (
    tenant_id         INTEGER NOT NULL REFERENCES tenants(id),
    gpu_model         TEXT    NOT NULL,
    guaranteed_milli  INTEGER NOT NULL CHECK (guaranteed_milli >= 0),
    max_milli         INTEGER CHECK (max_milli IS NULL OR max_milli >= guaranteed_milli),
    PRIMARY KEY (tenant_id, gpu_model)
);
