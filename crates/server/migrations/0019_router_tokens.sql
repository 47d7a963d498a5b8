-- Router tokens (issue 18): a `suanli gateway`'s credential, allowed the
-- router API only. SQLite cannot change a CHECK constraint, so the table
-- is rebuilt with the new scope allowed (ids, hashes and revocations
-- kept; nothing references tokens by key).
CREATE TABLE tokens_new (
    id          INTEGER PRIMARY KEY,
    hash        TEXT    NOT NULL UNIQUE,
    scope       TEXT    NOT NULL CHECK (scope IN ('admin', 'tenant', 'agent', 'router')),
    tenant_id   INTEGER REFERENCES tenants(id),
    name        TEXT    NOT NULL DEFAULT '',
    created_ms  INTEGER NOT NULL,
    revoked_ms  INTEGER,
    node        TEXT,
    CHECK ((scope = 'tenant') = (tenant_id IS NOT NULL))
);
INSERT INTO tokens_new (id, hash, scope, tenant_id, name, created_ms, revoked_ms, node)
    SELECT id, hash, scope, tenant_id, name, created_ms, revoked_ms, node FROM tokens;
DROP TABLE tokens;
ALTER TABLE tokens_new RENAME TO tokens;
CREATE UNIQUE INDEX tokens_live_node ON tokens (node)
    WHERE node IS NOT NULL AND revoked_ms IS NULL;
