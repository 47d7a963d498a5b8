-- See the SQLite migration 0018_router_counts.sql.
CREATE TABLE router_counts (
    router TEXT NOT NULL,
    kind TEXT NOT NULL,
    id BIGINT NOT NULL,
    inflight BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    tokens BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (router, kind, id)
);
CREATE INDEX router_counts_at ON router_counts (at_ms);
