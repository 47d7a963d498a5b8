//! Migrations keep what a store already holds. A store is filled at the
//! schema before `0005_cheap_checks` (which rebuilds the hot tables), then
//! opened by the server: every row must be there, the foreign keys and
//! checks must still hold, and the loop's writer must work on it. On
//! PostgreSQL, replicas starting together migrate once.

use std::borrow::Cow;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::Row;
use suanli_server::store::{JobState, NodeState, Store, TaskState, Write};

mod common;

async fn old_store(dir: &std::path::Path) {
    let opts = SqliteConnectOptions::new()
        .filename(dir.join("suanli.db"))
        .create_if_missing(true)
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .unwrap();
    let mut m = sqlx::migrate!("./migrations");
    m.migrations = Cow::Owned(
        m.migrations
            .iter()
            .filter(|x| x.version < 5)
            .cloned()
            .collect(),
    );
    m.run(&pool).await.unwrap();
    for sql in [
        "INSERT INTO tenants (id, name, weight, created_ms) VALUES (1, 'acme', 1.0, 0)",
        "INSERT INTO jobs (id, tenant_id, name, command, tasks, cpu_milli, memory_mib, num_gpu, gpu_milli, \
         gpu_models, class, state, submitted_ms, env, workdir, retries, run, started_ms) VALUES \
         (7, 1, 'train', '[\"python\"]', 2, 1000, 1024, 4, 1000, '[\"A100\"]', 'guaranteed', 'RUNNING', 10, \
         '{\"K\":\"v\"}', '/w', 2, 1, 20)",
        "INSERT INTO jobs (id, tenant_id, name, command, tasks, cpu_milli, memory_mib, num_gpu, gpu_milli, \
         gpu_models, class, state, submitted_ms) VALUES \
         (8, 1, 'wait', '[\"x\"]', 1, 1000, 1024, 1, 500, '[]', 'spot', 'PENDING', 11)",
        "INSERT INTO nodes (id, name, addr, gpu_model, gpus, gpu_memory_mib, cpu_milli, memory_mib, rack, labels, \
         state, registered_ms, last_heartbeat_ms) VALUES \
         (3, 'n3', '10.0.0.3', 'A100', 8, 81920, 64000, 524288, 'r1', '{}', 'ready', 5, 30)",
        "INSERT INTO node_spans (node_id, start_ms, end_ms, state, gpu_model, gpus) VALUES (3, 5, NULL, 'ready', 'A100', 8)",
        "INSERT INTO tasks (job_id, run, idx, node_id, gpus, state, started_ms, gpu_model) VALUES \
         (7, 1, 0, 3, 15, 'RUNNING', 20, 'A100'), (7, 1, 1, 3, 240, 'ASSIGNED', 20, 'A100')",
        "INSERT INTO job_events (job_id, at_ms, kind, detail) VALUES (7, 10, 'SUBMITTED', ''), \
         (7, 20, 'STARTED', 'attempt 1 on n3[0, 1, 2, 3], n3[4, 5, 6, 7]')",
        // Job 9: a first attempt whose task rows are gone (kept as stored),
        // preempted, a second attempt with task rows (read from them).
        "INSERT INTO jobs (id, tenant_id, name, command, tasks, cpu_milli, memory_mib, num_gpu, gpu_milli, \
         gpu_models, class, state, submitted_ms, ended_ms, run, started_ms) VALUES \
         (9, 1, 'twice', '[\"x\"]', 1, 1000, 1024, 1, 1000, '[]', 'spot', 'COMPLETED', 10, 50, 2, 40)",
        "INSERT INTO tasks (job_id, run, idx, node_id, gpus, state, started_ms, ended_ms, exit_code, gpu_model) \
         VALUES (9, 2, 0, 3, 1, 'EXITED', 40, 50, 0, 'A100')",
        "INSERT INTO job_events (job_id, at_ms, kind, detail) VALUES (9, 10, 'SUBMITTED', ''), \
         (9, 20, 'STARTED', 'attempt 1 on gone[0]'), (9, 30, 'PREEMPTED', 'requeued'), \
         (9, 40, 'STARTED', 'attempt 2 on n3[0]'), (9, 50, 'COMPLETED', '')",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    pool.close().await;
}

#[tokio::test]
async fn rebuilding_the_hot_tables_keeps_every_row() {
    let dir = tempfile::tempdir().unwrap();
    old_store(dir.path()).await;
    let store = Store::open(dir.path()).await.unwrap();

    let j = store.job(7, None).await.unwrap();
    assert_eq!(
        (j.state, j.run, j.tasks, j.retries),
        (JobState::Running, 1, 2, 2)
    );
    assert_eq!(j.env.get("K").map(String::as_str), Some("v"));
    assert_eq!(store.job(8, None).await.unwrap().state, JobState::Pending);
    let ev = store.events(7).await.unwrap();
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[1].detail, "attempt 1 on n3[0, 1, 2, 3], n3[4, 5, 6, 7]");
    // 0006: events carry their attempt; STARTED is read from task rows
    // where the attempt has them, kept as stored where it does not.
    let ev: Vec<(i64, String, String)> = store
        .events(9)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.at_ms, e.kind.as_str().to_string(), e.detail))
        .collect();
    let want = [
        (10, "SUBMITTED", ""),
        (20, "STARTED", "attempt 1 on gone[0]"),
        (30, "PREEMPTED", "requeued"),
        (40, "STARTED", "attempt 2 on n3[0]"),
        (50, "COMPLETED", ""),
    ];
    let want: Vec<(i64, String, String)> = want
        .iter()
        .map(|(a, k, d)| (*a, k.to_string(), d.to_string()))
        .collect();
    assert_eq!(ev, want);
    // 0007: recovery's index holds the live jobs, and only them.
    let live = |v: Vec<suanli_server::store::Job>| v.into_iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(
        live(store.live_jobs(JobState::Running, 0, 10).await.unwrap()),
        [7]
    );
    assert_eq!(
        live(store.live_jobs(JobState::Pending, 0, 10).await.unwrap()),
        [8]
    );
    let nodes = store.nodes().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!((nodes[0].state, nodes[0].gpus), (NodeState::Ready, 8));
    let tasks = store.active_tasks().await.unwrap();
    assert_eq!(tasks.len(), 2);
    assert_eq!((tasks[0].state, tasks[0].gpus), (TaskState::Running, 15));

    let pool = &SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(dir.path().join("suanli.db"))
                .foreign_keys(true),
        )
        .await
        .unwrap();
    let fk: Vec<sqlx::sqlite::SqliteRow> = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(pool)
        .await
        .unwrap();
    assert!(fk.is_empty(), "foreign keys broken by the migration");
    let spans: i64 = sqlx::query("SELECT COUNT(*) AS n FROM node_spans")
        .fetch_one(pool)
        .await
        .unwrap()
        .get("n");
    assert_eq!(spans, 1);
    // The checks and the foreign keys still refuse bad rows.
    for bad in [
        "UPDATE jobs SET state = 'BOGUS' WHERE id = 8",
        "UPDATE tasks SET state = 'bogus'",
        "UPDATE nodes SET state = 'gone'",
        "INSERT INTO tasks (job_id, run, idx, node_id, gpus, state, started_ms) VALUES (99, 1, 0, 3, 1, 'ASSIGNED', 1)",
        "INSERT INTO job_events (job_id, at_ms, kind) VALUES (99, 1, 'SUBMITTED')",
        "INSERT INTO node_spans (node_id, start_ms, state, gpus) VALUES (99, 1, 'ready', 8)",
    ] {
        assert!(sqlx::query(bad).execute(pool).await.is_err(), "accepted: {bad}");
    }
    // The loop's writer works on the migrated tables.
    store
        .commit(vec![
            Write::StartJob {
                job: 8,
                run: 1,
                at: 40,
                tasks: vec![(3, 256)],
            },
            Write::NodeState {
                node: 3,
                state: NodeState::Draining,
                at: 50,
            },
        ])
        .await
        .unwrap();
    assert_eq!(store.job(8, None).await.unwrap().state, JobState::Running);
    assert_eq!(store.active_tasks().await.unwrap().len(), 3);
    assert_eq!(store.nodes().await.unwrap()[0].state, NodeState::Draining);
}

/// Replicas of the server starting together on one new PostgreSQL
/// database: the migrations run once, under the database's lock, and every
/// replica opens the same schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_migrate_once() {
    let Some(url) = common::postgres_url().await else {
        return;
    };
    let opens = (0..6).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { suanli_server::store::Store::connect(&url).await })
    });
    for o in opens {
        o.await.unwrap().expect("every replica opens the store");
    }
    let store = suanli_server::store::postgres::PgStore::connect(&url)
        .await
        .unwrap();
    let applied: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(store.pool())
            .await
            .unwrap();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations-postgres"))
        .unwrap()
        .count() as i64;
    assert!(files >= 2);
    assert_eq!(applied, (1..=files).map(|v| (v, true)).collect::<Vec<_>>());
}
