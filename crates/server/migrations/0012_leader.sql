-- The scheduling leader's lease. One row. A server runs the scheduling
-- loop only while it holds the lease (renewed well inside its TTL), and
-- every batch the loop commits first checks, in its own transaction, that
-- the lease's epoch is still the one it took: a server deposed while it
-- was stopped (or cut off) cannot write over its successor's decisions.
-- SQLite serves one server (DATA_DIR/server.lock), which takes the lease
-- at start; on PostgreSQL, replicas contend for it.
CREATE TABLE leader (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    holder      TEXT    NOT NULL DEFAULT '',  -- e.g. "host:pid:listen:nonce"
    epoch       INTEGER NOT NULL DEFAULT 0,   -- bumped at every takeover
    expires_ms  INTEGER NOT NULL DEFAULT 0
);
INSERT INTO leader (id) VALUES (1);
