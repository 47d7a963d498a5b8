-- Nodes an admin removed (`DELETE /v1/nodes/NAME`): the row stays, since
-- tasks and node spans name it, but it is no longer part of the pool. The
-- node's name is free again: an agent registering it later gets this row
-- back (same id, new inventory), and `removed_ms` returns to NULL.
ALTER TABLE nodes ADD COLUMN removed_ms INTEGER;
