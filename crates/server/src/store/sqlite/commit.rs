//! The SQLite write path: one batch of [`Write`]s in one transaction. Runs
//! of job inserts, job starts and node states become multi-row statements;
//! events are appended last; every node change also records the node's
//! history (`node_spans`).

use std::collections::{BTreeMap, HashMap};

use sqlx::{Row, SqlitePool};

use crate::store::{JobState, Node, NodeState, StoreError, TaskState, Write};

/// Apply a batch of writes in one transaction: all or nothing.
pub(super) async fn commit(pool: &SqlitePool, writes: &[Write]) -> Result<(), StoreError> {
    if writes.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    // Writes are applied in order, except that runs of job inserts, of
    // job starts and of node states become multi-row statements, and
    // events (append-only, read by no other write) are inserted last, in
    // their own order: far fewer round trips for the same result.
    let mut events: Vec<&Write> = Vec::new();
    let mut i = 0;
    while i < writes.len() {
        let w = &writes[i];
        match w {
            Write::Event { .. } => {
                events.push(w);
                i += 1;
            }
            Write::InsertJob { .. } | Write::StartJob { .. } | Write::NodeState { .. } => {
                let same = |x: &Write| std::mem::discriminant(x) == std::mem::discriminant(w);
                let mut run = Vec::new();
                while i < writes.len() {
                    match &writes[i] {
                        e @ Write::Event { .. } => events.push(e),
                        x if same(x) => run.push(x),
                        _ => break,
                    }
                    i += 1;
                }
                match w {
                    Write::InsertJob { .. } => insert_jobs(&mut tx, &run).await?,
                    Write::StartJob { .. } => start_jobs(&mut tx, &run).await?,
                    _ => node_states(&mut tx, &run).await?,
                }
            }
            Write::JobState { job, state, ended } => {
                sqlx::query("UPDATE jobs SET state = ?, ended_ms = ? WHERE id = ?")
                    .bind(*state)
                    .bind(ended)
                    .bind(job)
                    .execute(&mut *tx)
                    .await?;
                i += 1;
            }
            Write::TaskState {
                job,
                run,
                task,
                node,
                from,
                to,
                at,
                exit_code,
                reason,
            } => {
                for f in *from {
                    sqlx::query(
                        "UPDATE tasks SET state = ?, ended_ms = COALESCE(?, ended_ms), \
                         exit_code = COALESCE(?, exit_code), reason = CASE WHEN ? = '' THEN reason ELSE ? END \
                         WHERE job_id = ? AND run = ? AND (? IS NULL OR idx = ?) \
                         AND (? IS NULL OR node_id = ?) AND state = ?",
                    )
                    .bind(*to)
                    .bind(at)
                    .bind(exit_code)
                    .bind(reason)
                    .bind(reason)
                    .bind(job)
                    .bind(run)
                    .bind(task)
                    .bind(task)
                    .bind(node)
                    .bind(node)
                    .bind(*f)
                    .execute(&mut *tx)
                    .await?;
                }
                i += 1;
            }
            Write::UpsertNode(n) => {
                upsert_node(&mut tx, n).await?;
                i += 1;
            }
            Write::Heartbeat { node, at } => {
                sqlx::query("UPDATE nodes SET last_heartbeat_ms = ? WHERE id = ?")
                    .bind(at)
                    .bind(node)
                    .execute(&mut *tx)
                    .await?;
                i += 1;
            }
        }
    }
    for chunk in events.chunks(200) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO job_events (job_id, at_ms, kind, detail) ",
        );
        q.push_values(chunk, |mut b, e| {
            if let Write::Event {
                job,
                at,
                kind,
                detail,
            } = e
            {
                b.push_bind(*job)
                    .push_bind(*at)
                    .push_bind(*kind)
                    .push_bind(detail.as_str());
            }
        });
        q.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn node_states(tx: &mut sqlx::SqliteConnection, run: &[&Write]) -> Result<(), StoreError> {
    let mut by_state: BTreeMap<NodeState, Vec<i64>> = BTreeMap::new();
    for w in run {
        if let Write::NodeState { node, state, .. } = w {
            by_state.entry(*state).or_default().push(*node);
        }
    }
    // A node set twice in one run keeps its last state; every change opens a span.
    let mut last: BTreeMap<i64, NodeState> = BTreeMap::new();
    let mut changes = Vec::with_capacity(run.len());
    for w in run {
        if let Write::NodeState { node, state, at } = w {
            last.insert(*node, *state);
            changes.push((*node, *state, *at));
        }
    }
    node_spans(tx, &changes).await?;
    for (state, nodes) in by_state {
        let nodes: Vec<i64> = nodes.into_iter().filter(|n| last[n] == state).collect();
        for chunk in nodes.chunks(500) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("UPDATE nodes SET state = ");
            q.push_bind(state).push(" WHERE id IN (");
            let mut sep = q.separated(", ");
            for n in chunk {
                sep.push_bind(*n);
            }
            q.push(")");
            q.build().execute(&mut *tx).await?;
        }
    }
    Ok(())
}

async fn insert_jobs(tx: &mut sqlx::SqliteConnection, run: &[&Write]) -> Result<(), StoreError> {
    for chunk in run.chunks(100) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO jobs (id, tenant_id, name, command, tasks, cpu_milli, memory_mib, num_gpu, gpu_milli, \
             gpu_models, class, env, workdir, max_runtime_s, retries, state, submitted_ms) ",
        );
        q.push_values(chunk, |mut b, w| {
            if let Write::InsertJob {
                id,
                tenant_id,
                job: j,
                at,
            } = w
            {
                b.push_bind(*id)
                    .push_bind(*tenant_id)
                    .push_bind(j.name.clone())
                    .push_bind(serde_json::to_string(&j.command).expect("strings serialise"))
                    .push_bind(j.tasks)
                    .push_bind(j.cpu_milli)
                    .push_bind(j.memory_mib)
                    .push_bind(j.num_gpu)
                    .push_bind(j.gpu_milli)
                    .push_bind(serde_json::to_string(&j.gpu_models).expect("strings serialise"))
                    .push_bind(j.class)
                    .push_bind(serde_json::to_string(&j.env).expect("strings serialise"))
                    .push_bind(j.workdir.clone())
                    .push_bind(j.max_runtime_s)
                    .push_bind(j.retries)
                    .push_bind(JobState::Pending)
                    .push_bind(*at);
            }
        });
        q.build().execute(&mut *tx).await?;
    }
    Ok(())
}

/// Consecutive job starts: their job rows and every task row, a few
/// statements per hundred jobs.
async fn start_jobs(tx: &mut sqlx::SqliteConnection, run: &[&Write]) -> Result<(), StoreError> {
    for chunk in run.chunks(100) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("UPDATE jobs SET state = ");
        q.push_bind(JobState::Running).push(", run = CASE id");
        for w in chunk {
            if let Write::StartJob { job, run, .. } = w {
                q.push(" WHEN ")
                    .push_bind(*job)
                    .push(" THEN ")
                    .push_bind(*run);
            }
        }
        q.push(" END, started_ms = CASE id");
        for w in chunk {
            if let Write::StartJob { job, at, .. } = w {
                q.push(" WHEN ")
                    .push_bind(*job)
                    .push(" THEN ")
                    .push_bind(*at);
            }
        }
        q.push(" END WHERE id IN (");
        let mut sep = q.separated(", ");
        for w in chunk {
            if let Write::StartJob { job, .. } = w {
                sep.push_bind(*job);
            }
        }
        q.push(")");
        q.build().execute(&mut *tx).await?;
        let mut rows: Vec<(i64, i64, i64, i64, i64, i64)> = Vec::new();
        for w in chunk {
            if let Write::StartJob {
                job,
                run,
                at,
                tasks,
            } = w
            {
                for (i, (node, mask)) in tasks.iter().enumerate() {
                    rows.push((*job, *run, i as i64, *node, *mask, *at));
                }
            }
        }
        for part in rows.chunks(150) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO tasks (job_id, run, idx, node_id, gpus, state, started_ms, gpu_model) ",
            );
            q.push_values(part, |mut b, r| {
                b.push_bind(r.0)
                    .push_bind(r.1)
                    .push_bind(r.2)
                    .push_bind(r.3)
                    .push_bind(r.4)
                    .push_bind(TaskState::Assigned)
                    .push_bind(r.5)
                    // The model it runs on, kept should the node's inventory change later.
                    .push("(SELECT gpu_model FROM nodes WHERE id = ")
                    .push_bind_unseparated(r.3)
                    .push_unseparated(")");
            });
            q.build().execute(&mut *tx).await?;
        }
    }
    Ok(())
}

/// Insert a node or update its inventory and state, and record the change
/// in its history.
async fn upsert_node(tx: &mut sqlx::SqliteConnection, n: &Node) -> Result<(), StoreError> {
    sqlx::query(
            "INSERT INTO nodes (id, name, addr, gpu_model, gpus, gpu_memory_mib, cpu_milli, memory_mib, rack, \
             labels, state, registered_ms, last_heartbeat_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET addr = excluded.addr, gpu_model = excluded.gpu_model, \
             gpus = excluded.gpus, gpu_memory_mib = excluded.gpu_memory_mib, cpu_milli = excluded.cpu_milli, \
             memory_mib = excluded.memory_mib, rack = excluded.rack, labels = excluded.labels, \
             state = excluded.state, last_heartbeat_ms = excluded.last_heartbeat_ms",
        )
        .bind(n.id)
        .bind(&n.name)
        .bind(&n.addr)
        .bind(&n.gpu_model)
        .bind(n.gpus)
        .bind(n.gpu_memory_mib)
        .bind(n.cpu_milli)
        .bind(n.memory_mib)
        .bind(&n.rack)
        .bind(serde_json::to_string(&n.labels).expect("strings serialise"))
        .bind(n.state)
        .bind(n.registered_ms)
        .bind(n.last_heartbeat_ms)
        .execute(&mut *tx)
        .await?;
    node_spans(tx, &[(n.id, n.state, n.last_heartbeat_ms)]).await
}

/// Record that each `(node, state, at)` holds from `at`, in order: close the
/// node's open span and open a new one (with the node's stored inventory),
/// unless nothing changed. A change dated before later spans (a lost node
/// is down from its last heartbeat, which can precede a drain) replaces
/// them, so the spans of a node never overlap and the history agrees with
/// the billing of its tasks.
///
/// Set-wise: the changes go in waves holding each node at most once (a
/// node's later change in a later wave), and each wave costs a few
/// statements per 500 nodes, not a few per node (undraining 5,000 nodes
/// cost 2 s per node and 0.03 s so).
async fn node_spans(
    tx: &mut sqlx::SqliteConnection,
    changes: &[(i64, NodeState, i64)],
) -> Result<(), StoreError> {
    let mut waves: Vec<Vec<(i64, NodeState, i64)>> = Vec::new();
    let mut wave_of: HashMap<i64, usize> = HashMap::new();
    for &(node, state, at) in changes {
        let w = wave_of.get(&node).map_or(0, |w| w + 1);
        wave_of.insert(node, w);
        if waves.len() <= w {
            waves.push(Vec::new());
        }
        waves[w].push((node, state, at));
    }
    for wave in waves {
        for chunk in wave.chunks(500) {
            span_chunk(tx, chunk).await?;
        }
    }
    Ok(())
}

/// [`node_spans`] for distinct nodes.
async fn span_chunk(
    tx: &mut sqlx::SqliteConnection,
    chunk: &[(i64, NodeState, i64)],
) -> Result<(), StoreError> {
    let in_list = |q: &mut sqlx::QueryBuilder<'_, sqlx::Sqlite>, nodes: &[i64]| {
        q.push(" IN (");
        let mut sep = q.separated(", ");
        for n in nodes {
            sep.push_bind(*n);
        }
        q.push(")");
    };
    let ids: Vec<i64> = chunk.iter().map(|c| c.0).collect();
    let mut q = sqlx::QueryBuilder::new("SELECT id, gpu_model, gpus FROM nodes WHERE id");
    in_list(&mut q, &ids);
    let mut inventory: HashMap<i64, (Option<String>, i64)> = HashMap::new();
    for r in q.build().fetch_all(&mut *tx).await? {
        inventory.insert(
            r.try_get("id")?,
            (r.try_get("gpu_model")?, r.try_get("gpus")?),
        );
    }
    let mut q = sqlx::QueryBuilder::new(
        "SELECT node_id, start_ms, state, gpu_model, gpus FROM node_spans \
         WHERE end_ms IS NULL AND node_id",
    );
    in_list(&mut q, &ids);
    let mut open: HashMap<i64, (i64, NodeState, Option<String>, i64)> = HashMap::new();
    for r in q.build().fetch_all(&mut *tx).await? {
        open.insert(
            r.try_get("node_id")?,
            (
                r.try_get("start_ms")?,
                r.try_get("state")?,
                r.try_get("gpu_model")?,
                r.try_get("gpus")?,
            ),
        );
    }
    // Nodes whose span really changes, grouped by the time of the change.
    let mut by_at: BTreeMap<i64, Vec<(i64, NodeState)>> = BTreeMap::new();
    for &(node, state, at) in chunk {
        let Some((model, gpus)) = inventory.get(&node) else {
            continue; // no such node: nothing to record
        };
        let same = open.get(&node).is_some_and(|(start, st, m, g)| {
            *st == state && m == model && g == gpus && *start <= at
        });
        if !same {
            by_at.entry(at).or_default().push((node, state));
        }
    }
    for (at, nodes) in by_at {
        let ids: Vec<i64> = nodes.iter().map(|n| n.0).collect();
        let mut q = sqlx::QueryBuilder::new("DELETE FROM node_spans WHERE start_ms > ");
        q.push_bind(at).push(" AND node_id");
        in_list(&mut q, &ids);
        q.build().execute(&mut *tx).await?;
        let mut q = sqlx::QueryBuilder::new("UPDATE node_spans SET end_ms = ");
        q.push_bind(at)
            .push(" WHERE (end_ms IS NULL OR end_ms > ")
            .push_bind(at)
            .push(") AND node_id");
        in_list(&mut q, &ids);
        q.build().execute(&mut *tx).await?;
        // A zero-length span (two changes in one millisecond) is replaced.
        let mut q = sqlx::QueryBuilder::new(
            "INSERT INTO node_spans (node_id, start_ms, end_ms, state, gpu_model, gpus) ",
        );
        q.push_values(&nodes, |mut b, (node, state)| {
            let (model, gpus) = &inventory[node];
            b.push_bind(*node)
                .push_bind(at)
                .push_bind(None::<i64>)
                .push_bind(*state)
                .push_bind(model.clone())
                .push_bind(*gpus);
        });
        q.push(
            " ON CONFLICT (node_id, start_ms) DO UPDATE SET end_ms = NULL, state = excluded.state, \
             gpu_model = excluded.gpu_model, gpus = excluded.gpus",
        );
        q.build().execute(&mut *tx).await?;
    }
    Ok(())
}
