-- A job's row is updated in place when it starts (state, run, started_ms:
-- no indexed column), if its page has room for the new version (a HOT
-- update: no index is touched). Rows are written full by default; leave a
-- fifth of every new page free. PostgreSQL only: SQLite updates in place.
ALTER TABLE jobs SET (fillfactor = 80);
