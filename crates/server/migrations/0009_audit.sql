-- What admins did: tokens issued and revoked, tenants and quotas, drains,
-- node credentials claimed, admin resets. Append-only; read by admins.
CREATE TABLE audit (
    id      INTEGER PRIMARY KEY,
    at_ms   INTEGER NOT NULL,
    actor   TEXT    NOT NULL,   -- e.g. "token 3 (admin)", "server machine"
    action  TEXT    NOT NULL,   -- e.g. "token.create"
    target  TEXT    NOT NULL,   -- what it acted on, e.g. "token 7 (agent, node n1)"
    detail  TEXT    NOT NULL DEFAULT ''
);
