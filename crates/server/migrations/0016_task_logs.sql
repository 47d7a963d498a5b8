-- Task output lives in the database, so every replica serves the same logs
-- whichever one an agent pushed them to. A stream (job, run, task, stream)
-- is a chain of chunks: each starts where the one before stopped, and the
-- primary key on `start` makes two concurrent appends at the same end
-- collide, so bytes are never stored twice or out of order.
CREATE TABLE task_logs (
    job_id INTEGER NOT NULL,
    run INTEGER NOT NULL,
    task INTEGER NOT NULL,
    stream TEXT NOT NULL,
    start INTEGER NOT NULL,
    stop INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (job_id, run, task, stream, start)
);
