-- The scheduling leader's lease; see ../migrations/0012_leader.sql.
CREATE TABLE leader (
    id          BIGINT PRIMARY KEY CHECK (id = 1),
    holder      TEXT   NOT NULL DEFAULT '',
    epoch       BIGINT NOT NULL DEFAULT 0,
    expires_ms  BIGINT NOT NULL DEFAULT 0
);
INSERT INTO leader (id) VALUES (1);
