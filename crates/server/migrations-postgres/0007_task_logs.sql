-- See ../migrations/0016_task_logs.sql.
CREATE TABLE task_logs (
    job_id BIGINT NOT NULL,
    run BIGINT NOT NULL,
    task BIGINT NOT NULL,
    stream TEXT NOT NULL,
    start BIGINT NOT NULL,
    stop BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (job_id, run, task, stream, start)
);
