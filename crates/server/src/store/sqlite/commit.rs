//! The SQLite write path: one batch of [`Write`]s applied in order inside
//! one transaction (opened by [`super::writer`]), each write a few prepared
//! statements. Every node change also records the node's history
//! (`node_spans`).

use std::collections::{HashMap, HashSet};

use rusqlite::{params, ToSql, Transaction};

use crate::store::{JobState, NewJob, Node, NodeState, StoreError, TaskState, Write};

/// Apply `writes` in order within `tx`, except that runs of job inserts
/// and of job starts become multi-row statements, and events and audit
/// entries (append-only, read by no other write) are inserted last, each
/// kind in its own order, 64 rows a statement.
pub(super) fn apply(tx: &Transaction<'_>, writes: &[Write]) -> Result<(), StoreError> {
    let mut events: Vec<&Write> = Vec::new();
    let mut audits: Vec<&Write> = Vec::new();
    let mut i = 0;
    while i < writes.len() {
        let w = &writes[i];
        if let Write::Audit { .. } = w {
            audits.push(w);
            i += 1;
            continue;
        }
        if !matches!(
            w,
            Write::Event { .. }
                | Write::InsertJob { .. }
                | Write::StartJob { .. }
                | Write::NodeState { .. }
        ) {
            apply_one(tx, w)?;
            i += 1;
            continue;
        }
        // A run of one kind (events set aside), each job or node at most once.
        let kind = std::mem::discriminant(w);
        let mut run: Vec<&Write> = Vec::new();
        let mut jobs = HashSet::new();
        while i < writes.len() {
            match &writes[i] {
                e @ Write::Event { .. } => events.push(e),
                a @ Write::Audit { .. } => audits.push(a),
                x if std::mem::discriminant(x) == kind && jobs.insert(job_of(x)) => run.push(x),
                _ => break,
            }
            i += 1;
        }
        match w {
            Write::InsertJob { .. } => insert_jobs(tx, &run)?,
            Write::StartJob { .. } => start_jobs(tx, &run)?,
            Write::NodeState { .. } => node_states(tx, &run)?,
            _ => {}
        }
    }
    insert_events(tx, &events)?;
    insert_audits(tx, &audits)
}

fn insert_audits(tx: &Transaction<'_>, audits: &[&Write]) -> Result<(), StoreError> {
    let rows: Vec<[&dyn ToSql; 5]> = audits
        .iter()
        .map(|w| match w {
            Write::Audit {
                at,
                actor,
                action,
                target,
                detail,
            } => [at as &dyn ToSql, actor, action, target, detail],
            _ => unreachable!("audit entries"),
        })
        .collect();
    many(
        tx,
        "INSERT INTO audit (at_ms, actor, action, target, detail) VALUES ",
        "(?, ?, ?, ?, ?)",
        "",
        &rows,
    )
}

fn job_of(w: &Write) -> i64 {
    match w {
        Write::InsertJob { id, .. } => *id,
        Write::StartJob { job, .. } => *job,
        Write::NodeState { node, .. } => *node,
        _ => 0,
    }
}

/// Rows per multi-row statement (a remainder goes row by row).
const CHUNK: usize = 64;

/// `head` then `rows` × `row` (comma-separated) then `tail`, in statements
/// of [`CHUNK`] rows, the rest one row each: full chunks share one cached
/// statement, so SQLite opens its cursors once per 64 rows, not per row.
fn many<const W: usize>(
    tx: &Transaction<'_>,
    head: &str,
    row: &str,
    tail: &str,
    rows: &[[&dyn ToSql; W]],
) -> Result<(), StoreError> {
    let sql = |n: usize| {
        let mut s = String::with_capacity(head.len() + n * (row.len() + 2) + tail.len());
        s.push_str(head);
        for k in 0..n {
            if k > 0 {
                s.push_str(", ");
            }
            s.push_str(row);
        }
        s.push_str(tail);
        s
    };
    let full = rows.len() / CHUNK * CHUNK;
    let run = |chunk: &[[&dyn ToSql; W]], sql: &str| -> Result<(), StoreError> {
        let mut st = tx.prepare_cached(sql)?;
        let mut k = 1;
        for r in chunk {
            for v in r {
                st.raw_bind_parameter(k, v)?;
                k += 1;
            }
        }
        st.raw_execute()?;
        Ok(())
    };
    if full > 0 {
        let big = sql(CHUNK);
        for chunk in rows[..full].chunks(CHUNK) {
            run(chunk, &big)?;
        }
    }
    let one = sql(1);
    for r in &rows[full..] {
        run(std::slice::from_ref(r), &one)?;
    }
    Ok(())
}

fn insert_jobs(tx: &Transaction<'_>, run: &[&Write]) -> Result<(), StoreError> {
    // The JSON texts, owned here so that the rows can borrow them.
    let json: Vec<[String; 3]> = run
        .iter()
        .map(|w| match w {
            Write::InsertJob { job: j, .. } => [
                serde_json::to_string(&j.command).expect("strings serialise"),
                serde_json::to_string(&j.gpu_models).expect("strings serialise"),
                serde_json::to_string(&j.env).expect("strings serialise"),
            ],
            _ => unreachable!("a run of job inserts"),
        })
        .collect();
    let rows: Vec<[&dyn ToSql; 18]> = run
        .iter()
        .zip(&json)
        .map(|(w, js)| match w {
            Write::InsertJob {
                id,
                tenant_id,
                job: j,
                at,
            } => [
                id as &dyn ToSql,
                tenant_id,
                &j.name,
                &js[0],
                &j.tasks,
                &j.cpu_milli,
                &j.memory_mib,
                &j.num_gpu,
                &j.gpu_milli,
                &js[1],
                &j.class,
                &js[2],
                &j.workdir,
                &j.max_runtime_s,
                &j.retries,
                at,
                &j.idem_key,
                &j.idem_hash,
            ],
            _ => unreachable!("a run of job inserts"),
        })
        .collect();
    many(
        tx,
        "INSERT INTO jobs (id, tenant_id, name, command, tasks, cpu_milli, memory_mib, num_gpu, \
         gpu_milli, gpu_models, class, env, workdir, max_runtime_s, retries, submitted_ms, idem_key, \
         idem_hash, state) VALUES ",
        &format!(
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '{}')",
            JobState::Pending.as_str()
        ),
        "",
        &rows,
    )?;
    // A model service's replicas: recorded with the job, in its transaction.
    for w in run {
        if let Write::InsertJob {
            id,
            job: NewJob {
                service: Some(s), ..
            },
            ..
        } = w
        {
            tx.prepare_cached("INSERT INTO replicas (job_id, service_id) VALUES (?, ?)")?
                .execute(params![id, s])?;
        }
    }
    Ok(())
}

/// Job starts: each job's row, and a row per task (with the GPU model it
/// runs on, kept should the node's inventory change later).
fn start_jobs(tx: &Transaction<'_>, run: &[&Write]) -> Result<(), StoreError> {
    // Task indexes, owned here so that the rows can borrow them.
    let indexes: Vec<i64> = (0..run.iter().map(|w| start_tasks(w).len()).max().unwrap_or(0))
        .map(|i| i as i64)
        .collect();
    let mut jobs: Vec<[&dyn ToSql; 3]> = Vec::with_capacity(run.len());
    let mut tasks: Vec<[&dyn ToSql; 6]> = Vec::with_capacity(run.len());
    for w in run {
        let Write::StartJob {
            job,
            run,
            at,
            tasks: t,
        } = w
        else {
            unreachable!("a run of job starts")
        };
        jobs.push([job, run, at]);
        for (i, (node, mask)) in t.iter().enumerate() {
            tasks.push([job, run, &indexes[i], node, mask, at]);
        }
    }
    many(
        tx,
        &format!(
            "UPDATE jobs SET state = '{}', run = v.column2, started_ms = v.column3 FROM (VALUES ",
            JobState::Running.as_str()
        ),
        "(?, ?, ?)",
        ") AS v WHERE jobs.id = v.column1",
        &jobs,
    )?;
    many(
        tx,
        &format!(
            "INSERT INTO tasks (job_id, run, idx, node_id, gpus, started_ms, state, gpu_model) \
             SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, '{}', \
             (SELECT gpu_model FROM nodes WHERE id = v.column4) FROM (VALUES ",
            TaskState::Assigned.as_str()
        ),
        "(?, ?, ?, ?, ?, ?)",
        ") AS v",
        &tasks,
    )
}

fn start_tasks(w: &Write) -> &[(i64, i64)] {
    match w {
        Write::StartJob { tasks, .. } => tasks,
        _ => &[],
    }
}

fn insert_events(tx: &Transaction<'_>, events: &[&Write]) -> Result<(), StoreError> {
    let rows: Vec<[&dyn ToSql; 5]> = events
        .iter()
        .map(|w| match w {
            Write::Event {
                job,
                run,
                at,
                kind,
                detail,
            } => [job as &dyn ToSql, run, at, kind, detail],
            _ => unreachable!("events"),
        })
        .collect();
    many(
        tx,
        "INSERT INTO job_events (job_id, run, at_ms, kind, detail) VALUES ",
        "(?, ?, ?, ?, ?)",
        "",
        &rows,
    )
}

/// A write that is not batched: a few single-row statements.
fn apply_one(tx: &Transaction<'_>, w: &Write) -> Result<(), StoreError> {
    {
        match w {
            Write::InsertJob { .. }
            | Write::StartJob { .. }
            | Write::Event { .. }
            | Write::NodeState { .. } => unreachable!("batched by apply"),
            Write::JobState { job, state, ended } => {
                tx.prepare_cached("UPDATE jobs SET state = ?, ended_ms = ? WHERE id = ?")?
                    .execute(params![state.as_str(), ended, job])?;
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
                let mut update = tx.prepare_cached(
                    "UPDATE tasks SET state = ?1, ended_ms = COALESCE(?2, ended_ms), \
                     exit_code = COALESCE(?3, exit_code), \
                     reason = CASE WHEN ?4 = '' THEN reason ELSE ?4 END \
                     WHERE job_id = ?5 AND run = ?6 AND (?7 IS NULL OR idx = ?7) \
                     AND (?8 IS NULL OR node_id = ?8) AND state = ?9",
                )?;
                for f in *from {
                    update.execute(params![
                        to.as_str(),
                        at,
                        exit_code,
                        reason,
                        job,
                        run,
                        task,
                        node,
                        f.as_str()
                    ])?;
                }
            }
            Write::UpsertNode(n) => {
                upsert_node(tx, n)?;
                node_spans(tx, &[(n.id, n.state, n.last_heartbeat_ms)])?;
            }
            Write::Heartbeat { node, at } => {
                tx.prepare_cached("UPDATE nodes SET last_heartbeat_ms = ? WHERE id = ?")?
                    .execute(params![at, node])?;
            }
            Write::RemoveNode { node, name, at } => {
                tx.prepare_cached("UPDATE nodes SET state = 'down', removed_ms = ? WHERE id = ?")?
                    .execute(params![at, node])?;
                tx.prepare_cached(
                    "UPDATE node_spans SET end_ms = MAX(?, start_ms) \
                     WHERE node_id = ? AND end_ms IS NULL",
                )?
                .execute(params![at, node])?;
                tx.prepare_cached(
                    "UPDATE tokens SET revoked_ms = ? WHERE node = ? AND revoked_ms IS NULL",
                )?
                .execute(params![at, name])?;
                tx.prepare_cached(
                    "UPDATE tasks SET state = 'KILLED', \
                     reason = 'node removed before its agent confirmed the stop' \
                     WHERE node_id = ? AND state = 'KILLING'",
                )?
                .execute(params![node])?;
            }
            Write::Audit { .. } => unreachable!("batched by apply"),
            Write::Answer { inbox, body, at } => {
                tx.prepare_cached("UPDATE inbox SET answer = ?, answered_ms = ? WHERE id = ?")?
                    .execute(params![body, at, inbox])?;
            }
            // One server: nobody to hint.
            Write::Notify { .. } => {}
            Write::Interrupted { job } => {
                tx.prepare_cached("UPDATE jobs SET interrupted = interrupted + 1 WHERE id = ?")?
                    .execute(params![job])?;
            }
        }
    }
    Ok(())
}

/// Insert a node or update its inventory and state.
fn upsert_node(tx: &Transaction<'_>, n: &Node) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO nodes (id, name, addr, gpu_model, gpus, gpu_memory_mib, cpu_milli, memory_mib, rack, \
         labels, state, registered_ms, last_heartbeat_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (id) DO UPDATE SET addr = excluded.addr, gpu_model = excluded.gpu_model, \
         gpus = excluded.gpus, gpu_memory_mib = excluded.gpu_memory_mib, cpu_milli = excluded.cpu_milli, \
         memory_mib = excluded.memory_mib, rack = excluded.rack, labels = excluded.labels, \
         state = excluded.state, last_heartbeat_ms = excluded.last_heartbeat_ms, removed_ms = NULL",
    )?
    .execute(params![
        n.id,
        n.name,
        n.addr,
        n.gpu_model,
        n.gpus,
        n.gpu_memory_mib,
        n.cpu_milli,
        n.memory_mib,
        n.rack,
        serde_json::to_string(&n.labels).expect("strings serialise"),
        n.state.as_str(),
        n.registered_ms,
        n.last_heartbeat_ms,
    ])?;
    Ok(())
}

/// State changes of distinct nodes: the node rows, and their history. The
/// usual change (the node's open span began before it) closes the open
/// span and opens one, set-wise; the others go through [`node_span`].
fn node_states(tx: &Transaction<'_>, run: &[&Write]) -> Result<(), StoreError> {
    let changes: Vec<(i64, NodeState, i64)> = run
        .iter()
        .map(|w| match w {
            Write::NodeState { node, state, at } => (*node, *state, *at),
            _ => unreachable!("a run of node states"),
        })
        .collect();
    let rows: Vec<[&dyn ToSql; 2]> = changes.iter().map(|c| [&c.0 as &dyn ToSql, &c.1]).collect();
    many(
        tx,
        "UPDATE nodes SET state = v.column2 FROM (VALUES ",
        "(?, ?)",
        ") AS v WHERE nodes.id = v.column1",
        &rows,
    )?;
    node_spans(tx, &changes)
}

/// A node's inventory (model, GPUs) and its open span (start, state, model,
/// GPUs), if any.
type Open = (
    Option<String>,
    i64,
    Option<i64>,
    Option<NodeState>,
    Option<String>,
    Option<i64>,
);

/// Record that each `(node, state, at)` of distinct nodes holds from `at`:
/// close the node's open span and open a new one (with the node's stored
/// inventory), unless nothing changed. The usual change (the open span began
/// before it) is done set-wise; the others go through [`odd_span`].
fn node_spans(tx: &Transaction<'_>, changes: &[(i64, NodeState, i64)]) -> Result<(), StoreError> {
    let mut now: HashMap<i64, Open> = HashMap::with_capacity(changes.len());
    for chunk in changes.chunks(CHUNK) {
        let mut sql = String::from(
            "SELECT n.id, n.gpu_model, n.gpus, s.start_ms, s.state, s.gpu_model, s.gpus FROM nodes n \
             LEFT JOIN node_spans s ON s.node_id = n.id AND s.end_ms IS NULL WHERE n.id IN (",
        );
        sql.push_str(&vec!["?"; chunk.len()].join(", "));
        sql.push(')');
        let mut st = tx.prepare_cached(&sql)?;
        let ids = chunk.iter().map(|c| c.0);
        let mut q = st.query(rusqlite::params_from_iter(ids))?;
        while let Some(r) = q.next()? {
            let state: Option<String> = r.get(4)?;
            let state = state.and_then(|s| s.parse::<NodeState>().ok());
            now.insert(
                r.get(0)?,
                (r.get(1)?, r.get(2)?, r.get(3)?, state, r.get(5)?, r.get(6)?),
            );
        }
    }
    let mut close: Vec<(i64, i64, i64)> = Vec::new(); // (at, node, open span start)
    let mut open: Vec<(i64, i64, NodeState, Option<String>, i64)> = Vec::new();
    for &(node, state, at) in changes {
        let Some(row) = now.get(&node) else {
            continue; // no such node: nothing to record
        };
        let (model, gpus, start, st, m, g) = row;
        match start {
            Some(start) if *start < at => {
                if *st == Some(state) && m == model && *g == Some(*gpus) {
                    continue; // nothing changed
                }
                close.push((at, node, *start));
                open.push((node, at, state, model.clone(), *gpus));
            }
            _ => odd_span(tx, node, state, at, row)?,
        }
    }
    let rows: Vec<[&dyn ToSql; 3]> = close
        .iter()
        .map(|c| [&c.0 as &dyn ToSql, &c.1, &c.2])
        .collect();
    many(
        tx,
        "UPDATE node_spans SET end_ms = v.column1 FROM (VALUES ",
        "(?, ?, ?)",
        ") AS v WHERE node_spans.node_id = v.column2 AND node_spans.start_ms = v.column3",
        &rows,
    )?;
    let rows: Vec<[&dyn ToSql; 5]> = open
        .iter()
        .map(|o| [&o.0 as &dyn ToSql, &o.1, &o.2, &o.3, &o.4])
        .collect();
    many(
        tx,
        "INSERT INTO node_spans (node_id, start_ms, state, gpu_model, gpus) VALUES ",
        "(?, ?, ?, ?, ?)",
        "",
        &rows,
    )
}

/// [`node_spans`] for a change the usual path does not cover: a second
/// change in the open span's millisecond, or one dated before the open span
/// (a lost node is down from its last heartbeat, which can precede a drain).
/// Later spans are replaced, so the spans of a node never overlap and the
/// history agrees with the billing of its tasks.
fn odd_span(
    tx: &Transaction<'_>,
    node: i64,
    state: NodeState,
    at: i64,
    row: &Open,
) -> Result<(), StoreError> {
    let (model, gpus, start, st, m, g) = row;
    if *start == Some(at) {
        if *st == Some(state) && m == model && *g == Some(*gpus) {
            return Ok(()); // nothing changed
        }
        // Two changes in one millisecond: the later one stands.
        tx.prepare_cached(
            "UPDATE node_spans SET state = ?, gpu_model = ?, gpus = ? \
             WHERE node_id = ? AND start_ms = ?",
        )?
        .execute(params![state.as_str(), model, gpus, node, at])?;
        return Ok(());
    }
    // No open span, or one that starts after `at`: spans from `at` on are
    // replaced, the one covering `at` ends there.
    tx.prepare_cached("DELETE FROM node_spans WHERE node_id = ? AND start_ms >= ?")?
        .execute(params![node, at])?;
    tx.prepare_cached(
        "UPDATE node_spans SET end_ms = ?1 WHERE node_id = ?2 AND (end_ms IS NULL OR end_ms > ?1)",
    )?
    .execute(params![at, node])?;
    tx.prepare_cached(
        "INSERT INTO node_spans (node_id, start_ms, end_ms, state, gpu_model, gpus) \
         VALUES (?, ?, NULL, ?, ?, ?)",
    )?
    .execute(params![node, at, state.as_str(), model, gpus])?;
    Ok(())
}
