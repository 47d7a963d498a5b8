-- Node-bound agent credentials. An agent token either names a node (a
-- node's credential: it may speak for that node only) or not (a join
-- token: it may only register a node, which issues that node's
-- credential). Tokens created before are join tokens.
--
-- At most one live credential per node: a join token cannot take over a
-- node that already has one (the index makes the claim atomic).

ALTER TABLE tokens ADD COLUMN node TEXT;

CREATE UNIQUE INDEX tokens_live_node ON tokens (node)
    WHERE node IS NOT NULL AND revoked_ms IS NULL;
